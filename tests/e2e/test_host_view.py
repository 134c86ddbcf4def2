"""The host view against real nodes: two nsup demo nodes (real TradingNodes in real workers) under one
root, as nsup@alpha and nsup@beta keep them under /var/lib/nsup; nsupctl names them, tables them, and
stops them all, each through its own gate."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from supervisor.control.commands.base import EXIT_OK, EXIT_UNREACHABLE
from tests.e2e.conftest import REPO
from tests.e2e.test_nsupctl import ALWAYS_IN

pytestmark = pytest.mark.e2e

NAMES = ("alpha", "beta")


def nsupctl(root, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """nsupctl as an operator on the host types it: the root from the environment, nodes by name."""
    return subprocess.run([sys.executable, "-m", "supervisor.control.client.nsupctl", *args], cwd=REPO,
                          env={**os.environ, "NSUP_ROOT": str(root)}, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def host(nsup_run, tmp_path):
    """Two running nodes, each holding two positions, under tmp_path/root."""
    root = tmp_path / "root"
    runs = {name: nsup_run(ALWAYS_IN, {"state_dir": str(root / name)}) for name in NAMES}
    for run in runs.values():
        run.wait_for_positions(2, timeout=60)
    return root, runs


def table(done: subprocess.CompletedProcess) -> dict[str, list[str]]:
    lines = done.stdout.splitlines()
    assert lines[0].split()[:3] == ["NODE", "STATE", "TRADING"], done.stdout
    return {line.split()[0]: line.split() for line in lines[1:]}


def test_the_table_pause_all_one_silent_node_and_stop_wait_all(host):
    root, runs = host

    shown = nsupctl(root, "status")
    assert shown.returncode == EXIT_OK, shown.stdout + shown.stderr
    rows = table(shown)
    assert list(rows) == list(NAMES)
    for name in NAMES:  # NODE STATE TRADING POS INFLIGHT OPEN HEALTH HEARTBEAT UPTIME RESTARTS
        assert rows[name][1:4] == ["RUNNING", "ACTIVE", "2"] and rows[name][-1] == "0", rows[name]

    paused = nsupctl(root, "pause", "all", "--json")
    assert paused.returncode == EXIT_OK, paused.stdout + paused.stderr
    assert {json.loads(line)["node"]: json.loads(line)["trading_state"] for line in paused.stdout.splitlines()} == \
        {name: "REDUCING" for name in NAMES}
    listed = json.loads(nsupctl(root, "status", "--json").stdout)
    assert [(row["node"], row["reachable"], row["trading_state"], row["positions_open"]) for row in listed] == \
        [(name, True, "REDUCING", 2) for name in NAMES]
    one = json.loads(nsupctl(root, "status", "beta", "--json").stdout)  # one node named: its whole status
    assert one["supervisor_pid"] == runs["beta"].process.pid and len(one["positions"]) == 2

    events = subprocess.Popen([sys.executable, "-m", "supervisor.control.client.nsupctl", "events", "alpha", "--json"],
                              cwd=REPO, env={**os.environ, "NSUP_ROOT": str(root)}, stdout=subprocess.PIPE, text=True)
    try:  # the event stream of the node named, as JSON after the command too
        first = json.loads(events.stdout.readline())
    finally:
        events.terminate()
        events.communicate(timeout=10)
    assert first["topic"] == "heartbeat" and first["event"]["state"] == "RUNNING"

    runs["beta"].signal(signal.SIGSTOP)  # an nsup that does not answer is a row that says so
    try:
        silent = nsupctl(root, "--timeout", "1", "status")
    finally:
        runs["beta"].signal(signal.SIGCONT)
    assert silent.returncode == EXIT_UNREACHABLE, silent.stdout + silent.stderr
    rows = table(silent)
    assert rows["alpha"][1:4] == ["RUNNING", "REDUCING", "2"]
    assert rows["beta"][1] == "RUNNING" and "not reachable: no reply" in " ".join(rows["beta"])

    stopped = nsupctl(root, "stop", "--wait", "all")
    assert stopped.returncode == EXIT_OK, stopped.stdout + stopped.stderr
    for name, run in runs.items():
        mine = [line for line in stopped.stdout.splitlines() if line.startswith(f"{name} ")]
        assert any("RUNNING -> HALTING" in line for line in mine), stopped.stdout  # its own progress, by name
        assert "FLAT -> STOPPED" in mine[-1] and mine[-1].endswith("positions=0 inflight=0 open=0"), stopped.stdout
        assert run.exit_code() == 0
        last = run.records("transition")[-1]
        assert (last["dest"], last["positions_open"], last["orders_open"]) == ("STOPPED", 0, 0)
        assert any(r["kind"] == "command" and r.get("command") == "stop" for r in run.journal)

    again = nsupctl(root, "stop", "--wait", "all")  # asked again: how each ended, not that it is gone
    assert again.returncode == EXIT_OK and sorted(line.split(None, 1) for line in again.stdout.splitlines()) == \
        [[name, "nsup had already ended STOPPED"] for name in NAMES], again.stdout + again.stderr

    after = nsupctl(root, "status")
    assert after.returncode == EXIT_UNREACHABLE  # nothing answers now: each row says its last state and why
    assert {name: row[1] for name, row in table(after).items()} == {name: "STOPPED" for name in NAMES}
    assert "no endpoints.json" in after.stdout
