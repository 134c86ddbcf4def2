"""What the last session ended with, read from the journal, and the start-up reconciliation report."""

from __future__ import annotations

import msgspec

from supervisor.holdings import SESSION_END, Holdings, differences, ended_with
from supervisor.protocol import OrderView, PositionView
from tests.unit._statuses import status


def position(side: str, quantity: str, instrument: str = "EUR/USD.SIM") -> PositionView:
    return PositionView(instrument_id=instrument, side=side, quantity=quantity, unrealized_pnl="0 USD")


def order(order_id: str) -> OrderView:
    return OrderView(client_order_id=order_id, instrument_id="GBP/USD.SIM", side="BUY", quantity="1000",
                     order_type="LIMIT", status="ACCEPTED", owner="EXTERNAL")


def end(positions, orders=()) -> dict:
    return {"kind": SESSION_END, "positions": positions, "orders": list(orders)}


def test_the_last_session_end_on_record_is_what_it_left():
    left = Holdings(positions=[position("LONG", "100000")]).as_record()
    records = [end([]), {"kind": "transition"}, end(left["positions"], left["orders"]), {"kind": "supervisor_exit"}]
    assert ended_with(records) == Holdings(positions=[position("LONG", "100000")])


def test_no_session_yet_is_nothing_held_and_an_end_never_recorded_is_unknown():
    assert ended_with([]) == Holdings()
    assert ended_with([end([]), {"kind": "worker_spawned"}]) is None, "nsup died before the session's end was on record"
    assert ended_with([{"kind": SESSION_END, "positions": None, "orders": None}]) is None, "a node ran, never heard"


def test_the_report_names_what_nobody_left_and_what_is_gone():
    ended = Holdings(positions=[position("LONG", "100000")], orders=[order("O-1")])
    found = Holdings(positions=[position("LONG", "100000"), position("SHORT", "50000", "GBP/USD.SIM")],
                     orders=[order("O-2")])
    assert differences(ended, found) == [
        "GBP/USD.SIM: the last session ended with nothing, the venue has SHORT 50000",
        "order O-2 GBP/USD.SIM BUY 1000 LIMIT (EXTERNAL) is open, and the last session did not leave it",
        "order O-1, open when the last session ended, is no longer open",
    ]
    assert differences(ended, ended) == []


def test_positions_are_compared_by_the_net_per_instrument():
    """Reconciliation may restore one net position where the node had two strategies' (new ids too)."""
    two = Holdings(positions=[position("LONG", "100000"), position("LONG", "50000")])
    assert differences(two, Holdings(positions=[position("LONG", "150000")])) == []
    netted = Holdings(positions=[position("LONG", "100000"), position("SHORT", "100000")])
    assert netted.is_flat() and differences(netted, Holdings()) == []


def test_an_unknown_end_names_everything_found():
    assert differences(None, Holdings(positions=[position("SHORT", "1")])) == [
        "EUR/USD.SIM: the venue has SHORT 1, and the last session's end is not on record"]


def test_a_status_is_held_as_its_positions_and_its_orders():
    read = msgspec.structs.replace(
        status(positions=1, open_=1), orders=[order("O-7")],
        positions=[position("LONG", "100000"), position("SHORT", "0.5", "BTCUSDT-PERP.BINANCE")])
    held = Holdings.of(read)
    assert held.positions == read.positions and held.orders == [order("O-7")]
    assert not held.is_flat()


def test_fractions_and_flips_are_named_with_their_side():
    ended = Holdings(positions=[position("LONG", "0.5", "BTCUSDT-PERP.BINANCE")])
    found = Holdings(positions=[position("SHORT", "0.25", "BTCUSDT-PERP.BINANCE"), position("LONG", "1", "ETH.SIM")])
    assert differences(ended, found) == [
        "BTCUSDT-PERP.BINANCE: the last session ended with LONG 0.5, the venue has SHORT 0.25",
        "ETH.SIM: the last session ended with nothing, the venue has LONG 1",
    ]
    assert differences(None, Holdings(positions=[position("LONG", "0.5")])) == [
        "EUR/USD.SIM: the venue has LONG 0.5, and the last session's end is not on record"]
    assert differences(ended, ended) == []
