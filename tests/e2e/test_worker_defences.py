"""The worker's own last line of defence, end to end: a real worker process (real TradingNode, the
paper venue in its own process) driven over real ZeroMQ by a bare ROUTER that speaks
supervisor.protocol, standing in for an nsup whose gate has failed. The worker must refuse a
StopNode that requires flat while it holds positions, and stop only on an approved one; and refuse
every command of an nsup whose lease token is older than one it has seen (supervisor/lease.py)."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import zmq

from supervisor import protocol as p
from tests.e2e.conftest import REPO, pid_alive
from tests.e2e.test_paper_venue import ALWAYS_IN, on_venue, venue  # noqa: F401 (venue: a fixture)

pytestmark = pytest.mark.e2e


class BareSupervisor:
    """A ROUTER on a worker's link and the worker process behind it: nothing of nsup but the wire."""

    def __init__(self, venue):
        self.dir = Path(tempfile.mkdtemp(prefix="wd-"))  # ipc paths must stay short
        self.router = zmq.Context.instance().socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 0)
        endpoint = f"ipc://{self.dir / 'worker.sock'}"
        self.router.bind(endpoint)
        spec = self.dir / "spec.json"
        spec.write_text(json.dumps({"params": on_venue(venue, **ALWAYS_IN), "cache_database": None}))
        self.log = open(self.dir / "worker.log", "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "node_worker", "--link", endpoint, "--factory", "node_worker.demo.node:demo_node",
             "--spec-file", str(spec), "--lock", str(self.dir / "worker.lock"), "--heartbeat-secs", "0.2"],
            cwd=REPO, stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self.ids = itertools.count(1)
        self.identity, hello = self.receive(p.Hello, timeout=60)
        self.last_status = hello.status

    def receive(self, kind, timeout: float = 10.0, request_id: int | None = None):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.router.poll(100):
                continue
            identity, frame = self.router.recv_multipart()
            message = p.decode_from_worker(frame)
            if getattr(message, "status", None) is not None:
                self.last_status = message.status
            if isinstance(message, kind) and (request_id is None or message.request_id == request_id):
                return identity, message
        raise AssertionError(f"no {kind.__name__} from the worker within {timeout}s (log: {self.dir / 'worker.log'})")

    def request(self, command: p.Command, timeout: float = 10.0, fence: int = 0, lease_until: float = 0.0) -> p.Reply:
        request_id = next(self.ids)
        self.router.send_multipart([self.identity, p.encode(p.Request(request_id, command, fence, lease_until))])
        return self.receive(p.Reply, timeout, request_id)[1]

    def wait_for_positions(self, timeout: float = 20.0) -> p.NodeStatus:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.receive(p.Heartbeat)
            if self.last_status.counts.positions_open:
                return self.last_status
        raise AssertionError("the node opened no position")

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.router.close(linger=0)
        self.log.close()


@pytest.fixture
def bare(venue):
    supervisor = BareSupervisor(venue)
    yield supervisor
    supervisor.close()


def test_the_worker_refuses_a_stop_requiring_flat_while_it_holds_positions(bare):
    assert bare.request(p.RunNode(30.0), timeout=40).ok
    held = bare.wait_for_positions()

    refused = bare.request(p.StopNode(require_flat=True))
    assert not refused.ok and refused.error == "refused to stop: not flat, and no operator approval"
    assert refused.status.counts.positions_open == held.counts.positions_open
    assert refused.status.trading_state == "ACTIVE", "HALTED only for the check: the trading state is put back"
    time.sleep(1.0)
    assert bare.process.poll() is None and pid_alive(bare.process.pid), "a refused stop leaves the node running"
    assert bare.request(p.GetStatus()).status.node_state == "RUNNING"

    approved = bare.request(p.StopNode(require_flat=False))  # an operator's approval stands behind this one
    assert approved.ok
    assert bare.process.wait(timeout=30) == 0


def test_the_worker_refuses_every_command_of_an_nsup_with_an_older_lease_token(bare):
    """The stale nsup is the one whose lease lapsed (a partition, a pause) and came back with its old
    token after a newer holder reached this worker: whatever it asks is refused, with why, and the node
    trades on as the newer holder left it. And with no word of a renewal by the lease's deadline (on
    CLOCK_MONOTONIC, which the worker shares with nsup), the worker goes closing-only by itself."""
    assert bare.request(p.RunNode(30.0), timeout=40, fence=1, lease_until=time.monotonic() + 60).ok
    bare.wait_for_positions()
    assert bare.request(p.SetTradingState("REDUCING"), fence=2, lease_until=time.monotonic() + 60).ok  # the newer holder
    for stale in (p.SetTradingState("ACTIVE"), p.StopNode(require_flat=False), p.MarketExit(), p.GetStatus()):
        refused = bare.request(stale, fence=1, lease_until=time.monotonic() + 60)
        assert not refused.ok and refused.code == p.ErrorCode.FENCED, stale
        assert refused.error.startswith("fenced: the command carries lease token 1, older than 2"), refused.error
        assert refused.status.trading_state == "REDUCING" and refused.status.counts.positions_open > 0
    late = bare.request(p.SetTradingState("ACTIVE"), fence=2, lease_until=time.monotonic() - 0.1)  # delayed past its lease
    assert late.code == p.ErrorCode.FENCED and "expired" in late.error and late.status.trading_state == "REDUCING"

    bare.router.send_multipart([bare.identity, p.encode(p.Ping(3, time.monotonic() + 0.8))])  # a ping carries them too
    time.sleep(0.2)
    assert bare.request(p.GetStatus(), fence=2).code == p.ErrorCode.FENCED
    assert bare.request(p.SetTradingState("ACTIVE"), fence=3).status.trading_state == "ACTIVE"
    time.sleep(1.0)  # past the deadline, no renewal heard
    assert bare.request(p.GetStatus(), fence=3).status.trading_state == "REDUCING"
    assert bare.process.poll() is None, "a lapsed lease stops nothing"
    assert bare.request(p.StopNode(require_flat=False), fence=0).code == p.ErrorCode.FENCED, "no token is the oldest"
    log = (bare.dir / "worker.log").read_text()
    assert "lease token 3 now (was 2)" in log and "expired with no word of a renewal" in log
