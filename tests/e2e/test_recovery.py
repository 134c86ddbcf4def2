"""Bounded recovery against the paper venue, whose positions outlive every killed worker."""

from __future__ import annotations

import json
import os
import signal

import pytest

from supervisor.daemon import EXIT_ABORTED
from supervisor.persisted_state import load
from tests.e2e.conftest import pid_alive
from tests.e2e.test_paper_venue import ALWAYS_IN, drill, node_book, on_venue, trading_on, venue, venue_book  # noqa: F401

pytestmark = pytest.mark.e2e

FAST_RESTARTS = {"restart_backoff_secs": 0.1, "restart_backoff_max_secs": 0.5}


def wait_for_replacement(run, workers: int = 2) -> None:
    run.wait_for(lambda: len(run.records("worker_spawned")) == workers and run.transitions()[-1] == ("BUILT", "RUNNING"),
                 what="the replacement RUNNING")


def replaced_with_the_same_positions_then_stopped_flat(run, venue, held: dict) -> None:
    """The end of every recovery story: a replacement that reconciles what the venue held, and flattens it."""
    wait_for_replacement(run)
    status = run.wait_for(lambda: (s := run.last_status()) and s["positions"] and s, what="reconciled positions")
    assert node_book(status) == held
    run.signal(signal.SIGTERM)
    assert run.exit_code() == 0
    assert venue_book(venue) == {}
    assert_guard_held(run)


def assert_guard_held(run) -> None:
    """No worker was ended with positions open unless an approval was on record."""
    for end in run.records("worker_end"):
        assert end["positions_open"] in (0, None) or end.get("approval_id"), end


def test_worker_killed_while_running_is_replaced_and_finds_its_positions(nsup_run, venue):
    run = trading_on(nsup_run, venue, FAST_RESTARTS)
    held = venue_book(venue)
    os.kill(run.worker_pid, signal.SIGKILL)

    replaced_with_the_same_positions_then_stopped_flat(run, venue, held)
    assert ("RUNNING", "RECOVERING") in run.transitions() and ("RECOVERING", "BUILT") in run.transitions()


def test_worker_killed_while_halting_comes_back_reducing_and_the_stop_goes_on(nsup_run, venue):
    run = trading_on(nsup_run, venue, {**FAST_RESTARTS, "flatten_rounds": 5, "flatten_round_wait_secs": 1.0})
    drill(venue, reject_orders=True)  # keep it HALTING with positions open
    run.signal(signal.SIGTERM)
    run.wait_for(lambda: run.records("flatten_round"), what="a failed round")
    os.kill(run.worker_pid, signal.SIGKILL)
    drill(venue, reject_orders=False)

    assert run.exit_code() == 0
    assert venue_book(venue) == {}
    spawned_second = run.records("worker_spawned")[1]["ts"]
    later = [r["command"] for r in run.records("worker_command") if r["ts"] > spawned_second]
    assert later[:2] == [{"type": "set_trading_state", "trading_state": "REDUCING"}, {"type": "run", "timeout_secs": 60.0}]
    assert run.transitions()[-3:] == [("RUNNING", "HALTING"), ("HALTING", "FLAT"), ("FLAT", "STOPPED")]
    assert_guard_held(run)


def test_a_crash_loop_hits_the_bound_and_ends_aborted(nsup_run):
    run = nsup_run(supervisor={**FAST_RESTARTS, "max_restarts": 2}, factory="no_such_module:build")

    assert run.exit_code() == EXIT_ABORTED
    assert len(run.records("worker_spawned")) == 3
    assert len(run.records("restart_scheduled")) == 2
    give_up = run.records("transition")[-1]
    assert give_up["trigger"] == "give_up" and "bound is spent" in give_up["reason"]
    assert "ModuleNotFoundError" in give_up["reason"]


