"""What a start finds, against what the last session left: the reconciliation report. And a start
that fails: its cause named, and a stop before any node ran that ends STOPPED, where nothing can be
open, while the guard stands where something may be."""

from __future__ import annotations

import os
import signal

import pytest

from supervisor.daemon import EXIT_OK
from tests.e2e.conftest import pid_alive
from tests.e2e.test_flat_evidence import hand_trade
from tests.e2e.test_nsupctl import nsupctl, status
from tests.e2e.test_paper_venue import ALWAYS_IN, on_venue, trading_on, venue, venue_book  # noqa: F401 (venue: a fixture)
from tests.redis_server import free_port

pytestmark = pytest.mark.e2e

HOLD = {"fail_on_reconciliation_mismatch": True}
SLOW = "tests.e2e.factories:slow_demo_node"


def no_traceback_on_the_terminal(run) -> None:
    assert not [line for line in run.log_lines if "Traceback" in str(line)], "a traceback reached nsup's terminal"


def test_a_position_nobody_left_is_reported_and_holds_the_node_closing_only(nsup_run, venue):
    run = trading_on(nsup_run, venue, HOLD)  # first start: nothing on record, nothing found: trading as usual
    assert run.records("reconciliation_mismatch") == []
    run.signal(signal.SIGTERM)
    assert run.exit_code() == EXIT_OK and venue_book(venue) == {}
    assert run.records("session_end")[-1]["positions"] == []

    hand_trade(venue, "BUY", "EUR/USD.SIM", "100000", seen=True)  # by hand, while no node runs
    run.start()
    report = run.wait_for(lambda: run.records("reconciliation_mismatch"), what="the report")[0]
    assert report["differences"] == ["EUR/USD.SIM: the last session ended with nothing, the venue has LONG 100000"]
    assert report["ended_with"] == {"positions": [], "orders": []} and report["held_closing_only"] is True
    assert [p["instrument_id"] for p in report["found"]["positions"]] == ["EUR/USD.SIM"]
    run.wait_for_state("RUNNING")
    shown = status(run)
    assert shown["paused"] is True and shown["trading_state"] == "REDUCING"
    assert shown["reconciliation_mismatch"] == report["differences"]
    text = nsupctl(run, "status").stdout
    assert "mismatch       EUR/USD.SIM: the last session ended with nothing" in text

    assert nsupctl(run, "resume").returncode == EXIT_OK  # the operator has looked: trading again
    run.wait_for(lambda: status(run)["trading_state"] == "ACTIVE", what="ACTIVE")
    run.signal(signal.SIGTERM)
    assert run.exit_code() == EXIT_OK and venue_book(venue) == {}
    no_traceback_on_the_terminal(run)


def test_a_stop_before_the_node_ever_ran_ends_stopped_without_running_it(nsup_run):
    run = nsup_run({"build_delay_secs": 2.0, "hold_secs": 3600.0, "flat_secs": 0.0}, factory=SLOW)
    run.wait_for(lambda: run.records("worker_spawned"), what="spawn")
    run.signal(signal.SIGTERM)

    assert run.exit_code() == EXIT_OK
    assert run.transitions()[-1][1] == "STOPPED"
    assert run.records("transition")[-1]["trigger"] == "abandon"
    assert not [r for r in run.records("worker_command") if r["command"]["type"] == "run"], "the node was never run"
    assert not pid_alive(run.worker_pid)


def test_an_unreachable_exchange_is_named_and_sigterm_ends_stopped(nsup_run):
    """NautilusTrader's own Binance adapter, pointed where nothing listens: the connection is refused."""
    run = nsup_run({"port": free_port()}, {"startup_timeout_secs": 6.0, "max_restarts": 3},
                   factory="tests.e2e.factories:unreachable_exchange_node")
    fault = run.wait_for(lambda: [r for r in run.records("fault") if "start-up failed" in r["reason"]], timeout=60,
                         what="the failed start")[0]
    assert "Connection refused" in fault["reason"] and "retrying will not heal this" in fault["reason"]
    run.signal(signal.SIGTERM)

    assert run.exit_code(timeout=60) == EXIT_OK
    assert run.records("transition")[-1]["trigger"] == "abandon"
    assert len(run.records("worker_spawned")) == 1, "no new attempt after the stop"
    no_traceback_on_the_terminal(run)


def test_a_stop_where_a_lost_node_may_have_left_positions_still_flattens(nsup_run, venue):
    run = trading_on(nsup_run, venue, {"restart_backoff_secs": 2.0})
    held = venue_book(venue)
    run.process.kill()  # nsup and its worker both die, with positions open
    run.process.wait()
    os.kill(run.worker_pid, signal.SIGKILL)

    run.start()
    run.wait_for(lambda: run.records("restart_scheduled"), what="the restart")
    run.signal(signal.SIGTERM)  # while no node runs: it may not be given up
    refusal = run.wait_for(lambda: [r for r in run.records("refusal") if r["trigger"] == "abandon"], what="refusal")[0]
    assert "the stop waits for a node that can flatten and verify" in refusal["reason"]

    assert run.exit_code() == EXIT_OK
    assert [d for _, d in run.transitions()][-4:] == ["RUNNING", "HALTING", "FLAT", "STOPPED"]
    commands = [r["command"] for r in run.records("worker_command")]
    run_at = len(commands) - 1 - commands[::-1].index({"type": "run", "timeout_secs": 60.0})  # the last node's
    assert commands[run_at - 1] == {"type": "set_trading_state", "trading_state": "REDUCING"}, \
        "a node started while a stop is pending starts closing-only"
    assert held and venue_book(venue) == {}
