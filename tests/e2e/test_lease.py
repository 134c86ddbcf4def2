"""The node's lease (supervisor/lease.py), end to end: real nsups, real workers and TradingNodes, a private
redis-server. Two nsups for one node on two state dirs ("two hosts"): the second is refused while the
first holds the node; a first nsup frozen past its lease comes back to find the node taken, and goes
closing-only without stopping its worker; Redis silent past the expiry makes the node closing-only,
stops no worker with exposure, and trading goes on once the lease is taken back (nobody else took it);
Redis silent at start refuses nothing, and no worker is spawned until the lease is held."""

from __future__ import annotations

import signal
import time

import msgspec
import pytest

from supervisor.lease import Holder, lease_keys
from tests.e2e.conftest import pid_alive
from tests.e2e.test_recovery import assert_guard_held
from tests.e2e.test_redis import nsupctl, redis_section

pytestmark = pytest.mark.e2e

LEASE_SECS = 1.5
HOLDING = {"hold_secs": 3600.0, "flat_secs": 0.0}  # the demo opens two positions and keeps them


def trading_state(run) -> str | None:
    status = run.last_status()
    return status and status["trading_state"]


def lease_commands(run) -> list[str]:
    """The trading states the lease's pause and unpause sent the worker, as the journal has them."""
    return [r["command"]["trading_state"] for r in run.records("worker_command") if r["actor"] == "lease"]


def holder(redis_server, name: str) -> Holder | None:
    raw = redis_server.client().get(lease_keys(name)[0])
    return msgspec.json.decode(raw, type=Holder) if raw else None


def test_two_hosts_one_node_the_second_is_refused_and_a_frozen_first_comes_back_closing_only(nsup_run, redis_server):
    section = redis_section(redis_server, name="shared", lease_secs=LEASE_SECS)
    first = nsup_run(HOLDING, {}, redis=section)
    first.wait_for_state("RUNNING")
    first.wait_for_positions(2)
    assert first.records("lease_taken")[0]["token"] == 1

    second = nsup_run(HOLDING, {}, redis=section)  # another state dir: another host, as far as the lease can tell
    assert second.exit_code() == 2
    said = [line for line in second.log_lines if isinstance(line, str) and "cannot start" in line]
    assert len(said) == 1 and f"node 'shared' is held by nsup pid {first.process.pid} on " in said[0], second.log_lines
    assert "token 1, until 20" in said[0] and "would trade twice" in said[0]
    assert second.journal == [], "refused before anything started"

    first.signal(signal.SIGSTOP)  # frozen (a pause, a partition) past its lease
    try:
        time.sleep(LEASE_SECS + 0.5)
        second.start()
        second.wait_for_state("RUNNING")
        assert second.records("lease_taken")[0]["token"] == 2
    finally:
        first.signal(signal.SIGCONT)
    lost = first.wait_for(lambda: first.records("lease_lost"), what="the lease lost")[0]
    # Woken past its lease: either its lease lapsed before its renewal was answered, or the renewal found the second.
    assert lost["positions_open"] == 2 and (f"held by nsup pid {second.process.pid}" in lost["reason"]
                                            or "before the lease expired" in lost["reason"]), lost
    first.wait_for(lambda: trading_state(first) == "REDUCING", what="closing-only")
    # Its worker did not wait for it: with no word of a renewal by the lease's deadline, closing-only by itself.
    first.wait_for(lambda: any("expired with no word of a renewal" in r["text"] for r in first.records("worker_notice")),
                   timeout=10, what="the worker's own closing-only")
    assert lease_commands(first) == ["REDUCING"]
    time.sleep(2 * LEASE_SECS)  # it tries to take the node back meanwhile, and is refused each time
    assert pid_alive(first.worker_pid) and first.records("worker_end") == [] and len(first.records("worker_spawned")) == 1
    assert trading_state(first) == "REDUCING" and trading_state(second) == "ACTIVE", "one node trading"
    assert holder(redis_server, "shared").pid == second.process.pid

    for run in (first, second):  # flattening needs no lease: it is the safe direction
        run.signal(signal.SIGTERM)
    assert first.exit_code() == 0 and second.exit_code() == 0
    assert_guard_held(first)
    assert holder(redis_server, "shared") is None, "the holder released it as it stopped"


def test_redis_silent_past_the_lease_makes_the_node_closing_only_and_stops_no_worker(nsup_run, redis_server):
    run = nsup_run(HOLDING, {}, redis=redis_section(redis_server, lease_secs=LEASE_SECS))
    run.wait_for_state("RUNNING")
    run.wait_for_positions(2)
    worker = run.worker_pid
    assert holder(redis_server, "desk-a").token == run.records("lease_taken")[0]["token"] == 1

    redis_server.pause()  # accepts connections, never answers
    paused_at = time.monotonic()
    try:
        lost = run.wait_for(lambda: run.records("lease_lost"), what="the lease lost")[0]
        assert time.monotonic() - paused_at < LEASE_SECS + 1.0
        assert "before the lease expired" in lost["reason"] and "stops no worker" in lost["reason"]
        run.wait_for(lambda: trading_state(run) == "REDUCING", what="closing-only")
        shown = nsupctl("--state-dir", str(run.state_dir), "status").stdout
        assert "lease lost     Redis did not answer before the lease expired" in shown, shown
        time.sleep(LEASE_SECS)
        assert pid_alive(worker) and run.records("worker_end") == [] and run.last_status()["positions_open"] == 2
    finally:
        redis_server.resume()
    back = run.wait_for(lambda: run.records("lease_taken")[1:], what="the lease taken again")[0]
    assert back["token"] == 2 and back["others_took_it"] is False, "a new take, a new token; nobody took it between"
    run.wait_for(lambda: trading_state(run) == "ACTIVE", what="trading again")
    assert lease_commands(run) == ["REDUCING", "ACTIVE"]

    run.signal(signal.SIGTERM)
    assert run.exit_code() == 0
    assert_guard_held(run)
    assert holder(redis_server, "desk-a") is None and not pid_alive(worker)


def test_redis_silent_at_start_refuses_nothing_and_no_worker_is_spawned_until_the_lease_is_held(nsup_run, redis_server):
    redis_server.pause()
    try:
        run = nsup_run({}, {}, redis=redis_section(redis_server, lease_secs=LEASE_SECS))
        run.wait_for(lambda: run.records("lease_wait"), what="waiting for the lease")
        time.sleep(1.0)
        assert run.records("worker_spawned") == [] and run.process.poll() is None
    finally:
        redis_server.resume()
    taken = run.wait_for(lambda: run.records("lease_taken"), what="the lease taken")[0]
    run.wait_for_state("RUNNING")
    assert taken["id"] < run.records("worker_spawned")[0]["id"], "no worker before the lease"
    run.signal(signal.SIGTERM)
    assert run.exit_code() == 0
