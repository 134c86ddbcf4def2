"""`nsupctl --redis`: what it prints from what the mirrors wrote, damaged or partial data included,
always one line and an exit code, never a traceback."""

from __future__ import annotations

import json

import msgspec

from supervisor.control.client import nsupctl
from supervisor.control.client.redis_reader import RedisReader
from supervisor.redis_mirror import NODES_KEY, Keys


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = nsupctl.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_the_fleet_lists_a_node_that_has_written_nothing_yet_and_one_with_a_naive_time(redis_server, capsys):
    client = redis_server.client()
    client.sadd(NODES_KEY, "fresh", "odd")
    client.set(Keys("odd").status, msgspec.json.encode({"state": "RUNNING", "updated_at": "2026-01-01T00:00:00"}))
    code, out, err = run(capsys, "--redis", redis_server.url, "nodes")
    assert code == 0 and err == ""
    assert [line.split()[0] for line in out.splitlines()] == ["fresh", "odd"]
    assert "no live status" in out
    code, out, err = run(capsys, "--redis", redis_server.url, "--node", "odd", "status")
    assert code == 0 and "RUNNING" in out and "no readable live status" in out


def test_damaged_values_are_shown_as_damaged(redis_server, capsys):
    client = redis_server.client()
    client.sadd(NODES_KEY, "bad")
    client.set(Keys("bad").state, b"\xff not json")
    client.xadd(Keys("bad").journal, {"kind": "x", "ts": "t", "record": b"{torn"}, id="1-0")
    code, out, err = run(capsys, "--json", "--redis", redis_server.url, "--node", "bad", "tail", "-n", "5")
    assert code == 0 and json.loads(out) == {"damaged": "{torn"}
    code, out, err = run(capsys, "--json", "--redis", redis_server.url, "--node", "bad", "status")
    assert code == 0 and "damaged" in json.loads(out)["persisted"]


def test_follow_goes_on_from_the_stream_id_so_a_relocated_record_is_printed_once(redis_server):
    client = redis_server.client()
    key = Keys("n").journal
    client.xadd(key, {"kind": "a", "ts": "t", "record": b'{"kind":"a","id":"5-0"}'}, id="9-0")
    client.xadd(key, {"kind": "b", "ts": "t", "record": b'{"kind":"b","id":"3-0"}', "journal_id": b"3-0"}, id="10-0")
    reader = RedisReader(redis_server.url, 1.0)
    entries = reader.tail("n", 2)
    assert [stream_id for stream_id, _ in entries] == ["9-0", "10-0"]
    assert entries[1][1]["journal_id"] == "3-0"
    client.xadd(key, {"kind": "c", "ts": "t", "record": b'{"kind":"c","id":"11-0"}'}, id="11-0")
    assert next(reader.follow("n", after=entries[-1][0]))["kind"] == "c"
