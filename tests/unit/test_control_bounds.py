"""What one client can put on record, and take of the control socket: field limits, coalesced
refusals, the per-client budget. tests/e2e/test_durability.py floods a real nsup."""

from __future__ import annotations

import json

import pytest

from supervisor.control import protocol as c
from supervisor.control.server import refusals
from supervisor.control.server.listener import Budget
from supervisor.control.server.refusals import RefusalRecords


def request(**fields) -> bytes:
    base = {"v": 1, "id": "r1", "command": "abort_confirm", "actor": {"user": "alice", "host": "desk"},
            "nonce": "0123456789abcdef", "confirmation": "DEMO-001", "reason": "venue down"}
    for key, value in fields.items():
        if key in ("user", "host"):
            base["actor"][key] = value
        else:
            base[key] = value
    return json.dumps(base).encode()


@pytest.mark.parametrize("field, limit", [("user", 64), ("host", 255), ("id", 64), ("nonce", 64),
                                          ("confirmation", 128), ("reason", 1000)])
def test_every_field_has_a_limit_checked_when_read(field, limit):
    assert c.decode_request(request(**{field: "x" * limit}))
    with pytest.raises(c.BadRequest, match=f"length <= {limit}") as refused:
        c.decode_request(request(**{field: "x" * (limit + 1)}))
    assert refused.value.command == "abort_confirm" and refused.value.errno == c.Errno.BAD_REQUEST


def test_the_largest_valid_request_fits_under_the_size_limit_in_any_utf8():
    widest = "\U0001f600"  # four bytes in UTF-8
    frame = request(user=widest * 64, host=widest * 255, id=widest * 64, nonce=widest * 64,
                    confirmation=widest * 128, reason=widest * 1000)
    assert len(frame) > 12 * 1000 and c.decode_request(frame), "as json.dumps sends it: each a 12-byte \\u escape"


def test_a_flood_of_one_kind_is_two_records_a_window():
    records = []
    coalesced = RefusalRecords(lambda kind, **fields: records.append(fields))
    for i in range(10_000):
        coalesced.refuse("conn:aa", "abort", c.Errno.REFUSED, {"command": "abort", "actor": f"x{i}", "reason": "no"})
    assert len(records) == 1 and records[0]["actor"] == "x0" and records[0]["peer"] == "conn:aa"
    coalesced.flush()
    assert len(records) == 2 and records[1]["repeated"] == 9_999 and records[1]["actor"] == "x9999"
    assert "9999 more like this" in records[1]["reason"]


def test_a_client_finding_new_kinds_is_bounded_and_so_are_all_clients():
    records = []
    coalesced = RefusalRecords(lambda kind, **fields: records.append(fields))
    for peer in range(100):
        for kind in range(50):
            coalesced.refuse(f"conn:{peer}", f"cmd{kind}", c.Errno.BAD_REQUEST, {"command": f"cmd{kind}", "reason": "?"})
    coalesced.flush()
    assert len(records) <= 2 * refusals.MAX_KINDS + 2
    per_peer = [r for r in records if r["peer"] == "conn:0"]
    assert len(per_peer) == refusals.MAX_KINDS_PER_PEER + 2  # its kinds (once each), its others: the first, the count
    assert sum(r.get("repeated", 0) for r in records) + sum("repeated" not in r for r in records) == 100 * 50


def test_each_client_has_its_own_budget_refilled_evenly():
    now = [0.0]
    budget = Budget(per_minute=20, clock=lambda: now[0])
    assert all(budget.spend("a") == 0 for _ in range(20))
    assert budget.spend("a") == pytest.approx(3.0)  # one token every 3 s
    assert budget.spend("b") == 0, "another client is not held up by the first"
    now[0] = 3.0
    assert budget.spend("a") == 0 and budget.spend("a") > 0
