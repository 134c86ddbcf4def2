"""The paper venue outlives the worker: a killed node's positions are still there, a new node
reconciles them and flattens them, and the venue's own books judge flat."""

from __future__ import annotations

import os
import signal
import tempfile
import time
from pathlib import Path

import pytest
import zmq

from paper_venue import protocol as v
from supervisor.daemon import EXIT_ABORTED
from paper_venue.launcher import VenueProcess

pytestmark = pytest.mark.e2e

ALWAYS_IN = {"hold_secs": 3600.0, "flat_secs": 0.0}


@pytest.fixture
def venue():
    directory = Path(tempfile.mkdtemp(prefix="pv-"))
    venue = VenueProcess(directory)
    venue.wait_ready()
    yield venue
    venue.stop()


def on_venue(venue, **params) -> dict:
    return {"venue": "paper", "venue_endpoint": venue.endpoint, "quotes_endpoint": venue.quotes_endpoint, **params}


def venue_book(venue) -> dict[str, tuple[str, str]]:
    return {p.instrument_id: (p.side, p.quantity) for p in venue.positions() if p.side != "FLAT"}


def drill(venue, **faults) -> None:
    socket = zmq.Context.instance().socket(zmq.DEALER)
    socket.setsockopt(zmq.LINGER, 0)
    socket.connect(venue.endpoint)
    socket.send(v.encode(v.SetFaults(request_id=1, **faults)))
    assert socket.poll(2000) and v.from_venue_decoder.decode(socket.recv()).ok
    socket.close()


def trading_on(nsup_run, venue, supervisor: dict | None = None, **params):
    """nsup on the paper venue, RUNNING, with both positions open at the venue."""
    run = nsup_run(on_venue(venue, **ALWAYS_IN, **params), supervisor or {})
    run.wait_for_state("RUNNING")
    run.wait_for_positions(2)
    return run


def node_book(status: dict) -> dict[str, tuple[str, str]]:
    return {p["instrument_id"]: (p["side"], p["quantity"]) for p in status["positions"]}


def test_graceful_stop_leaves_the_venue_flat(nsup_run, venue):
    run = trading_on(nsup_run, venue)
    assert len(venue_book(venue)) == 2

    run.signal(signal.SIGTERM)
    assert run.exit_code() == 0
    assert venue_book(venue) == {}, "the venue's books are the judge of flat"


def test_killed_worker_positions_survive_and_a_new_node_reconciles_and_flattens_them(nsup_run, venue):
    first = trading_on(nsup_run, venue, {"max_restarts": 0})
    held = venue_book(venue)
    assert len(held) == 2
    os.kill(first.worker_pid, signal.SIGKILL)
    assert first.exit_code() == EXIT_ABORTED
    assert venue_book(venue) == held, "the venue outlives the worker"

    second = nsup_run(on_venue(venue, **ALWAYS_IN))
    second.wait_for_state("RUNNING")
    seen = second.wait_for_positions(2)
    assert seen["positions_open"] == 2
    status = second.wait_for(lambda: (s := second.last_status()) and s["positions"] and s, what="positions in status")
    assert node_book(status) == held, "reconciliation shows the same instrument, side and quantity"

    second.signal(signal.SIGTERM)
    assert second.exit_code() == 0
    assert second.transitions()[-1] == ("FLAT", "STOPPED")
    assert venue_book(venue) == {}


def test_an_order_in_flight_at_the_kill_is_resolved_by_reconciliation(nsup_run, venue):
    drill(venue, ack_delay_ms=1500)
    first = nsup_run(on_venue(venue, **ALWAYS_IN), {"max_restarts": 0})
    first.wait_for_state("RUNNING")
    first.wait_for(lambda: (s := first.last_status()) and s["orders_inflight"] >= 1, what="an order in flight")
    os.kill(first.worker_pid, signal.SIGKILL)
    assert first.exit_code() == EXIT_ABORTED
    drill(venue, ack_delay_ms=0)
    deadline = time.monotonic() + 10  # the venue carries out the delayed orders on its own
    while not venue_book(venue) and time.monotonic() < deadline:
        time.sleep(0.1)
    held = venue_book(venue)
    assert held, "the orders in flight at the kill were filled at the venue"

    second = nsup_run(on_venue(venue, **ALWAYS_IN))
    second.wait_for_state("RUNNING")
    status = second.wait_for(lambda: (s := second.last_status()) and s["positions"] and s, what="reconciled positions")
    assert node_book(status) == held
    assert status["orders_inflight"] == 0
    second.signal(signal.SIGTERM)
    assert second.exit_code() == 0
    assert venue_book(venue) == {}


def test_rehearsal_venue_rejects_closes_then_operator_flattens(nsup_run, venue):
    import subprocess
    import sys

    run = trading_on(nsup_run, venue, {"flatten_rounds": 1, "flatten_round_wait_secs": 1.0}, exit_max_attempts=5)
    drill(venue, reject_orders=True)
    run.signal(signal.SIGTERM)
    run.wait_for(lambda: run.records("halt_stuck"), what="halt_stuck")
    assert len(venue_book(venue)) == 2 and run.records("worker_end") == []
    # The rejections reached the strategy, and nsup's record: a fault notice, and the health.
    assert any("order rejected: venue drill: rejecting orders" in r["text"] for r in run.records("worker_notice"))
    assert "degraded" in [r["health"] for r in run.records("health")]

    drill(venue, reject_orders=False)  # the venue recovers; an operator flattens by hand
    subprocess.run([sys.executable, "-m", "supervisor.control.client.nsupctl", "--state-dir", str(run.state_dir), "flatten"],
                   check=True, capture_output=True, timeout=30)
    assert run.exit_code() == 0
    assert venue_book(venue) == {}


def test_a_dropped_venue_connection_heals_and_the_stop_still_ends_flat(nsup_run, venue):
    run = trading_on(nsup_run, venue)
    drill(venue, drop_connection=True)
    time.sleep(2.0)  # the adapter greets the new socket within a second
    run.signal(signal.SIGTERM)
    assert run.exit_code() == 0
    assert venue_book(venue) == {}


def test_a_venue_silent_during_the_stop_is_waited_out(nsup_run, venue):
    run = trading_on(nsup_run, venue)
    drill(venue, silent=True)
    run.signal(signal.SIGTERM)
    run.wait_for_state("HALTING")
    time.sleep(1.5)
    assert run.process.poll() is None and run.records("worker_end") == []
    drill(venue, silent=False)
    assert run.exit_code() == 0
    assert venue_book(venue) == {}