def test_nsup_killed_while_running_is_replaced_and_reattaches(nsup_run, venue):
    run = trading_on(nsup_run, venue, FAST_RESTARTS)
    worker = run.worker_pid
    run.process.kill()
    run.process.wait()
    held = venue_book(venue)

    import time

    time.sleep(1.5)  # the worker misses its supervisor, and says so
    run.start()  # a new nsup on the same state dir
    run.wait_for(lambda: [r for r in run.records("reattach") if r["result"] == "re-attached"], what="re-attached")
    assert run.records("reattach")[-1]["pid"] == worker and len(run.records("worker_spawned")) == 1
    assert "no heartbeat from the supervisor" in (run.state_dir / "worker.log").read_text()
    run.wait_for(lambda: [r for r in run.records("worker_notice") if "supervisor is back" in r["text"]], what="the notice")
    status = run.wait_for(lambda: (s := run.last_status()) and s["positions"] and s, what="status from the worker")
    assert status["state"] == "RUNNING" and node_book(status) == held

    run.signal(signal.SIGTERM)
    assert run.exit_code() == 0
    assert venue_book(venue) == {}
    assert_guard_held(run)


def test_nsup_killed_before_its_worker_said_hello_reattaches_to_it(nsup_run, venue):
    """The worker on record from its spawn is the process nsup exec'd, although /proc may not show its
    command line yet then: the next nsup knows it for its own (it neither judges it dead and starts a
    second one, nor refuses to start beside a stranger), runs it, and the stop ends it."""
    run = nsup_run(on_venue(venue, **ALWAYS_IN), FAST_RESTARTS)
    worker = run.wait_for(lambda: (state := load(run.state_dir / "state.json")) and state.worker and state.worker.pid,
                          what="the worker spawned, and on record")
    run.process.kill()  # while the worker still builds its node (seconds)
    run.process.wait()
    assert worker == run.worker_pid
    assert not run.records("worker_hello"), "the scenario missed its window: the worker said hello first"

    run.start()
    run.wait_for(lambda: [r for r in run.records("reattach") if r["result"] == "re-attached"], what="re-attached")
    assert run.records("reattach")[-1]["pid"] == worker and len(run.records("worker_spawned")) == 1
    run.wait_for_positions(2)
    run.signal(signal.SIGTERM)
    assert run.exit_code() == 0
    assert venue_book(venue) == {} and not pid_alive(worker)
    assert_guard_held(run)


def test_nsup_killed_while_halting_reattaches_and_the_stop_goes_on(nsup_run, venue):
    run = trading_on(nsup_run, venue, {**FAST_RESTARTS, "flatten_rounds": 1, "flatten_round_wait_secs": 0.5},
                     exit_max_attempts=5)
    drill(venue, reject_orders=True)
    run.signal(signal.SIGTERM)
    run.wait_for(lambda: run.records("halt_stuck"), what="halt_stuck")
    run.process.kill()
    run.process.wait()
    assert len(venue_book(venue)) == 2

    run.start()
    run.wait_for(lambda: [r for r in run.records("reattach") if r["result"] == "re-attached"], what="re-attached")
    run.wait_for(lambda: len(run.records("halt_stuck")) == 2, what="HALTING carried on, and stuck again")
    drill(venue, reject_orders=False)
    import subprocess
    import sys

    subprocess.run([sys.executable, "-m", "supervisor.control.client.nsupctl", "--state-dir", str(run.state_dir), "flatten"],
                   check=True, capture_output=True, timeout=30)
    assert run.exit_code() == 0
    assert venue_book(venue) == {}
    assert_guard_held(run)


def nsupctl(run, *args: str):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "supervisor.control.client.nsupctl", "--state-dir", str(run.state_dir), *args],
                          capture_output=True, text=True, timeout=60)


def test_a_hung_worker_that_was_flat_is_replaced(nsup_run, venue):
    run = trading_on(nsup_run, venue, FAST_RESTARTS)
    nsupctl(run, "pause")
    nsupctl(run, "flatten")

    def truly_flat():  # counts at zero and no market exit still running: flat as the gate means it
        status = json.loads(nsupctl(run, "--json", "status").stdout)
        return status["positions_open"] == 0 and not any(s["is_exiting"] for s in status["strategies"])

    run.wait_for(truly_flat, what="flat")
    hung = run.worker_pid
    os.kill(hung, signal.SIGSTOP)

    run.wait_for(lambda: run.records("hung"), what="hung")
    wait_for_replacement(run)
    assert run.records("worker_end")[0]["action"] == "sigkill"
    assert run.last_status()["trading_state"] == "REDUCING", "the pause survives the replacement"
    run.signal(signal.SIGTERM)
    assert run.exit_code() == 0
    assert venue_book(venue) == {}
    assert_guard_held(run)


