"""The journal: one JSON object a line, UTC timestamps, append-only, fsync'd per record, torn tail tolerated."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import stat
from datetime import datetime, timedelta, timezone

import pytest

from supervisor import journal as journal_module
from supervisor import protocol as p
from _disk import Disk
from supervisor.journal import Journal, NotDurable, read_journal


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


# A disk that will not take the journal: nothing fails the caller, nothing is lost without a record ------


@pytest.fixture
def disk(tmp_path):
    with Disk(tmp_path).installed() as disk:
        yield disk


def test_a_full_disk_holds_records_in_memory_and_writes_them_in_order_when_it_takes_them(tmp_path, disk):
    path = tmp_path / "journal.jsonl"
    j = Journal(path)
    heard = []
    j.listen(heard.append)
    before = j.record("transition", trigger="run")
    disk.error, disk.partial = errno.ENOSPC, True
    held = [j.record("command", command="pause", n=i) for i in range(3)]
    assert j.problem == "ENOSPC: No space left on device" and j.held == 4  # three, and the record saying so
    assert read_journal(path) == [before], "a part-written line is cut back off"
    assert path.read_bytes().endswith(b"\n")
    assert [r["kind"] for r in heard] == ["transition", "command", "journal_degraded", "command", "command"]
    assert j.make_durable() == j.problem  # still full

    disk.error = None
    assert j.make_durable() is None and j.held == 0
    on_file = read_journal(path)
    assert [r["id"] for r in on_file] == [r["id"] for r in heard], "every record heard is on file, in order"
    assert on_file[1:] == [held[0], on_file[2], held[1], held[2], on_file[-1]]
    restored = on_file[-1]
    assert restored["kind"] == "journal_restored" and restored["written_late"] == 4 and restored["dropped"] == 0
    assert restored["was"] == "ENOSPC: No space left on device" and "ENOSPC" in restored["reason"]
    j.close()


def test_a_failed_fsync_cuts_the_record_back_and_holds_it(tmp_path, disk):
    path = tmp_path / "journal.jsonl"
    j = Journal(path)
    disk.error, disk.writes_too = errno.EIO, False  # the write lands, the fsync fails: the bytes may not be on disk
    j.record("x")
    assert path.read_bytes() == b"" and j.problem.startswith("EIO")
    disk.error = None
    j.record("y")
    assert [r["kind"] for r in read_journal(path)] == ["x", "journal_degraded", "y", "journal_restored"]
    j.close()


def test_an_approval_must_be_on_file_first(tmp_path, disk):
    path = tmp_path / "journal.jsonl"
    j = Journal(path)
    heard = []
    j.listen(heard.append)
    disk.error = errno.EROFS
    with pytest.raises(NotDurable, match="EROFS"):
        j.record_durably("approval", action="abort")
    assert "approval" not in [r["kind"] for r in heard], "an approval that is not on file is not on record at all"
    j.record("refusal", reason="not durable")
    with pytest.raises(NotDurable):  # held records first: it cannot come before them
        j.record_durably("approval", action="abort")
    disk.error = None
    approval = j.record_durably("approval", action="abort")
    assert read_journal(path)[-1] == approval
    assert [r["kind"] for r in read_journal(path)] == ["journal_degraded", "refusal", "journal_restored", "approval"]
    j.close()


def test_held_records_are_bounded_and_what_was_dropped_is_named(tmp_path, disk, monkeypatch):
    monkeypatch.setattr(journal_module, "HELD_MAX_RECORDS", 5)
    path = tmp_path / "journal.jsonl"
    j = Journal(path)
    disk.error = errno.ENOSPC
    ids = [j.record("n", i=i)["id"] for i in range(10)]
    assert j.held == 5
    disk.error = None
    j.make_durable()
    restored = read_journal(path)[-1]
    assert restored["kind"] == "journal_restored" and restored["dropped"] == 6  # five, and the degraded record
    assert restored["dropped_ids"] == [ids[0], ids[4]] and "dropped" in restored["reason"]
    assert [r.get("i") for r in read_journal(path)[:-1]] == [5, 6, 7, 8, 9]
    j.close()


def test_held_lines_are_listed_for_the_redis_mirror(tmp_path, disk):
    j = Journal(tmp_path / "journal.jsonl")
    disk.error = errno.ENOSPC
    x = j.record("x")
    lines = j.held_lines()
    assert [record_id for record_id, _ in lines][0] == x["id"] and len(lines) == 2
    assert json.loads(lines[0][1]) == json.loads(json.dumps(x))
    assert j.close() == [line for _, line in lines], "what never reached the file is handed back at close"


@pytest.mark.parametrize("how", ["deleted", "rotated", "replaced"])
def test_a_journal_moved_underneath_is_followed_to_a_new_file_with_a_record_of_the_gap(tmp_path, how):
    path = tmp_path / "journal.jsonl"
    j = Journal(path)
    first, last = j.record("a"), j.record("b")
    old_inode = os.stat(path).st_ino
    if how == "deleted":
        path.unlink()
    elif how == "rotated":
        path.rename(tmp_path / "journal.jsonl.1")
    else:
        (tmp_path / "other").write_text("")
        os.replace(tmp_path / "other", path)
    after = j.record("c")
    gap, record = read_journal(path)
    assert record == after
    assert gap["kind"] == "journal_replaced" and gap["previous_inode"] == old_inode
    assert gap["how"] == ("moved or replaced" if how == "rotated" else "deleted")  # replaced: its only link is gone
    assert gap["ids_in_previous"] == [first["id"], last["id"]] and first["id"] in gap["reason"]
    if how == "rotated":
        assert [r["kind"] for r in read_journal(tmp_path / "journal.jsonl.1")] == ["a", "b"]
    j.close()


def test_a_journal_truncated_in_place_is_noticed(tmp_path):
    path = tmp_path / "journal.jsonl"
    j = Journal(path)
    j.record("a")
    os.truncate(path, 0)  # logrotate's copytruncate
    j.record("b")
    gap, b = read_journal(path)
    assert gap["kind"] == "journal_replaced" and gap["how"] == "truncated" and b["kind"] == "b"
    j.close()


def test_a_journal_whose_directory_is_gone_is_held_until_it_can_be_made_again(tmp_path):
    state = tmp_path / "state"
    j = Journal(state / "journal.jsonl")
    j.record("a")
    (state / "journal.jsonl").unlink()
    state.rmdir()
    j.record("b")
    assert j.problem.startswith("ENOENT") and "cannot be made again" in j.problem
    state.mkdir()
    assert j.make_durable() is None
    assert [r["kind"] for r in read_journal(state / "journal.jsonl")] == [
        "b", "journal_degraded", "journal_replaced", "journal_restored"]
    j.close()
