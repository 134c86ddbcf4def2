"""Start-up: a stop before RUNNING, a worker that never says hello, one nsup per node."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from supervisor.daemon import EXIT_ABORTED, EXIT_USAGE
from tests.e2e.conftest import REPO, pid_alive

pytestmark = pytest.mark.e2e

SLOW = "tests.e2e.factories:slow_demo_node"


def test_worker_that_never_says_hello_is_killed_as_never_run(nsup_run):
    run = nsup_run({"build_delay_secs": 30.0}, {"startup_timeout_secs": 1.0, "max_restarts": 0}, factory=SLOW)

    assert run.exit_code() == EXIT_ABORTED
    end = run.records("worker_end")[0]
    assert end["action"] == "sigkill" and "never run" in end["reason"]
    assert not pid_alive(run.worker_pid)
    assert run.transitions() == [("CREATED", "RECOVERING"), ("RECOVERING", "ABORTED")]


def test_a_second_nsup_on_the_same_node_is_refused(nsup_run):
    run = nsup_run({"hold_secs": 3600.0, "flat_secs": 0.0})
    run.wait_for_state("RUNNING")
    second = subprocess.run(
        [sys.executable, "-m", "supervisor", "run", "--config", str(run.config_path)],
        cwd=REPO, capture_output=True, text=True, timeout=30,
    )
    assert second.returncode == EXIT_USAGE
    assert "another nsup already supervises this node" in second.stderr
    assert run.process.poll() is None


def test_no_new_nsup_beside_a_worker_it_cannot_vouch_for(nsup_run):
    run = nsup_run({"hold_secs": 3600.0, "flat_secs": 0.0})
    run.wait_for_state("RUNNING")
    run.process.kill()  # the supervisor dies; the worker, in its own session, trades on
    run.process.wait()
    (run.state_dir / "state.json").unlink()  # and nothing on record says whose it is

    again = subprocess.run(
        [sys.executable, "-m", "supervisor", "run", "--config", str(run.config_path)],
        cwd=REPO, capture_output=True, text=True, timeout=30,
    )
    assert again.returncode == EXIT_USAGE
    assert "a worker of this node is still running, and it is not ours" in again.stderr
    assert pid_alive(run.worker_pid)
    assert len(run.records("worker_spawned")) == 1
    os.kill(run.worker_pid, signal.SIGKILL)  # teardown


def test_a_worker_left_unrecorded_before_its_node_ran_ends_itself_and_frees_the_node(nsup_run):
    """nsup killed between spawning a worker and putting it in state.json: no nsup can vouch for that
    worker, so each new one is refused beside it. Its node never ran (nothing to protect), so with no
    word from nsup for ten heartbeats after its hello it ends itself, and the next nsup starts the node."""
    run = nsup_run({"hold_secs": 3600.0, "flat_secs": 0.0})
    worker = run.wait_for(lambda: run.records("worker_spawned") and run.worker_pid, what="the worker spawned")
    run.process.kill()  # before the worker said hello (it builds its node for seconds), so before RunNode
    run.process.wait()
    (run.state_dir / "state.json").unlink()  # as if nsup died before it put the worker on record
    assert not run.records("worker_hello"), "the scenario missed its window: the worker said hello first"

    refused = subprocess.run([sys.executable, "-m", "supervisor", "run", "--config", str(run.config_path)],
                             cwd=REPO, capture_output=True, text=True, timeout=30)
    assert refused.returncode == EXIT_USAGE and "it is not ours" in refused.stderr
    deadline = time.monotonic() + 30
    while pid_alive(worker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not pid_alive(worker), "the orphaned worker did not end itself"
    assert "the worker ends itself" in Path(run.records("worker_spawned")[0]["log"]).read_text()

    run.start()
    run.wait_for_state("RUNNING")
    run.signal(signal.SIGTERM)
    assert run.exit_code() == 0