def test_a_hung_worker_with_positions_waits_for_the_operator(nsup_run, venue):
    run = trading_on(nsup_run, venue, FAST_RESTARTS)
    held = venue_book(venue)
    os.kill(run.worker_pid, signal.SIGSTOP)
    alert = run.wait_for(lambda: run.records("hung_with_exposure"), what="the alert")[0]
    assert len(alert["positions"]) == 2 and "nsupctl recover" in alert["reason"]
    import time

    time.sleep(1.0)
    assert run.records("worker_end") == [] and len(run.records("worker_spawned")) == 1

    result = nsupctl(run, "recover", "--confirm", "DEMO-001", "--reason", "the node froze")
    assert result.returncode == 0, result.stderr
    approval = run.records("approval")[0]
    assert approval["action"] == "recover" and approval["reason"] == "the node froze"
    replaced_with_the_same_positions_then_stopped_flat(run, venue, held)


def test_a_worker_left_without_nsup_goes_closing_only_after_the_grace(nsup_run, venue):
    run = trading_on(nsup_run, venue, {**FAST_RESTARTS, "reduce_after_supervisor_lost_secs": 1.0})
    run.process.kill()
    run.process.wait()
    import time

    time.sleep(3.0)
    run.start()
    run.wait_for(lambda: [r for r in run.records("reattach") if r["result"] == "re-attached"], what="re-attached")
    status = run.wait_for(lambda: (s := run.last_status()) and s, what="a status")
    assert status["trading_state"] == "REDUCING"
    assert "trading state set to REDUCING" in (run.state_dir / "worker.log").read_text()
    run.signal(signal.SIGTERM)
    assert run.exit_code() == 0
    assert venue_book(venue) == {}


def test_a_torn_journal_is_reported_and_the_rest_read(nsup_run):
    from supervisor.journal import read_journal

    run = nsup_run({"hold_secs": 3600.0, "flat_secs": 0.0}, {"max_restarts": 0})
    run.wait_for_state("RUNNING")
    run.signal(signal.SIGTERM)
    assert run.exit_code() == 0
    before = len(run.journal)
    with open(run.state_dir / "journal.jsonl", "ab") as journal:
        journal.write(b'{"ts": "2026-11-21T00:00:00+00:00", "kind": "transi')  # power lost mid-write

    run.start()
    run.wait_for(lambda: len([r for r in run.records("transition") if r["dest"] == "RUNNING"]) == 2, what="RUNNING again")
    records = read_journal(run.state_dir / "journal.jsonl")
    assert records[before]["kind"] == "fault" and "cut short" in records[before]["reason"]
    run.signal(signal.SIGTERM)
    assert run.exit_code() == 0


def test_a_silent_feed_is_health_not_a_hang(nsup_run, venue):
    run = trading_on(nsup_run, venue, {"feed_silent_after_secs": 0.5})
    run.wait_for(lambda: [r for r in run.records("health") if r["health"] == "ok"], what="health ok")
    drill(venue, silent=True)
    run.wait_for(lambda: [r for r in run.records("health") if r["health"] == "feed_silent"], what="feed_silent")
    import time

    time.sleep(1.0)
    assert len(run.records("worker_spawned")) == 1 and run.records("worker_end") == [] and run.records("hung") == []
    drill(venue, silent=False)
    run.wait_for(lambda: run.records("health")[-1]["health"] == "ok", what="health ok again")
    run.signal(signal.SIGTERM)
    assert run.exit_code() == 0
    assert venue_book(venue) == {}


def test_a_worker_that_died_while_nsup_was_down_is_replaced_by_the_next_nsup(nsup_run, venue):
    run = trading_on(nsup_run, venue, FAST_RESTARTS)
    held = venue_book(venue)
    run.process.kill()
    run.process.wait()
    os.kill(run.worker_pid, signal.SIGKILL)

    run.start()
    assert run.wait_for(lambda: run.records("reattach"))[0]["result"] == "the worker died while nsup was down"
    replaced_with_the_same_positions_then_stopped_flat(run, venue, held)
