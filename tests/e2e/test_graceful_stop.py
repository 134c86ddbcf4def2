"""The graceful stop against a real node: flatten, verify flat, then stop; or stay STUCK, trying."""

from __future__ import annotations

import signal
import time

import pytest

from tests.e2e.conftest import pid_alive

pytestmark = pytest.mark.e2e

ALWAYS_IN = {"hold_secs": 3600.0, "flat_secs": 0.0}  # a position is open from the first quote on
FULL_LIFECYCLE = [
    ("CREATED", "BUILT"), ("BUILT", "RUNNING"), ("RUNNING", "HALTING"), ("HALTING", "FLAT"), ("FLAT", "STOPPED"),
]


def test_stop_with_positions_open_flattens_then_stops(nsup_run):
    run = nsup_run(ALWAYS_IN)
    run.wait_for_state("RUNNING")
    run.wait_for_positions(2)
    run.signal(signal.SIGTERM)

    assert run.exit_code() == 0
    assert run.transitions() == FULL_LIFECYCLE
    halting, stopped = run.records("transition")[2], run.records("transition")[-1]
    assert halting["positions_open"] == 2, "a position must be open at the moment of the stop request"
    assert halting["actor"] == "signal:SIGTERM"
    assert (stopped["positions_open"], stopped["orders_inflight"], stopped["orders_open"]) == (0, 0, 0)
    assert run.records("worker_exit")[0]["code"] == 0
    assert not pid_alive(run.worker_pid)
    assert [r["action"] for r in run.records("worker_end")] == ["stop_command"]
    assert run.records("refusal") == []
    for record in run.journal:
        assert record["ts"].endswith("+00:00") and record["kind"]
    # The stopped worker leaves with os._exit: NautilusTrader's last lines (its log guard released
    # first) and the worker's own are in its log all the same.
    log = (run.state_dir / "worker.log").read_text()
    assert "TradingNode: DISPOSED" in log and "node stopped and disposed; exiting 0" in log


def test_demo_command_runs_and_stops_on_its_own(tmp_path):
    import subprocess
    import sys

    from supervisor.journal import read_journal

    result = subprocess.run(
        [sys.executable, "-m", "supervisor", "demo", "--duration", "3", "--state-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    transitions = [(r["source"], r["dest"]) for r in read_journal(tmp_path / "journal.jsonl") if r["kind"] == "transition"]
    assert transitions == FULL_LIFECYCLE
    assert "FLAT -> STOPPED" in result.stderr  # the terminal shows each transition


def unflattenable_node(nsup_run, rounds: int, round_wait_secs: float, **sections: dict):
    """A node whose venue rejects every closing order, RUNNING with two positions open.
    `sections`: more config tables, e.g. metrics={...}."""
    run = nsup_run(
        {**ALWAYS_IN, "reject_reduce_only": True, "exit_max_attempts": 5},
        {"flatten_rounds": rounds, "flatten_round_wait_secs": round_wait_secs},
        **sections,
    )
    run.wait_for_state("RUNNING")
    run.wait_for_positions(2)
    return run


def stuck_in_halting(nsup_run, rounds: int, round_wait_secs: float, **sections: dict):
    """A node whose venue rejects every closing order, asked to stop with two positions open."""
    run = unflattenable_node(nsup_run, rounds, round_wait_secs, **sections)
    run.signal(signal.SIGTERM)
    return run, run.wait_for(lambda: run.records("halt_stuck"), what="halt_stuck")[0]


def test_unflattenable_node_stays_halting_and_is_never_stopped(nsup_run):
    run, stuck = stuck_in_halting(nsup_run, rounds=2, round_wait_secs=1.0)

    assert stuck["positions_open"] == 2
    assert {p["instrument_id"] for p in stuck["positions"]} == {"EUR/USD.SIM", "GBP/USD.SIM"}
    assert len(run.records("flatten_round")) == 2
    time.sleep(1.0)  # well past the budget
    assert run.process.poll() is None, "nsup must stay up, STUCK"
    assert pid_alive(run.worker_pid)
    assert run.transitions()[-2:] == [("RUNNING", "HALTING"), ("HALTING", "STUCK")]
    assert run.records("worker_end") == []
    assert "StopNode" not in (run.state_dir / "worker.log").read_text()


def test_signal_storm_during_stuck_halting_changes_nothing(nsup_run):
    run, _ = stuck_in_halting(nsup_run, rounds=1, round_wait_secs=0.5)
    _storm(run, seconds=1.5)
    time.sleep(1.0)

    assert run.process.poll() is None
    assert pid_alive(run.worker_pid)
    assert run.transitions()[-1] == ("HALTING", "STUCK")
    assert run.records("worker_end") == []
    stops = [r for r in run.records("command") if r["actor"].startswith("signal:")]
    assert len(stops) >= 10
    assert all(r["state"] == "STUCK" for r in stops[1:])
    assert all(r["result"].startswith("already shutting down") for r in stops[1:])
    ignored = [r for r in run.records("worker_notice") if "ignored" in r["text"]]
    assert {"SIGTERM", "SIGINT"} <= {s for r in ignored for s in ("SIGTERM", "SIGINT") if s in r["text"]}
    assert "StopNode" not in (run.state_dir / "worker.log").read_text()


def test_signal_storm_during_flattening_still_ends_verified_flat(nsup_run):
    run = nsup_run(ALWAYS_IN, {"flat_confirm_secs": 2.0})  # a long confirm keeps HALTING open for the storm
    run.wait_for_state("RUNNING")
    run.wait_for_positions(2)
    run.signal(signal.SIGTERM)
    run.wait_for_state("HALTING")
    _storm(run, seconds=1.0)

    assert run.exit_code() == 0
    assert run.transitions() == FULL_LIFECYCLE
    assert any(r["state"] == "HALTING" and r["actor"].startswith("signal:") for r in run.records("command"))
    assert run.records("worker_exit")[0]["code"] == 0
    assert run.records("transition")[-1]["positions_open"] == 0


def _storm(run, seconds: float) -> None:
    """SIGTERM and SIGINT, again and again, at nsup and at the worker."""
    import os

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for sig in (signal.SIGTERM, signal.SIGINT):
            run.signal(sig)
            if pid_alive(run.worker_pid):
                os.kill(run.worker_pid, sig)
        time.sleep(0.1)
