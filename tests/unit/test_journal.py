"""The journal: one JSON object a line, UTC timestamps, append-only, fsync'd per record, torn tail tolerated."""

from __future__ import annotations

import fcntl
import json
import os
import stat
from datetime import datetime, timedelta, timezone


from supervisor import journal as journal_module
from supervisor import protocol as p
from supervisor.journal import Journal, read_journal


def lines(path) -> list[bytes]:
    data = path.read_bytes()
    assert data.endswith(b"\n")
    return data.split(b"\n")[:-1]


def test_each_record_is_one_json_object_per_line_with_utc_ts_and_kind(tmp_path):
    path = tmp_path / "journal.jsonl"
    j = Journal(path)
    before = datetime.now(timezone.utc)
    returned = [
        j.record("transition", trigger="build", source="CREATED", dest="BUILT", actor="nsup"),
        j.record("refusal", action="sigkill", reason="not flat:\nmultiline reason", counts=p.Counts(1, 0, 2)),
        j.record("supervisor_start"),
    ]
    after = datetime.now(timezone.utc)
    j.close()
    raw = lines(path)
    assert len(raw) == 3
    for line, ret in zip(raw, returned):
        obj = json.loads(line)  # the stdlib parses it: plain JSON, one object
        assert isinstance(obj, dict)
        assert set(obj) >= {"ts", "kind"}
        assert list(obj)[:2] == ["ts", "kind"]
        ts = datetime.fromisoformat(obj["ts"])
        assert ts.tzinfo is not None and ts.utcoffset() == timedelta(0)
        assert ts.tzinfo == timezone.utc
        assert obj["ts"].endswith("+00:00")
        assert before - timedelta(seconds=1) <= ts <= after + timedelta(seconds=1)
        assert obj == json.loads(json.dumps(ret, default=lambda o: {f: getattr(o, f) for f in o.__struct_fields__}))
    kinds = [json.loads(line)["kind"] for line in raw]
    assert kinds == ["transition", "refusal", "supervisor_start"]
    assert json.loads(raw[1])["counts"] == {"positions_open": 1, "orders_inflight": 0, "orders_open": 2}
    assert json.loads(raw[1])["reason"] == "not flat:\nmultiline reason"
    ts_list = [datetime.fromisoformat(json.loads(line)["ts"]) for line in raw]
    assert ts_list == sorted(ts_list)


def test_read_journal_returns_what_was_recorded(tmp_path):
    path = tmp_path / "j.jsonl"
    j = Journal(path)
    written = [j.record("command", command="stop", actor=f"op{i}", n=i) for i in range(5)]
    j.close()
    assert read_journal(path) == written


def test_append_only_across_reopen(tmp_path):
    path = tmp_path / "state" / "journal.jsonl"  # parent created on open
    j = Journal(path)
    j.record("supervisor_start", pid=1)
    j.record("supervisor_exit", code=0)
    j.close()
    first = path.read_bytes()
    j = Journal(path)
    j.record("supervisor_start", pid=2)
    j.close()
    assert path.read_bytes().startswith(first)
    assert [(r["kind"], r.get("pid")) for r in read_journal(path)] == [
        ("supervisor_start", 1), ("supervisor_exit", None), ("supervisor_start", 2),
    ]


def test_journal_is_opened_append_only(tmp_path):
    path = tmp_path / "journal.jsonl"
    j = Journal(path)
    flags = fcntl.fcntl(j._fd, fcntl.F_GETFL)
    assert flags & os.O_APPEND
    assert stat.S_IMODE(os.fstat(j._fd).st_mode) & 0o007 == 0  # not world-readable
    j.close()


def test_torn_last_line_is_skipped(tmp_path):
    path = tmp_path / "journal.jsonl"
    j = Journal(path)
    a = j.record("transition", trigger="build")
    b = j.record("transition", trigger="run")
    j.close()
    with open(path, "ab") as f:
        f.write(b'{"ts": "2025-01-01T00:00:00.000000+00:00", "kind": "transi')  # power lost mid-write
    assert read_journal(path) == [a, b]


def test_first_record_after_a_torn_line_survives_reopen(tmp_path):
    path = tmp_path / "journal.jsonl"
    j = Journal(path)
    a = j.record("transition", trigger="build")
    j.close()
    with open(path, "ab") as f:
        f.write(b'{"ts": "2025-01-01T00:00:00.000000+00:00", "ki')
    j = Journal(path)  # the supervisor restarts after the power loss
    b = j.record("supervisor_start", pid=2)
    j.close()
    first, reported, last = read_journal(path)
    assert (first, last) == (a, b)
    assert reported["kind"] == "fault" and "cut short" in reported["reason"]  # the damage is on record


def test_fsync_is_called_once_per_record_after_the_write(tmp_path, monkeypatch):
    path = tmp_path / "journal.jsonl"
    j = Journal(path)
    synced: list[tuple[int, int]] = []
    real_fsync = os.fsync

    def counting_fsync(fd):
        synced.append((fd, len(path.read_bytes().splitlines())))  # lines on disk at the moment of fsync
        real_fsync(fd)

    monkeypatch.setattr(journal_module.os, "fsync", counting_fsync)
    for i in range(4):
        j.record("heartbeat_gap", n=i)
        assert len(synced) == i + 1  # before record() returned
    j.close()
    assert synced == [(j._fd, 1), (j._fd, 2), (j._fd, 3), (j._fd, 4)]


def test_listeners_receive_each_record_once_in_order_after_it_is_on_disk(tmp_path):
    path = tmp_path / "journal.jsonl"
    j = Journal(path)
    got_a, got_b = [], []

    def listener_a(entry):
        on_disk = read_journal(path)
        assert on_disk and on_disk[-1] == json.loads(json.dumps(entry))
        got_a.append(entry)

    j.listen(listener_a)
    first = j.record("transition", trigger="build")
    j.listen(got_b.append)
    second = j.record("refusal", reason="not flat")
    third = j.record("fault", reason="worker exited")
    j.close()
    assert got_a == [first, second, third]
    assert got_a[0] is first
    assert got_b == [second, third]


def test_count_fields_are_flat_and_none_when_unknown():
    from _statuses import status

    assert journal_module.count_fields(None) == {"positions_open": None, "orders_inflight": None, "orders_open": None}
    assert journal_module.count_fields(status(positions=1, inflight=2, open_=3)) == {
        "positions_open": 1, "orders_inflight": 2, "orders_open": 3,
    }


def test_ids_strictly_increase_even_when_the_clock_steps_back_and_go_on_after_a_reopen(tmp_path, monkeypatch):
    from supervisor.journal import parse_id

    path = tmp_path / "journal.jsonl"
    clock = iter([5_000, 5_000, 4_000, 6_000, 6_000, 1_000])
    monkeypatch.setattr(journal_module.time, "time_ns", lambda: next(clock) * 1_000_000)
    j = Journal(path)
    ids = [j.record("x")["id"] for _ in range(5)]
    j.close()
    assert ids == ["5000-0", "5000-1", "5000-2", "6000-0", "6000-1"]
    assert Journal(path).record("x")["id"] == "6000-2", "a reopened journal goes on from its last id"
    assert [r["id"] for r in read_journal(path)] == ids + ["6000-2"]
    assert parse_id("6000-2") > parse_id("6000-1") > parse_id("5000-9")


def test_an_id_floor_puts_new_ids_above_it(tmp_path):
    j = Journal(tmp_path / "journal.jsonl", id_floor=(99_999_999_999_999, 4))
    assert j.record("x")["id"] == "99999999999999-5"
