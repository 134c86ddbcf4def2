"""Starts a paper venue process, asks it what it holds, and stops it: for `nsup demo` and the tests.

The venue runs in its own session, like a broker that does not care whether the node lives: a
killed worker, or a killed nsup, leaves its books as they were.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import zmq

from paper_venue import protocol as v

READY_TIMEOUT_SECS = 30.0  # NautilusTrader's import and the made-up bar history come first


def endpoints_in(directory: Path) -> tuple[str, str]:
    """Where a venue started in `directory` listens: requests, and quotes. The one place that knows
    (`python -m paper_venue serve --dir DIR` listens here too)."""
    return f"ipc://{directory / 'venue.sock'}", f"ipc://{directory / 'venue-quotes.sock'}"


class VenueProcess:
    """A venue listening at endpoints_in(directory), logging to directory/venue.log (appended).
    instruments: the symbols it lists; accounts: account id -> what follows the id in `--account`:
    "NETTING" or "HEDGING", with ":shared" for an account several traders use at once (e.g.
    {"SIM-001": "NETTING:shared"}); interval_ms and seed: the market's step and the random walk's
    seed (None: the venue's defaults for each)."""

    def __init__(self, directory: Path, interval_ms: int | None = None, seed: int | None = None,
                 instruments: list[str] | None = None, accounts: dict[str, str] | None = None,
                 history_secs: int | None = None):
        self.endpoint, self.quotes_endpoint = endpoints_in(directory)
        self.log_path = directory / "venue.log"
        options = []
        for flag, value in (("--interval-ms", interval_ms), ("--seed", seed), ("--history-secs", history_secs)):
            if value is not None:
                options += [flag, str(value)]
        if instruments:
            options += ["--instruments", *instruments]
        for account_id, oms in (accounts or {}).items():
            options += ["--account", f"{account_id}:{oms}"]
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "paper_venue", "serve",
                 "--endpoint", self.endpoint, "--quotes-endpoint", self.quotes_endpoint, *options],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        self.pid = self._process.pid

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_SECS
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"the paper venue exited with code {self._process.returncode}; see {self.log_path}")
            try:
                self.positions()
                return
            except TimeoutError:
                continue
        raise RuntimeError(f"the paper venue did not answer within {READY_TIMEOUT_SECS:g}s; see {self.log_path}")

    def positions(self, timeout_secs: float = 0.5) -> list[v.Holding]:
        """Every account's positions, as the venue's own books hold them: the judge of flat. NETTING
        accounts list a FLAT position for an instrument once traded."""
        return [msgspec.json.decode(bytes(i), type=v.Holding) for i in self._reports("positions", timeout_secs)]

    def open_orders(self, timeout_secs: float = 0.5) -> list[v.OrderHeld]:
        """Every account's orders not closed, contingent orders held for their parent included."""
        return [msgspec.json.decode(bytes(i), type=v.OrderHeld) for i in self._reports("orders", timeout_secs, open_only=True)]

    def _reports(self, kind: str, timeout_secs: float, **query) -> list[msgspec.Raw]:
        socket = zmq.Context.instance().socket(zmq.DEALER)
        socket.setsockopt(zmq.LINGER, 0)
        try:
            socket.connect(self.endpoint)
            socket.send(v.encode(v.QueryReports(request_id=1, kind=kind, **query)))
            if not socket.poll(int(timeout_secs * 1000)):
                raise TimeoutError("the paper venue did not answer")
            return v.from_venue_decoder.decode(socket.recv()).items or []
        finally:
            socket.close()

    def stop(self) -> int:
        """SIGTERM, and SIGKILL after 5 s; the exit code (0: it stopped cleanly; negative: a signal ended it)."""
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        return self._process.returncode
