"""Flat means flat for any node (docs/design.md, "nsup's closer" and "Venue and cache disagree"): what
no strategy owns, what an execution algorithm holds, two strategies netted at the venue, a venue that
cannot say, and a node that shares its account. Real nsup, real worker, the paper venue; each ends
STOPPED with the venue flat for this node's scope, or waits with a named reason.

Each test prints the figures of its stop (signal to STOPPED) for the issue's note."""

from __future__ import annotations

import os
import signal
import tempfile
import time
from pathlib import Path

import pytest

from paper_venue.launcher import VenueProcess
from supervisor.daemon import EXIT_OK
from tests.e2e.conftest import pid_alive
from tests.e2e.test_example_strategies import journal_time, reports
from tests.e2e.test_nsupctl import nsupctl, status

pytestmark = pytest.mark.e2e

ACCOUNTS = {"SIM-NET": "NETTING", "SIM-HEDGE": "HEDGING", "SIM-ORPHAN": "NETTING", "SIM-TWAP": "NETTING",
            "SIM-TEAM": "NETTING:shared"}
EXAMPLES = "tests.e2e.example_nodes:example_node"
ALWAYS_IN = {"hold_secs": 3600.0, "flat_secs": 0.0}


@pytest.fixture(scope="module")
def venue():
    directory = Path(tempfile.mkdtemp(prefix="pv-flat-"))
    venue = VenueProcess(directory, instruments=["EUR/USD", "GBP/USD", "AAPL"], accounts=ACCOUNTS)
    venue.wait_ready()
    yield venue
    venue.stop()


def held(venue, account: str, instrument: str | None = None) -> list:
    return [p for p in venue.positions() if p.account_id == account and p.side != "FLAT"
            and (instrument is None or p.instrument_id == instrument)]


def resting(venue, account: str) -> list:
    return [o for o in venue.open_orders() if o.account_id == account]


def demo_on(venue, account: str, oms: str, trader: str, **params) -> dict:
    return {"venue": "paper", "venue_endpoint": venue.endpoint, "quotes_endpoint": venue.quotes_endpoint,
            "account_id": account, "oms_type": oms, "trader_id": trader, **ALWAYS_IN, **params}


def stop_and_time(run, how=signal.SIGTERM) -> float:
    asked = time.time()
    run.signal(how)
    assert run.exit_code(timeout=90) == EXIT_OK
    assert run.transitions()[-1] == ("FLAT", "STOPPED")
    return journal_time(run.records("transition")[-1]) - asked


def test_two_strategies_long_and_short_on_one_netting_instrument_stop_flat(nsup_run, venue):
    """The venue nets them to nothing; the node keeps a position for each. Each strategy's reduce-only
    close is refused as flipping the venue's net; nsup sees nothing open, asks the venue, finds it
    flat, and takes the node's two positions for what they are: a disagreement, reconciled."""
    run = nsup_run(demo_on(venue, "SIM-NET", "NETTING", "NET-001", symbols=["EUR/USD"]),
                   factory="tests.e2e.factories:two_sided_node")
    run.wait_for_state("RUNNING")
    run.wait_for(lambda: (status(run)["positions_open"] or 0) == 2, what="a long and a short in the node")
    assert held(venue, "SIM-NET") == [], "the venue nets them"

    took = stop_and_time(run)
    assert run.records("venue_disagrees"), "both views are on record"
    assert held(venue, "SIM-NET") == [] and resting(venue, "SIM-NET") == []
    refused = (run.state_dir / "worker.log").read_text().count("OrderRejected")
    print(f"two strategies, one NETTING instrument: SIGTERM -> STOPPED {took:.2f}s, {refused} reduce-only closes refused")


def test_several_hedging_positions_left_by_a_killed_node_are_each_closed_by_nsup(nsup_run, venue):
    """A HEDGING account, a long and a short on one instrument, and no strategy claims what the next
    node finds there: market_exit() leaves those positions alone, nsup's closer closes each."""
    params = demo_on(venue, "SIM-HEDGE", "HEDGING", "HEDGE-001", symbols=["EUR/USD"])
    first = nsup_run(params, {"max_restarts": 0}, factory="tests.e2e.factories:two_sided_node")
    first.wait_for_state("RUNNING")
    first.wait_for(lambda: len(held(venue, "SIM-HEDGE")) == 2, what="a long and a short at the venue")
    os.kill(first.worker_pid, signal.SIGKILL)
    first.exit_code()

    second = nsup_run(params, factory="tests.e2e.factories:two_sided_node")
    second.wait_for_state("RUNNING")
    second.wait_for(lambda: len(held(venue, "SIM-HEDGE")) == 4, what="the new strategies' own positions too")
    took = stop_and_time(second)
    closes = [a for r in second.records("closer") for a in r["actions"] if a.startswith("close ")]
    assert len(closes) == 2 and all("EXTERNAL" in a for a in closes), closes
    assert held(venue, "SIM-HEDGE") == [] and resting(venue, "SIM-HEDGE") == []
    print(f"HEDGING, 4 positions on one instrument (2 nobody's): SIGTERM -> STOPPED {took:.2f}s, {len(closes)} closed by nsup")


