"""What nsup takes for flat, on a real node trading on the paper venue: two reads some interval apart,
the second a fresh one, and then the venue itself asked. Someone trading on the account by hand
(the venue's HandTrade drill) changes the counts between the two reads, or leaves the venue holding
what the node never heard of; neither may be taken for flat."""

from __future__ import annotations

import signal
import time

import pytest
import zmq

from paper_venue import protocol as v
from tests.e2e.conftest import pid_alive
from tests.e2e.test_example_strategies import journal_time
from tests.e2e.test_paper_venue import ALWAYS_IN, on_venue, venue, venue_book  # noqa: F401 (venue: a fixture)

pytestmark = pytest.mark.e2e


def hand_trade(venue, side: str, instrument_id: str, quantity: str, seen: bool) -> float:
    """A trade by hand on the node's account; returns when it was done (wall clock, as the worker's)."""
    socket = zmq.Context.instance().socket(zmq.DEALER)
    socket.setsockopt(zmq.LINGER, 0)
    socket.connect(venue.endpoint)
    try:
        socket.send(v.encode(v.HandTrade(request_id=1, instrument_id=instrument_id, side=side, quantity=quantity, seen=seen)))
        assert socket.poll(2000), "the venue did not answer the hand trade"
        reply = v.from_venue_decoder.decode(socket.recv())
        assert reply.ok, reply.error
        return time.time()
    finally:
        socket.close()


def halted_commands(run) -> list[dict]:
    return [r for r in run.records("worker_command") if r["command"] == {"type": "set_trading_state", "trading_state": "HALTED"}]


def test_a_trade_seen_between_the_two_flat_reads_is_not_taken_for_flat(nsup_run, venue):
    run = nsup_run(on_venue(venue, **ALWAYS_IN), {"flat_confirm_secs": 1.5, "flatten_rounds": 3, "flatten_round_wait_secs": 3.0})
    run.wait_for_state("RUNNING")
    run.wait_for_positions(2)
    run.signal(signal.SIGTERM)
    run.wait_for(lambda: run.records("flat_seen"), what="the first flat read")
    traded_at = hand_trade(venue, "BUY", "EUR/USD.SIM", "100000", seen=True)  # the node hears of it

    assert run.exit_code() == 0
    flat = next(r for r in run.records("transition") if r["dest"] == "FLAT")
    first_read = flat["evidence"]["reads"][0]
    assert first_read["ts"] > traded_at, "the flat reads nsup went by were both taken after the hand trade"
    assert len(run.records("flat_seen")) >= 2, "the first flat read was not confirmed: nsup read again"
    assert len(halted_commands(run)) == 1, "HALTED only once two fresh flat reads agreed"
    assert not [r for r in run.records("refusal") if r.get("trigger") == "flat"]
    assert venue_book(venue) == {}, "the hand trade was flattened with the rest"


def test_what_the_venue_holds_unseen_is_found_and_closed_before_the_stop(nsup_run, venue):
    """The node's cache is flat, the venue is not: exposure, never flat. Either the node finds it on its
    own (the closer reconciles before it acts; the demo strategy claims the account's orders, so the
    hand order becomes its position and its exit closes it), or nsup's venue check finds it, says so
    with both views, and the closer closes what only the venue held. Which comes first is a race; both
    must end with the venue flat before the worker is stopped."""
    run = nsup_run(on_venue(venue, **ALWAYS_IN), {"flatten_rounds": 1, "flatten_round_wait_secs": 1.0})
    run.wait_for_state("RUNNING")
    status = run.wait_for_positions(2)
    held = next(p for p in status["positions"] if p["instrument_id"] == "EUR/USD.SIM")
    grow = "BUY" if held["side"] == "LONG" else "SELL"
    hand_trade(venue, grow, "EUR/USD.SIM", held["quantity"], seen=False)  # the node never hears of it
    run.signal(signal.SIGTERM)

    assert run.exit_code() == 0
    assert venue_book(venue) == {}
    ended = run.records("worker_end")[0]
    # Flat, or (the node's cache left holding the hand position its reconciliation made, which the
    # venue does not) nothing open and the venue holding nothing: the gate's two grounds, and no other.
    assert ended["reason"].startswith(("the worker's fresh status is flat", "nothing is open and the venues hold nothing")), ended
    disagreements = run.records("venue_disagrees")
    if disagreements:  # nsup's venue check found it first
        disagrees = disagreements[0]
        assert disagrees["venue"]["positions_open"] == 1 and disagrees["node"]["positions_open"] == 0
        closes = [a for r in run.records("closer") for a in r["actions"] if a.startswith("close ") and "EUR/USD.SIM" in a]
        assert closes, "the closer closed what only the venue held"
        assert journal_time(ended) > journal_time(disagrees)
    else:  # the node's reconciliation found it first: the hand order claimed, and closed
        log = (run.state_dir / "worker.log").read_text()
        assert "External order HAND-" in log, "neither nsup's venue check nor the node's reconciliation found it"
