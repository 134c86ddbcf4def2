"""nsup with Redis: the journal as a stream, the state and status as keys, nsupctl reading any node
from Redis, the node's own cache kept there; and Redis down or slow never holding up a stop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import msgspec
import pytest

from supervisor.redis_mirror import Keys
from tests.e2e.conftest import pid_alive
from tests.e2e.test_alerts_metrics import scrape
from tests.e2e.test_paper_venue import ALWAYS_IN, drill, on_venue, venue, venue_book  # noqa: F401
from tests.e2e.test_recovery import assert_guard_held
from tests.redis_server import free_port

pytestmark = pytest.mark.e2e

FAST = {"restart_backoff_secs": 0.1, "restart_backoff_max_secs": 0.2}


def redis_section(server, name: str = "desk-a", **more) -> dict:
    return {"url": server.url, "name": name, "timeout_secs": 0.5, "drain_secs": 1.0, **more}


def stream(server, name: str = "desk-a") -> list[dict]:
    return [msgspec.json.decode(fields[b"record"]) for _id, fields in server.client().xrange(Keys(name).journal)]


def nsupctl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "supervisor.control.client.nsupctl", *args], capture_output=True, text=True, timeout=60)


def wait(predicate, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_journal_state_and_status_reach_redis_and_nsupctl_reads_them(nsup_run, redis_server):
    run = nsup_run({"hold_secs": 3600.0, "flat_secs": 0.0}, {}, redis=redis_section(redis_server))
    run.wait_for_state("RUNNING")
    run.wait_for_positions(2)

    def mirrored_status():
        done = nsupctl("--json", "--redis", redis_server.url, "--node", "desk-a", "status")
        data = json.loads(done.stdout) if done.returncode == 0 else {}
        return data if data.get("positions_open") == 2 else None

    status = wait(mirrored_status, what="the live status in Redis")
    assert status["state"] == "RUNNING" and status["trading_state"] == "ACTIVE" and len(status["positions"]) == 2
    assert status["persisted"]["state"] == "RUNNING" and status["age_secs"] < 10
    fleet = nsupctl("--redis", redis_server.url, "nodes")
    assert fleet.returncode == 0 and fleet.stdout.startswith("desk-a") and "RUNNING" in fleet.stdout

    run.signal(signal.SIGTERM)
    assert run.exit_code() == 0
    assert stream(redis_server) == run.journal, "every record, once, in order, with the same content"
    final = json.loads(nsupctl("--json", "--redis", redis_server.url, "--node", "desk-a", "status").stdout)
    assert final["state"] == "STOPPED" and final["persisted"]["state"] == "STOPPED"
    tail = nsupctl("--json", "--redis", redis_server.url, "--node", "desk-a", "tail", "-n", "3")
    assert [json.loads(line) for line in tail.stdout.splitlines()] == run.journal[-3:]


def test_nsupctl_from_redis_refuses_what_it_cannot_do_in_one_line(redis_server):
    for args, code, says in [
        (["--redis", redis_server.url, "--node", "nobody", "status"], 1, "no node called 'nobody'"),
        (["--redis", redis_server.url, "--node", "desk-a", "stop"], 2, "only reads"),
        (["--redis", redis_server.url, "status"], 2, "status NAME"),
        (["nodes"], 2, "--redis URL"),
        (["--redis", "redis://127.0.0.1:1/0", "nodes"], 3, "not reachable"),
    ]:
        done = nsupctl(*args)
        assert done.returncode == code and says in done.stderr and "Traceback" not in done.stderr, (args, done)
        assert len(done.stderr.splitlines()) == 1, done.stderr


def test_redis_killed_mid_run_and_back_the_stream_ends_whole(nsup_run, redis_server):
    port = free_port()
    run = nsup_run({"hold_secs": 3600.0, "flat_secs": 0.0}, {}, redis=redis_section(redis_server),
                   metrics={"listen": f"127.0.0.1:{port}"})
    run.wait_for_state("RUNNING")
    wait(lambda: scrape(port).get(("nsup_redis_up", ())) == 1.0, what="nsup_redis_up 1")
    redis_server.kill()
    run.wait_for(lambda: [r for r in run.records("redis") if r["reachable"] is False], what="Redis unreachable, journaled")
    assert scrape(port)[("nsup_redis_up", ())] == 0.0
    run.wait_for_positions(2)
    subprocess.run([sys.executable, "-m", "supervisor.control.client.nsupctl", "--state-dir", str(run.state_dir), "pause"],
                   check=True, capture_output=True, timeout=30)  # journaled while Redis is down
    redis_server.start()
    run.wait_for(lambda: [r for r in run.records("redis") if r["reachable"] is True], what="Redis back, journaled")
    assert scrape(port)[("nsup_redis_up", ())] == 1.0
    run.signal(signal.SIGTERM)
    assert run.exit_code() == 0
    assert stream(redis_server) == run.journal
    ids = [r["id"] for r in stream(redis_server)]
    assert len(ids) == len(set(ids))


def test_redis_paused_during_the_stop_holds_nothing_up_and_the_next_start_ships_the_rest(nsup_run, redis_server):
    """The node's cache is in this Redis too: the node flattens and stops with its cache unreachable."""
    section = redis_section(redis_server, timeout_secs=3.0, drain_secs=0.5, node_cache=True)
    run = nsup_run({"hold_secs": 3600.0, "flat_secs": 0.0}, {}, redis=section)
    run.wait_for_state("RUNNING")
    run.wait_for_positions(2)
    wait(lambda: len(stream(redis_server)) == len(run.journal), what="Redis to catch up")
    redis_server.pause()  # accepts connections, answers nothing: the slowest Redis there is
    asked = time.monotonic()
    run.signal(signal.SIGTERM)
    assert run.exit_code(timeout=30) == 0
    took = time.monotonic() - asked
    assert run.records("transition")[-1]["dest"] == "STOPPED" and run.records("transition")[-1]["positions_open"] == 0
    redis_server.resume()
    behind = stream(redis_server)
    assert behind == run.journal[: len(behind)] and len(behind) < len(run.journal)
    print(f"stop with Redis paused: {took:.2f}s to exit; {len(run.journal) - len(behind)} records waited in the file")
    # The worker waits one timeout (3 s) for its cache's Redis, nsup at most drain_secs: never Redis's own minutes.
    assert took < 20, took

    run.start()  # the next session ships what the last one could not
    run.wait_for(lambda: [r["dest"] for r in run.records("transition")].count("RUNNING") == 2, what="RUNNING again")
    run.signal(signal.SIGTERM)
    assert run.exit_code() == 0
    assert stream(redis_server) == run.journal


