"""Runs a real nsup over a real worker (real TradingNode, synthetic feed, sandbox venue, real ZMQ)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from supervisor.journal import read_journal

DEMO_FACTORY = "node_worker.demo.node:demo_node"
REPO = Path(__file__).resolve().parents[2]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purposes; only its parent can reap it.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


class NsupRun:
    """One `nsup run --config` process, its journal and its worker."""

    def __init__(self, tmp_path: Path, node_params: dict, supervisor: dict, factory: str = DEMO_FACTORY, **sections: dict):
        """`sections`: more config tables, e.g. control={...}, alerts={...}, metrics={...}; node={...} adds to [node]."""
        tmp_path.mkdir(parents=True)
        self.state_dir = Path(supervisor.get("state_dir", tmp_path / "state"))  # e.g. ROOT/NAME, as nsup@NAME's
        # ipc socket paths are limited to about 107 bytes; pytest's tmp paths can be longer.
        self.run_dir = Path(tempfile.mkdtemp(prefix="nsup-run-"))
        self.config_path = tmp_path / "nsup.toml"
        # NautilusTrader's sandbox (the demo's default venue) cannot say what it holds: flat there is the
        # node's cache's word, which a test of the demo on it takes explicitly, as `nsup demo --sandbox` does.
        demo_built = factory == DEMO_FACTORY or factory.startswith("tests.e2e.factories:")
        sandbox = demo_built and node_params.get("venue", "sandbox") == "sandbox"
        settings = {"state_dir": str(self.state_dir), "run_dir": str(self.run_dir), "heartbeat_interval_secs": 0.2,
                    "flat_confirm_secs": 0.3, **({"venue_check": "trust_cache"} if sandbox else {}), **supervisor}
        node = [f"{k} = {json.dumps(v)}" for k, v in sections.pop("node", {}).items()]  # more of [node], e.g. scope
        lines = ["[node]", f"factory = {json.dumps(factory)}", f"params = {_toml_inline(node_params)}", *node, "", "[supervisor]"]
        lines += [f"{k} = {json.dumps(v)}" for k, v in settings.items()]
        for name, table in sections.items():
            lines += ["", f"[{name}]", *(f"{k} = {json.dumps(v)}" for k, v in table.items())]
        self.config_path.write_text("\n".join(lines) + "\n")
        self.log_lines: list[dict | str] = []
        self.process: subprocess.Popen | None = None
        self.env: dict[str, str] = {}  # set before start(), e.g. NOTIFY_SOCKET
        self._workers: set[int] = set()

    def start(self) -> NsupRun:
        """Start nsup; again after it died, it is a new nsup on the same state (a restart)."""
        self.log_lines = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "supervisor", "run", "--config", str(self.config_path), "--log-json"],
            cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            env={**os.environ, **self.env},
        )
        self._log_reader = threading.Thread(target=self._read_log, daemon=True)
        self._log_reader.start()
        return self

    def _read_log(self) -> None:
        for raw in self.process.stderr:
            try:
                self.log_lines.append(json.loads(raw))
            except ValueError:
                self.log_lines.append(raw.decode(errors="replace"))

    @property
    def journal(self) -> list[dict]:
        path = self.state_dir / "journal.jsonl"
        return read_journal(path) if path.exists() else []

    def records(self, kind: str) -> list[dict]:
        return [r for r in self.journal if r["kind"] == kind]

    def transitions(self) -> list[tuple[str, str]]:
        return [(r["source"], r["dest"]) for r in self.records("transition")]

    @property
    def worker_pid(self) -> int:
        pid = self.records("worker_spawned")[0]["pid"]
        self._workers.add(pid)  # ended at teardown even if the journal has gone (replaced, or its disk unmounted)
        return pid

    def wait_for(self, predicate, timeout: float = 30.0, what: str = "condition"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = predicate()
            if result:
                return result
            if self.process.poll() is not None and not predicate():
                raise AssertionError(f"nsup exited {self.process.returncode} before {what}; journal: {self.journal}")
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}; journal: {self.journal}")

    def wait_for_state(self, state: str, timeout: float = 30.0) -> dict:
        return self.wait_for(
            lambda: next((r for r in self.records("transition") if r["dest"] == state), None), timeout, f"state {state}"
        )

    def last_status(self) -> dict | None:
        """The last status line nsup logged: state, trading state, counts, positions."""
        for line in reversed(list(self.log_lines)):
            status = _logged_status(line)
            if status:
                return status
        return None

    def wait_for_positions(self, minimum: int = 1, timeout: float = 15.0) -> dict:
        def seen():
            for line in list(self.log_lines):
                status = _logged_status(line)
                if status and status["positions_open"] >= minimum:
                    return status
            return None

        return self.wait_for(seen, timeout, f"{minimum} open position(s)")

    def signal(self, sig: int) -> None:
        self.process.send_signal(sig)

    def exit_code(self, timeout: float = 60.0) -> int:
        code = self.process.wait(timeout)
        self._log_reader.join(5.0)  # the last lines it wrote are read too
        return code

    def kill_all(self) -> None:
        """Test teardown only: a stuck nsup and its worker are ended by hand, as an operator would."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        if self.process and self.process.stderr:
            self.process.stderr.close()
        for pid in self._workers | {record["pid"] for record in self.records("worker_spawned")}:
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.run_dir, ignore_errors=True)


def _logged_status(line) -> dict | None:
    """The status a log line carries (a journal record nsup could not write, printed as it exits, has none)."""
    return isinstance(line, dict) and line.get("record", {}).get("extra", {}).get("status")


def _toml_inline(params: dict) -> str:
    return "{ " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in params.items()) + " }"


@pytest.fixture
def nsup_run(tmp_path):
    runs: list[NsupRun] = []

    def make(node_params: dict | None = None, supervisor: dict | None = None, factory: str = DEMO_FACTORY,
             **sections: dict) -> NsupRun:
        run = NsupRun(tmp_path / f"run{len(runs)}", node_params or {}, supervisor or {}, factory, **sections)
        runs.append(run)
        return run.start()

    yield make
    for run in runs:
        run.kill_all()
