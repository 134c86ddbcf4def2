"""sd_notify through a whole run, on a real unix datagram socket bound as NOTIFY_SOCKET."""

from __future__ import annotations

import signal
import socket
import tempfile
import threading
from pathlib import Path

import pytest

from tests.e2e.conftest import NsupRun

pytestmark = pytest.mark.e2e


def test_the_notify_sequence_of_a_full_run(tmp_path):
    path = Path(tempfile.mkdtemp(prefix="sd-")) / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(path))
    listener.settimeout(0.2)
    messages: list[str] = []
    done = threading.Event()

    def receive():
        while not done.is_set():
            try:
                messages.append(listener.recv(4096).decode())
            except TimeoutError:
                continue

    threading.Thread(target=receive, daemon=True).start()
    run = NsupRun(tmp_path / "r", {"hold_secs": 3600.0, "flat_secs": 0.0}, {"flat_confirm_secs": 1.0})
    run.env = {"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "1000000"}
    try:
        run.start()
        run.wait_for_state("RUNNING")
        run.wait_for_positions(2)
        import time

        time.sleep(1.2)  # at least two watchdog pings at half of WATCHDOG_USEC
        run.signal(signal.SIGTERM)
        assert run.exit_code() == 0
    finally:
        done.set()
        run.kill_all()
    lines = [line for m in messages for line in m.split("\n")]
    ready = lines.index("READY=1")
    stopping = lines.index("STOPPING=1")
    assert ready < stopping and lines.count("READY=1") == 1 and lines.count("STOPPING=1") == 1
    assert lines.count("WATCHDOG=1") >= 2
    statuses = [line for line in lines if line.startswith("STATUS=")]
    assert [st.split()[0] for st in statuses] == [
        "STATUS=BUILT", "STATUS=RUNNING", "STATUS=HALTING", "STATUS=FLAT", "STATUS=STOPPED"]
    assert "positions=2" in statuses[2], "the counts at the stop request are on the unit's status line"
    assert any(line.startswith("EXTEND_TIMEOUT_USEC=") for line in lines[stopping:]), "systemd must never kill a flatten"