def test_a_new_nsup_on_a_lost_state_dir_carries_on_from_redis(nsup_run, redis_server, venue):
    """The host's state dir is gone mid-stop (or the node moved host): Redis still knows a stop was
    under way, so the new nsup finishes it instead of starting to trade."""
    run = nsup_run(on_venue(venue, **ALWAYS_IN, exit_max_attempts=5), {"flatten_rounds": 1, "flatten_round_wait_secs": 0.5, **FAST},
                   redis=redis_section(redis_server))
    run.wait_for_state("RUNNING")
    run.wait_for_positions(2)
    drill(venue, reject_orders=True)
    run.signal(signal.SIGTERM)
    run.wait_for(lambda: run.records("halt_stuck"), what="halt_stuck")
    wait(lambda: b"STUCK" in (redis_server.client().get(Keys("desk-a").state) or b""), what="STUCK in Redis")
    worker = run.worker_pid
    run.process.kill()
    run.process.wait()
    os.kill(worker, signal.SIGKILL)
    for name in ("state.json", "journal.jsonl"):
        (run.state_dir / name).unlink()
    drill(venue, reject_orders=False)
    assert len(venue_book(venue)) == 2

    run.start()
    carried = run.wait_for(lambda: run.records("state_from_redis"), what="the state read from Redis")[0]
    assert carried["state"] == "STUCK"
    assert run.exit_code(timeout=60) == 0, "the stop on record in Redis was finished, flat"
    assert venue_book(venue) == {}
    assert run.records("transition")[-1]["dest"] == "STOPPED"
    assert_guard_held(run)
    assert [r["id"] for r in stream(redis_server)][-len(run.journal):] == [r["id"] for r in run.journal]


def test_the_node_cache_in_redis_outlives_a_kill_9_and_its_positions_are_flattened(nsup_run, redis_server, venue):
    run = nsup_run(on_venue(venue, **ALWAYS_IN), FAST, redis=redis_section(redis_server, node_cache=True))
    run.wait_for_state("RUNNING")
    run.wait_for_positions(2)
    client = redis_server.client()
    wait(lambda: len(client.keys("trader-DEMO-001:positions:*")) == 2, what="the node's positions in its Redis cache")
    held = venue_book(venue)
    os.kill(run.worker_pid, signal.SIGKILL)
    run.wait_for(lambda: len(run.records("worker_spawned")) == 2 and run.records("transition")[-1]["dest"] == "RUNNING",
                 what="the replacement RUNNING")
    replacement = (run.state_dir / "worker.log").read_text().rsplit("Building system kernel", 1)[1]
    assert "Cached 2 positions from database" in replacement, "the new node knew its positions before asking the venue"
    assert len(held) == 2 and venue_book(venue) == held
    run.signal(signal.SIGTERM)
    assert run.exit_code() == 0
    assert venue_book(venue) == {}
    assert_guard_held(run)


def test_a_new_nsup_on_a_lost_state_dir_reattaches_to_the_live_worker_from_redis(nsup_run, redis_server):
    """nsup killed and its state dir wiped while the worker trades on: the copy in Redis vouches for
    the worker (same boot, this node's lock file), so the new nsup adopts it instead of refusing."""
    run = nsup_run({"hold_secs": 3600.0, "flat_secs": 0.0}, {}, redis=redis_section(redis_server))
    run.wait_for_state("RUNNING")
    run.wait_for_positions(2)
    wait(lambda: b"RUNNING" in (redis_server.client().get(Keys("desk-a").state) or b""), what="RUNNING in Redis")
    worker = run.worker_pid
    run.process.kill()
    run.process.wait()
    for name in ("state.json", "journal.jsonl", "journal.jsonl.shipped"):
        (run.state_dir / name).unlink(missing_ok=True)

    run.start()
    try:
        assert run.wait_for(lambda: run.records("state_from_redis"), what="the state from Redis")[0]["state"] == "RUNNING"
        reattached = run.wait_for(lambda: run.records("reattach"), what="re-attached")[0]
        assert reattached["result"] == "re-attached" and reattached["pid"] == worker
        run.signal(signal.SIGTERM)
        assert run.exit_code() == 0
    finally:  # the wiped journal no longer names this worker for the teardown
        if pid_alive(worker):
            os.kill(worker, signal.SIGKILL)
    assert run.records("transition")[-1]["dest"] == "STOPPED" and run.records("transition")[-1]["positions_open"] == 0
    assert run.records("worker_spawned") == [], "the worker it found was the one it stopped"
    assert_guard_held(run)