def test_a_resting_order_nobody_claims_after_a_kill_is_cancelled_by_nsup(nsup_run, venue):
    """NautilusTrader's EMACrossBracket, unmodified, without external_order_claims: after a kill -9 its
    stop-loss and take-profit rest at the venue and belong to no strategy of the next node."""
    params = {"example": "ema_cross_bracket", "venue_endpoint": venue.endpoint, "account_id": "SIM-ORPHAN",
              "oms_type": "NETTING", "instrument": "GBP/USD.SIM", "bar_type": "GBP/USD.SIM-1-SECOND-MID-EXTERNAL",
              "trade_size": "100000", "trader_id": "ORPHAN-001", "bracket_distance_atr": 100.0, "claim_external": False}
    first = nsup_run(params, {"max_restarts": 0}, factory=EXAMPLES)
    first.wait_for_state("RUNNING")
    first.wait_for(lambda: len(resting(venue, "SIM-ORPHAN")) == 2 and held(venue, "SIM-ORPHAN"), timeout=60,
                   what="a filled entry with its stop-loss and take-profit resting")
    os.kill(first.worker_pid, signal.SIGKILL)
    first.exit_code()

    second = nsup_run(params, factory=EXAMPLES)
    second.wait_for_state("RUNNING")
    orders = second.wait_for(lambda: status(second)["orders"], what="the orders in status")
    assert {o["owner"] for o in orders} == {"EXTERNAL"}, orders
    took = stop_and_time(second)
    cancels = [a for r in second.records("closer") for a in r["actions"] if a.startswith("cancel ")]
    assert len(cancels) >= 2 and all("(EXTERNAL)" in a for a in cancels), cancels
    assert held(venue, "SIM-ORPHAN") == [] and resting(venue, "SIM-ORPHAN") == []
    print(f"resting bracket orders nobody claims: SIGTERM -> STOPPED {took:.2f}s, {len(cancels)} cancelled by nsup")


def test_a_twap_parent_mid_execution_at_the_stop_is_cancelled_and_no_new_one_starts(nsup_run, venue):
    """NautilusTrader's EMACrossTWAP with its TWAPExecAlgorithm, unmodified: a parent that spawns a
    slice every half second for a minute is mid-way when the stop comes."""
    params = {"example": "ema_cross_twap", "venue_endpoint": venue.endpoint, "account_id": "SIM-TWAP",
              "oms_type": "NETTING", "instrument": "AAPL.SIM", "bar_type": "AAPL.SIM-1-SECOND-LAST-EXTERNAL",
              "trade_size": "1200", "trader_id": "TWAP-001", "twap_horizon_secs": 60.0}  # 10 a slice
    run = nsup_run(params, factory=EXAMPLES)
    run.wait_for_state("RUNNING")
    run.wait_for(lambda: [o for o in status(run)["orders"] if "TWAP" in o["owner"]], timeout=60,
                 what="a TWAP parent in the node's orders")
    took = stop_and_time(run)
    cancels = [a for r in run.records("closer") for a in r["actions"] if a.startswith("cancel ") and "TWAP" in a]
    assert cancels, "the parent held by the algorithm was cancelled by nsup"
    assert held(venue, "SIM-TWAP") == [] and resting(venue, "SIM-TWAP") == []
    print(f"TWAP mid-parent: SIGTERM -> STOPPED {took:.2f}s")


def test_the_sandbox_cannot_say_so_a_stop_with_positions_waits_for_an_operator(nsup_run):
    """NautilusTrader's sandbox answers the venue check from the node's own cache: by default that is
    no answer, and the stop waits, saying so, however flat the cache looks."""
    run = nsup_run({**ALWAYS_IN}, {"venue_check": "required", "flatten_rounds": 1, "flatten_round_wait_secs": 2.0})
    run.wait_for_state("RUNNING")
    run.wait_for_positions(2)
    run.signal(signal.SIGTERM)
    unavailable = run.wait_for(lambda: run.records("venue_check_unavailable"), what="venue_check_unavailable")[0]
    assert "cannot say" in unavailable["venues"][0]
    run.wait_for_state("STUCK")
    shown = status(run)
    assert shown["positions_open"] == 0 and shown["state"] == "STUCK", "the cache is flat, and that is not enough"
    assert pid_alive(run.worker_pid) and run.records("worker_end") == []


def test_a_node_on_a_shared_account_leaves_the_other_nodes_positions_alone(nsup_run, venue):
    """Two nodes on one account, each with its own instrument ([node] scope): one stops flat, the
    other's position stays, neither counted nor touched."""
    ours = nsup_run(demo_on(venue, "SIM-TEAM", "NETTING", "OURS-001", symbols=["EUR/USD"]),
                    node={"scope": ["EUR/USD.SIM"]})
    theirs = nsup_run(demo_on(venue, "SIM-TEAM", "NETTING", "THEIRS-001", symbols=["GBP/USD"]),
                      node={"scope": ["GBP/USD.SIM"]})
    ours.wait_for_state("RUNNING")
    theirs.wait_for_state("RUNNING")
    ours.wait_for(lambda: held(venue, "SIM-TEAM", "EUR/USD.SIM") and held(venue, "SIM-TEAM", "GBP/USD.SIM"),
                  what="both nodes in the market")
    theirs_before = held(venue, "SIM-TEAM", "GBP/USD.SIM")

    took = stop_and_time(ours)
    assert held(venue, "SIM-TEAM", "EUR/USD.SIM") == []
    assert held(venue, "SIM-TEAM", "GBP/USD.SIM") == theirs_before, "the other node's position is untouched"
    assert status(theirs)["positions_open"] == 1 and theirs.process.poll() is None
    assert not [a for r in ours.records("closer") for a in r["actions"] if "GBP/USD" in a]
    print(f"shared account, this node's scope only: SIGTERM -> STOPPED {took:.2f}s")
    assert nsupctl(theirs, "stop").returncode == EXIT_OK
    assert theirs.exit_code() == EXIT_OK and held(venue, "SIM-TEAM") == []
