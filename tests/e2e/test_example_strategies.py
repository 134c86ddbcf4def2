"""Conformance: NautilusTrader's own example strategies, unmodified, under a real nsup on the paper venue.

Each one must trade (a fill at the venue) and then stop, on SIGTERM and on `nsupctl stop --wait`,
with exit 0, STOPPED, and its account at the venue flat: no position, no open or held order. Each
example trades its own account, and some their own instrument, on one venue. One-second bars with an
hour of venue history warm the indicators at once, so each trades at its first live bar.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import msgspec
import pytest
import zmq

from paper_venue import protocol as v
from paper_venue.launcher import VenueProcess
from supervisor.daemon import EXIT_ABORTED
from tests.e2e.conftest import REPO

pytestmark = pytest.mark.e2e

FACTORY = "tests.e2e.example_nodes:example_node"
EXAMPLES = {  # example -> its account, OMS type, instrument, bar type and trade size
    "ema_cross": ("SIM-EMA", "NETTING", "EUR/USD.SIM", "EUR/USD.SIM-1-SECOND-MID-EXTERNAL", "100000"),
    "ema_cross_bracket": ("SIM-BRACKET", "NETTING", "GBP/USD.SIM", "GBP/USD.SIM-1-SECOND-MID-EXTERNAL", "100000"),
    "volatility_market_maker": ("SIM-MM", "NETTING", "BTCUSDT-PERP.SIM", "BTCUSDT-PERP.SIM-1-SECOND-MID-EXTERNAL", "0.010"),
    "ema_cross_twap": ("SIM-TWAP", "NETTING", "AAPL.SIM", "AAPL.SIM-1-SECOND-LAST-EXTERNAL", "100"),
    "ema_cross_hedge_mode": ("SIM-HEDGE", "HEDGING", "EUR/USD.SIM", "EUR/USD.SIM-1-SECOND-BID-EXTERNAL", "100000"),
}


@pytest.fixture(scope="module")
def venue():
    directory = Path(tempfile.mkdtemp(prefix="pv-examples-"))
    accounts = {account: oms for account, oms, *_ in EXAMPLES.values()}
    venue = VenueProcess(directory, instruments=["EUR/USD", "GBP/USD", "BTCUSDT-PERP", "AAPL"], accounts=accounts)
    venue.wait_ready()
    yield venue
    venue.stop()


def reports(venue, kind: str, account: str, **query) -> list[dict]:
    socket = zmq.Context.instance().socket(zmq.DEALER)
    socket.setsockopt(zmq.LINGER, 0)
    try:
        socket.connect(venue.endpoint)
        socket.send(v.encode(v.QueryReports(request_id=1, kind=kind, account_id=account, **query)))
        assert socket.poll(2000), "the venue did not answer"
        return [msgspec.json.decode(bytes(item)) for item in v.from_venue_decoder.decode(socket.recv()).items]
    finally:
        socket.close()


def journal_time(record: dict) -> float:
    return datetime.fromisoformat(record["ts"]).timestamp()


@pytest.mark.parametrize("stop", ["SIGTERM", "nsupctl stop --wait"])
@pytest.mark.parametrize("example", list(EXAMPLES))
def test_an_example_strategy_trades_then_stops_flat(nsup_run, venue, example, stop):
    account, oms, instrument, bar_type, size = EXAMPLES[example]
    fills_before = len(reports(venue, "fills", account))
    run = nsup_run({"example": example, "venue_endpoint": venue.endpoint, "account_id": account, "oms_type": oms,
                    "instrument": instrument, "bar_type": bar_type, "trade_size": size,
                    "trader_id": f"{example.upper().replace('_', '')[:12]}-001"}, factory=FACTORY)
    running = journal_time(run.wait_for_state("RUNNING"))
    fills = run.wait_for(lambda: reports(venue, "fills", account)[fills_before:], timeout=30, what="a fill at the venue")
    first_fill = fills[0]["ts_event"] / 1e9

    asked = time.time()
    if stop == "SIGTERM":
        run.signal(signal.SIGTERM)
    else:
        result = subprocess.run([sys.executable, "-m", "supervisor.control.client.nsupctl", "--state-dir", str(run.state_dir),
                                 "stop", "--wait"], cwd=REPO, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
    assert run.exit_code() == 0
    assert run.transitions()[-1] == ("FLAT", "STOPPED")
    stopped = journal_time(run.records("transition")[-1])
    assert [p for p in venue.positions() if p.account_id == account and p.side != "FLAT"] == []
    assert [o for o in venue.open_orders() if o.account_id == account] == []
    print(f"{example}: first fill {first_fill - running:.2f}s after RUNNING; {stop} -> STOPPED {stopped - asked:.2f}s")


def test_a_bracket_held_at_the_venue_when_the_worker_is_killed_is_reconciled_and_flattened(nsup_run, venue):
    """The stop-loss and take-profit are far away, so the bracket is still at the venue when the next
    node starts: its entry pending with both children held, or its position open with both resting."""
    account, oms, instrument, bar_type, size = EXAMPLES["ema_cross_bracket"]
    params = {"example": "ema_cross_bracket", "venue_endpoint": venue.endpoint, "account_id": account,
              "oms_type": oms, "instrument": instrument, "bar_type": bar_type, "trade_size": size,
              "trader_id": "BRACKET-002", "bracket_distance_atr": 100.0}
    first = nsup_run(params, {"max_restarts": 0}, factory=FACTORY)
    first.wait_for_state("RUNNING")
    held = first.wait_for(lambda: len([o for o in venue.open_orders() if o.account_id == account]) == 3 and
                          [o for o in venue.open_orders() if o.account_id == account], what="a bracket at the venue")
    os.kill(first.worker_pid, signal.SIGKILL)
    assert first.exit_code() == EXIT_ABORTED
    assert len([o for o in venue.open_orders() if o.account_id == account]) >= 2  # the entry may have filled since

    second = nsup_run(params, factory=FACTORY)
    second.wait_for_state("RUNNING")
    second.signal(signal.SIGTERM)
    assert second.exit_code() == 0 and second.transitions()[-1] == ("FLAT", "STOPPED")
    assert [p for p in venue.positions() if p.account_id == account and p.side != "FLAT"] == []
    assert [o for o in venue.open_orders() if o.account_id == account] == [], f"was {held}"


def test_what_the_venue_does_not_serve_is_a_fault_on_record_and_in_the_health(nsup_run, venue):
    run = nsup_run({"example": "subscribe", "venue_endpoint": venue.endpoint, "account_id": "SIM-EMA",
                    "instrument": "EUR/USD.SIM", "bar_type": "EUR/USD.SIM-1-SECOND-MID-EXTERNAL", "trade_size": "1",
                    "trader_id": "SUBSCRIBE-001"}, factory=FACTORY)
    run.wait_for_state("RUNNING")
    faults = run.wait_for(lambda: len(f := [r["text"] for r in run.records("worker_notice")
                                             if r["text"].startswith("fault:")]) >= 2 and f, what="two faults")
    assert any("order_book_deltas" in f for f in faults) and any("index_prices" in f for f in faults), faults
    assert run.wait_for(lambda: [r for r in run.records("health") if r["health"] == "degraded"], what="degraded")
    run.signal(signal.SIGTERM)
    assert run.exit_code() == 0 and run.transitions()[-1] == ("FLAT", "STOPPED")
