"""nsupctl against a running nsup over its real sockets, with a real demo node behind it."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time

import pytest

from supervisor.control.client.client import ControlClient
from supervisor.control.commands.base import EXIT_OK, EXIT_REFUSED, EXIT_STUCK, EXIT_UNREACHABLE, EXIT_USAGE
from supervisor.daemon import EXIT_ABORTED
from tests.e2e.conftest import REPO, pid_alive

pytestmark = pytest.mark.e2e

ALWAYS_IN = {"hold_secs": 3600.0, "flat_secs": 0.0}
UNFLATTENABLE = {**ALWAYS_IN, "reject_reduce_only": True, "exit_max_attempts": 5}
STUCK_FAST = {"flatten_rounds": 1, "flatten_round_wait_secs": 0.5}


def nsupctl(run, *args: str, stdin: str | None = None, timeout: float = 30):
    return subprocess.run(
        [sys.executable, "-m", "supervisor.control.client.nsupctl", "--state-dir", str(run.state_dir), *args],
        cwd=REPO, capture_output=True, text=True, timeout=timeout, input=stdin,
    )


def status(run) -> dict:
    result = nsupctl(run, "--json", "status")
    assert result.returncode == EXIT_OK, result.stderr
    return json.loads(result.stdout)


def wait_status(run, predicate, timeout: float = 15.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = status(run)
        if predicate(current):
            return current
        time.sleep(0.1)
    raise AssertionError(f"status never matched; last: {current}")


def stuck(nsup_run, supervisor: dict | None = None):
    run = nsup_run(UNFLATTENABLE, {**STUCK_FAST, **(supervisor or {})})
    run.wait_for_state("RUNNING")
    run.wait_for_positions(2)
    assert nsupctl(run, "stop").returncode == EXIT_OK
    run.wait_for(lambda: run.records("halt_stuck"), what="halt_stuck")
    return run


def test_status_json_has_the_documented_shape(nsup_run):
    run = nsup_run(ALWAYS_IN)
    run.wait_for_state("RUNNING")
    data = wait_status(run, lambda s: s["positions_open"] == 2)

    assert data["state"] == "RUNNING" and data["trading_state"] == "ACTIVE"
    assert (data["orders_inflight"], data["orders_open"]) == (0, 0)
    assert data["worker_pid"] == run.worker_pid and data["supervisor_pid"] == run.process.pid
    assert data["heartbeat_age_secs"] < 1.0 and data["restarts"] == 0
    assert data["last_transition"]["dest"] == "RUNNING"
    assert {p["instrument_id"] for p in data["positions"]} == {"EUR/USD.SIM", "GBP/USD.SIM"}
    assert set(data["positions"][0]) == {"instrument_id", "side", "quantity", "unrealized_pnl"}
    human = nsupctl(run, "status").stdout
    assert "RUNNING" in human and "EUR/USD.SIM" in human


def test_pause_flatten_resume(nsup_run):
    run = nsup_run(ALWAYS_IN)
    run.wait_for_state("RUNNING")
    wait_status(run, lambda s: s["positions_open"] == 2)

    assert nsupctl(run, "pause").returncode == EXIT_OK
    assert nsupctl(run, "flatten").returncode == EXIT_OK
    paused = wait_status(run, lambda s: s["positions_open"] == 0)
    assert (paused["state"], paused["trading_state"], paused["paused"]) == ("RUNNING", "REDUCING", True)
    time.sleep(1.0)
    assert status(run)["positions_open"] == 0, "no entries while paused"

    assert nsupctl(run, "resume").returncode == EXIT_OK
    resumed = wait_status(run, lambda s: s["positions_open"] == 2)
    assert resumed["trading_state"] == "ACTIVE" and not resumed["paused"]
    commands = [(r["command"], r["actor"]) for r in run.records("command")]
    assert [c for c, _ in commands] == ["pause", "flatten", "resume"]
    assert all("@" in actor for _, actor in commands)


def test_stop_wait_follows_the_flatten_to_stopped(nsup_run):
    run = nsup_run(ALWAYS_IN)
    run.wait_for_state("RUNNING")
    wait_status(run, lambda s: s["positions_open"] == 2)

    result = nsupctl(run, "stop", "--wait")
    assert result.returncode == EXIT_OK, result.stderr
    assert "RUNNING -> HALTING" in result.stdout and "FLAT -> STOPPED" in result.stdout
    assert "positions=2" in result.stdout  # the progress showed the exposure being closed
    assert run.exit_code() == 0
    assert run.transitions()[-1] == ("FLAT", "STOPPED")


def test_stop_wait_exits_stuck_when_the_node_cannot_be_flattened(nsup_run):
    run = nsup_run(UNFLATTENABLE, STUCK_FAST)
    run.wait_for_state("RUNNING")
    run.wait_for_positions(2)

    result = nsupctl(run, "stop", "--wait")
    assert result.returncode == EXIT_STUCK, result.stdout + result.stderr
    assert "halt_stuck" in result.stdout
    assert run.process.poll() is None and pid_alive(run.worker_pid)


def test_stop_wait_on_a_node_already_stuck_says_so(nsup_run):
    run = stuck(nsup_run)
    result = nsupctl(run, "stop", "--wait")
    assert result.returncode == EXIT_STUCK, result.stdout + result.stderr
    assert status(run)["stuck"] is True


def test_resume_is_refused_for_a_stop_that_came_from_a_signal(nsup_run):
    run = nsup_run(UNFLATTENABLE, STUCK_FAST)
    run.wait_for_state("RUNNING")
    run.wait_for_positions(2)
    run.signal(15)
    run.wait_for(lambda: run.records("halt_stuck"), what="halt_stuck")
    result = nsupctl(run, "resume")
    assert result.returncode == EXIT_REFUSED and "SIGTERM" in result.stderr
    assert status(run)["state"] == "STUCK"


class Terminal:
    """`nsupctl abort` at a pseudo-terminal, so that it asks, as it would a person."""

    def __init__(self, run):
        import pty

        self.controller, terminal = pty.openpty()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "supervisor.control.client.nsupctl", "--state-dir", str(run.state_dir), "abort"],
            cwd=REPO, stdin=terminal, stdout=terminal, stderr=terminal,
        )
        os.close(terminal)
        self.screen = b""

    def read_until(self, text: bytes) -> None:
        deadline = time.monotonic() + 15
        while text not in self.screen and time.monotonic() < deadline:
            self.screen += os.read(self.controller, 4096)
        assert text in self.screen, self.screen.decode(errors="replace")

    def type(self, text: bytes) -> None:
        os.write(self.controller, text)


def test_eof_at_the_abort_prompt_cancels(nsup_run):
    run = stuck(nsup_run)
    terminal = Terminal(run)
    terminal.read_until(b"to confirm: ")
    terminal.type(b"\x04")  # Ctrl-D: end of input
    operator, controller = terminal.process, terminal.controller
    screen = terminal.screen
    assert operator.wait(timeout=30) == EXIT_REFUSED
    screen += os.read(controller, 4096)
    os.close(controller)
    assert b"cancelled" in screen and b"Traceback" not in screen
    assert run.records("approval") == [] and run.process.poll() is None


def test_resume_from_halting_cancels_the_shutdown(nsup_run):
    run = stuck(nsup_run)
    result = nsupctl(run, "resume")
    assert result.returncode == EXIT_OK, result.stderr

    data = status(run)
    assert (data["state"], data["trading_state"], data["shutdown_requested"]) == ("RUNNING", "ACTIVE", False)
    assert run.transitions()[-1] == ("STUCK", "RUNNING")
    assert run.records("worker_end") == []


def test_abort_challenge_wrong_replayed_stale_then_right(nsup_run):
    run = stuck(nsup_run, {"abort_challenge_ttl_secs": 1.0})
    client = ControlClient.from_state_dir(run.state_dir)
    try:
        wrong = client.call("abort")
        assert wrong.status == "ok" and len(wrong.data["positions"]) == 2
        refused = client.call("abort_confirm", nonce=wrong.data["nonce"], confirmation="NOT-ME", reason="test")
        assert refused.status == "error" and "does not match" in refused.reason
        replayed = client.call("abort_confirm", nonce=wrong.data["nonce"], confirmation="DEMO-001", reason="test")
        assert replayed.status == "error" and "already used" in replayed.reason
        stale = client.call("abort")
        time.sleep(1.2)
        late = client.call("abort_confirm", nonce=stale.data["nonce"], confirmation="DEMO-001", reason="test")
        assert late.status == "error" and "expired" in late.reason
        unknown = client.call("abort_confirm", nonce="feedfacefeedface", confirmation="DEMO-001", reason="test")
        assert unknown.status == "error" and "unknown nonce" in unknown.reason
    finally:
        client.close()
    assert run.process.poll() is None and pid_alive(run.worker_pid)
    assert run.records("worker_end") == [] and run.records("approval") == []

    no_terminal = nsupctl(run, "abort", stdin="")
    assert no_terminal.returncode == EXIT_REFUSED and "--confirm" in no_terminal.stderr

    right = nsupctl(run, "abort", "--confirm", "DEMO-001", "--reason", "venue rejects every close")
    assert right.returncode == EXIT_OK, right.stderr
    assert run.exit_code() == EXIT_ABORTED
    approval = run.records("approval")[0]
    assert approval["reason"] == "venue rejects every close" and approval["operator"] and approval["host"]
    assert len(approval["positions"]) == 2 and approval["nonce"]
    end = run.records("worker_end")[0]
    assert end["approval_id"] == approval["nonce"] and end["positions_open"] == 2
    assert run.transitions()[-2:] == [("STUCK", "ABORTING"), ("ABORTING", "ABORTED")]
    assert not pid_alive(run.worker_pid)


def test_abort_is_refused_unless_halting(nsup_run):
    run = nsup_run(ALWAYS_IN)
    run.wait_for_state("RUNNING")
    result = nsupctl(run, "abort", "--confirm", "DEMO-001", "--reason", "x")
    assert result.returncode == EXIT_REFUSED and "only in HALTING" in result.stderr
    assert run.records("refusal")[-1]["command"] == "abort"


def test_restart_only_when_flat(nsup_run):
    run = nsup_run(ALWAYS_IN)
    run.wait_for_state("RUNNING")
    wait_status(run, lambda s: s["positions_open"] == 2)
    first_worker = run.worker_pid

    refused = nsupctl(run, "restart")
    assert refused.returncode == EXIT_REFUSED and "only when flat" in refused.stderr
    assert status(run)["trading_state"] == "ACTIVE"  # never touched
    assert "TradingState.HALTED" not in (run.state_dir / "worker.log").read_text()

    nsupctl(run, "pause")
    nsupctl(run, "flatten")
    wait_status(run, lambda s: s["positions_open"] == 0)
    done = nsupctl(run, "--json", "restart")
    assert done.returncode == EXIT_OK, done.stderr
    data = status(run)
    assert data["restarts"] == 1 and data["worker_pid"] != first_worker and data["state"] == "RUNNING"
    assert data["trading_state"] == "REDUCING", "a paused node comes back paused"
    assert not pid_alive(first_worker)
    assert run.transitions()[-4:] == [("RUNNING", "RESTARTING"), ("RESTARTING", "RECOVERING"), ("RECOVERING", "BUILT"),
                                      ("BUILT", "RUNNING")]


def test_sockets_are_private(nsup_run):
    run = nsup_run(ALWAYS_IN)
    run.wait_for_state("RUNNING")
    worker_socket, = run.run_dir.glob("worker-*.sock")  # each worker's link has a socket of its own
    for name in ("control.sock", "events.sock", worker_socket.name):
        mode = stat.S_IMODE(os.stat(run.run_dir / name).st_mode)
        assert mode == 0o600, f"{name} is {oct(mode)}"


def test_events_stream_heartbeats_and_transitions(nsup_run):
    run = nsup_run(ALWAYS_IN)
    run.wait_for_state("RUNNING")
    follower = subprocess.Popen(
        [sys.executable, "-m", "supervisor.control.client.nsupctl", "--state-dir", str(run.state_dir), "--json", "events"],
        cwd=REPO, stdout=subprocess.PIPE, text=True,
    )
    try:
        time.sleep(1.0)
        nsupctl(run, "stop")
        assert run.exit_code() == 0
        time.sleep(0.3)
    finally:
        follower.terminate()
    events = [json.loads(line) for line in follower.communicate(timeout=10)[0].splitlines()]
    topics = [e["topic"] for e in events]
    assert "heartbeat" in topics and "command" in topics
    dests = [e["event"]["dest"] for e in events if e["topic"] == "transition"]
    assert dests[:2] == ["HALTING", "FLAT"]


def test_tail_and_version_and_errors(nsup_run):
    run = nsup_run(ALWAYS_IN)
    run.wait_for_state("RUNNING")
    tail = nsupctl(run, "--json", "tail", "-n", "2")
    assert tail.returncode == EXIT_OK and len([json.loads(line) for line in tail.stdout.splitlines()]) == 2
    version = json.loads(nsupctl(run, "--json", "version").stdout)
    assert version["control_protocol"] == 1 and version["nsup"] == version["nsupctl"]
    assert nsupctl(run, "no-such-command").returncode == EXIT_USAGE

    run.signal(15)
    assert run.exit_code() == 0
    gone = nsupctl(run, "--json", "status")
    assert gone.returncode == EXIT_UNREACHABLE and json.loads(gone.stdout)["error"] == "not_reachable"


def test_abort_at_a_terminal_asks_for_the_trader_id_and_a_reason(nsup_run):
    run = stuck(nsup_run)
    terminal = Terminal(run)
    terminal.read_until(b"to confirm: ")
    assert b"EUR/USD.SIM" in terminal.screen and b"GBP/USD.SIM" in terminal.screen  # the positions were shown first
    terminal.type(b"DEMO-001\n")
    terminal.read_until(b"Reason")
    terminal.type(b"venue down, accepting the exposure\n")
    assert terminal.process.wait(timeout=30) == EXIT_OK
    os.close(terminal.controller)
    assert run.exit_code() == EXIT_ABORTED
    assert run.records("approval")[0]["reason"] == "venue down, accepting the exposure"
