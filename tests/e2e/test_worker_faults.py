"""A worker that dies on its own is reaped and journaled as a fault, and nsup ends ABORTED."""

from __future__ import annotations

import os
import signal

import pytest

from supervisor.daemon import EXIT_ABORTED

pytestmark = pytest.mark.e2e

NO_RESTARTS = {"max_restarts": 0}  # recovery is tested in test_recovery.py


def test_worker_killed_while_running_ends_aborted(nsup_run):
    run = nsup_run({"hold_secs": 3600.0, "flat_secs": 0.0}, NO_RESTARTS)
    run.wait_for_state("RUNNING")
    run.wait_for_positions(1)
    os.kill(run.worker_pid, signal.SIGKILL)

    assert run.exit_code(timeout=30) == EXIT_ABORTED
    assert run.transitions()[-2:] == [("RUNNING", "RECOVERING"), ("RECOVERING", "ABORTED")]
    fault = run.records("fault")[0]
    assert fault["exit_code"] == -signal.SIGKILL
    assert "RUNNING" in fault["reason"]
    assert fault["positions_open"] >= 1  # the last counts known are on record with the fault


def test_factory_that_cannot_be_imported_is_a_clear_fault(nsup_run):
    run = nsup_run(supervisor=NO_RESTARTS, factory="no_such_module:build")

    assert run.exit_code(timeout=30) == EXIT_ABORTED
    reasons = " ".join(r["reason"] for r in run.records("fault"))
    assert "ModuleNotFoundError" in reasons and "no_such_module" in reasons
    assert run.transitions() == [("CREATED", "RECOVERING"), ("RECOVERING", "ABORTED")]
    assert run.records("refusal") == []  # a worker that reported its failure is waited for, not asked
    assert not any(isinstance(line, str) and "Traceback" in line for line in run.log_lines)


def test_worker_hung_in_halting_is_waited_for_not_killed(nsup_run):
    run = nsup_run({"hold_secs": 3600.0, "flat_secs": 0.0}, {"flat_confirm_secs": 1.0})
    run.wait_for_state("RUNNING")
    run.wait_for_positions(2)
    os.kill(run.worker_pid, signal.SIGSTOP)  # alive, not answering, positions open
    try:
        run.signal(signal.SIGTERM)
        run.wait_for(lambda: [r for r in run.records("fault") if "missed 3 heartbeats" in r["reason"]], what="silence alert")
        assert run.process.poll() is None
        assert run.transitions()[-1] == ("RUNNING", "HALTING")
        assert run.records("worker_end") == []
    finally:
        os.kill(run.worker_pid, signal.SIGCONT)

    assert run.exit_code() == 0
    assert run.transitions()[-2:] == [("HALTING", "FLAT"), ("FLAT", "STOPPED")]
    assert run.records("worker_answering")
    assert run.records("transition")[-1]["positions_open"] == 0
