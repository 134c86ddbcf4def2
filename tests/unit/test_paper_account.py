"""One paper venue account, in process: every order type, time in force and contingency the examples
use, partial fills, NETTING and HEDGING positions, the reports reconciliation asks for, ownership
(shared accounts too), the venue's own rules (unknown instrument, duplicate id, ack delay), and trading by hand."""

from __future__ import annotations

import re
from decimal import Decimal

import pandas as pd
import pytest
from nautilus_trader.common.component import TestClock
from nautilus_trader.common.factories import OrderFactory
from nautilus_trader.core.uuid import UUID4
from nautilus_trader.execution.messages import CancelOrder, ModifyOrder, SubmitOrder, SubmitOrderList
from nautilus_trader.model.data import QuoteTick
from nautilus_trader.model.enums import (
    ContingencyType, OmsType, OrderSide, OrderStatus, OrderType, PositionSide, TimeInForce, TrailingOffsetType,
    TriggerType,
)
from nautilus_trader.model.events import (
    OrderAccepted, OrderCanceled, OrderCancelRejected, OrderExpired, OrderFilled, OrderRejected, OrderTriggered,
    OrderUpdated,
)
from nautilus_trader.model.identifiers import InstrumentId, PositionId, StrategyId, TraderId
from nautilus_trader.model.objects import Price, Quantity

from paper_venue.account import LEASE_SECS, HandTradeRefused, VenueAccount
from paper_venue.instruments import instruments, starting_balances

EUR = InstrumentId.from_str("EUR/USD.SIM")
T0 = 1_800_000_000_000_000_000  # ns
SEC = 1_000_000_000
TRADER, STRATEGY = TraderId("TESTER-001"), StrategyId("S-001")


@pytest.fixture
def orders() -> OrderFactory:
    return OrderFactory(TRADER, STRATEGY, TestClock())


def make_account(oms: str = "NETTING", shared: bool = False) -> VenueAccount:
    listed = instruments(["EUR/USD", "AAPL"])
    return VenueAccount("SIM-001", OmsType[oms], listed, starting_balances(listed), shared)


@pytest.fixture
def account() -> VenueAccount:
    account = make_account()
    quote(account, "1.10000", "1.10002")
    return account


def quote(account: VenueAccount, bid: str, ask: str, size: int = 1_000_000, ts: int = T0) -> list:
    q = QuoteTick(EUR, Price.from_str(bid), Price.from_str(ask), Quantity.from_int(size), Quantity.from_int(size), ts, ts)
    return account.on_quote(q, ts)


def submit(account: VenueAccount, order, ts: int = T0, position_id: str | None = None) -> list:
    pid = PositionId(position_id) if position_id else None
    if hasattr(order, "orders"):  # an OrderList
        return account.execute(SubmitOrderList(TRADER, STRATEGY, order, UUID4(), ts, pid), ts)
    return account.execute(SubmitOrder(TRADER, STRATEGY, order, UUID4(), ts, pid), ts)


def cancel(account: VenueAccount, order, ts: int = T0) -> list:
    return account.execute(CancelOrder(TRADER, STRATEGY, EUR, order.client_order_id, None, UUID4(), ts), ts)


def modify(account: VenueAccount, order, ts: int = T0, quantity=None, price=None, trigger_price=None) -> list:
    return account.execute(ModifyOrder(TRADER, STRATEGY, EUR, order.client_order_id, None, quantity, price,
                                       trigger_price, UUID4(), ts), ts)


def kinds(events: list) -> list[str]:
    return [type(e).__name__ for e in events]


def qty(n: int) -> Quantity:
    return Quantity.from_int(n)


def px(text: str) -> Price:
    return Price.from_str(text)


def net(account: VenueAccount) -> Decimal:
    return sum((Decimal(str(r.signed_decimal_qty)) for r in account.position_reports(T0)), Decimal(0))


# Order types ---------------------------------------------------------------------------------------

def test_market_orders_fill_at_the_touch(account, orders):
    buy = submit(account, orders.market(EUR, OrderSide.BUY, qty(100_000)))
    assert kinds(buy) == ["OrderFilled"] and buy[0].last_px == px("1.10002")
    assert buy[0].commission.as_decimal() == Decimal("2.20")  # 0.00002 of the notional, in USD
    sell = submit(account, orders.market(EUR, OrderSide.SELL, qty(40_000)))
    assert sell[0].last_px == px("1.10000") and net(account) == 60_000


def test_a_market_order_without_a_quote_is_rejected(orders):
    account = make_account()
    (rejected,) = submit(account, orders.market(EUR, OrderSide.BUY, qty(1000)))
    assert isinstance(rejected, OrderRejected) and "no market" in rejected.reason.lower()


def test_a_limit_rests_until_the_market_crosses_it_and_fills_at_its_price(account, orders):
    limit = orders.limit(EUR, OrderSide.BUY, qty(1000), px("1.09990"))
    assert kinds(submit(account, limit)) == ["OrderAccepted"]
    assert quote(account, "1.09995", "1.09997") == []
    (fill,) = quote(account, "1.09985", "1.09989")
    assert isinstance(fill, OrderFilled) and fill.last_px == px("1.09990")


def test_a_limit_that_crosses_on_submit_fills_at_once(account, orders):
    events = submit(account, orders.limit(EUR, OrderSide.BUY, qty(1000), px("1.10010")))
    assert kinds(events) == ["OrderAccepted", "OrderFilled"] and events[1].last_px == px("1.10002")


def test_post_only_is_rejected_when_it_would_take(account, orders):
    (rejected,) = submit(account, orders.limit(EUR, OrderSide.BUY, qty(1000), px("1.10002"), post_only=True))
    assert isinstance(rejected, OrderRejected) and rejected.due_post_only
    assert kinds(submit(account, orders.limit(EUR, OrderSide.BUY, qty(1000), px("1.10000"), post_only=True))) == ["OrderAccepted"]


def test_a_stop_market_triggers_when_the_market_reaches_it(account, orders):
    stop = orders.stop_market(EUR, OrderSide.BUY, qty(1000), px("1.10010"))
    assert kinds(submit(account, stop)) == ["OrderAccepted"]
    (fill,) = quote(account, "1.10010", "1.10012")  # a stop-market fills as it triggers
    assert isinstance(fill, OrderFilled) and fill.last_px == px("1.10012")


def test_a_stop_limit_triggers_then_rests_as_a_limit(account, orders):
    stop = orders.stop_limit(EUR, OrderSide.SELL, qty(1000), price=px("1.09980"), trigger_price=px("1.09990"))
    assert kinds(submit(account, stop)) == ["OrderAccepted"]
    assert kinds(quote(account, "1.09970", "1.09975")) == ["OrderTriggered"]  # triggered below its limit
    assert kinds(quote(account, "1.09985", "1.09987")) == ["OrderFilled"]


def test_market_and_limit_if_touched(account, orders):
    mit = orders.market_if_touched(EUR, OrderSide.BUY, qty(1000), px("1.09990"))
    lit = orders.limit_if_touched(EUR, OrderSide.SELL, qty(1000), price=px("1.10010"), trigger_price=px("1.10010"))
    assert kinds(submit(account, mit) + submit(account, lit)) == ["OrderAccepted", "OrderAccepted"]
    assert kinds(quote(account, "1.09988", "1.09990")) == ["OrderFilled"]  # a market-if-touched fills as it triggers
    events = quote(account, "1.10010", "1.10012")
    assert kinds(events) == ["OrderTriggered", "OrderFilled"] and events[1].client_order_id == lit.client_order_id


def test_a_trailing_stop_market_follows_the_market_and_triggers(account, orders):
    submit(account, orders.market(EUR, OrderSide.BUY, qty(1000)))
    trailing = orders.trailing_stop_market(EUR, OrderSide.SELL, qty(1000), trailing_offset=Decimal("0.00010"),
                                           trailing_offset_type=TrailingOffsetType.PRICE, trigger_type=TriggerType.BID_ASK)
    assert kinds(submit(account, trailing)) == ["OrderAccepted", "OrderUpdated"]
    (moved,) = quote(account, "1.10050", "1.10052")
    assert isinstance(moved, OrderUpdated) and moved.trigger_price == px("1.10040")
    (fill,) = quote(account, "1.10040", "1.10042")
    assert isinstance(fill, OrderFilled) and net(account) == 0


def test_a_trailing_stop_limit_triggers_into_a_limit(account, orders):
    trailing = orders.trailing_stop_limit(
        EUR, OrderSide.BUY, qty(1000), limit_offset=Decimal("0.00005"), trailing_offset=Decimal("0.00010"),
        trailing_offset_type=TrailingOffsetType.PRICE, trigger_type=TriggerType.BID_ASK,
    )
    assert kinds(submit(account, trailing))[0] == "OrderAccepted"
    quote(account, "1.09950", "1.09952")  # the stop trails the falling ask down
    assert kinds(quote(account, "1.09962", "1.09964")) == ["OrderTriggered"]  # now a limit, trailing too
    (report,) = account.order_reports(T0, open_only=True)
    assert report.order_status == OrderStatus.TRIGGERED and report.price is not None
    assert kinds(quote(account, "1.09940", "1.09942")) == ["OrderFilled"]


# Time in force --------------------------------------------------------------------------------------

def test_gtd_expires_at_its_time(account, orders):
    gtd = orders.limit(EUR, OrderSide.BUY, qty(1000), px("1.09900"), time_in_force=TimeInForce.GTD,
                       expire_time=pd.Timestamp(T0 + 5 * SEC, tz="UTC"))
    assert kinds(submit(account, gtd)) == ["OrderAccepted"]
    assert quote(account, "1.10000", "1.10002", ts=T0 + 4 * SEC) == []
    (expired,) = quote(account, "1.10000", "1.10002", ts=T0 + 5 * SEC)
    assert isinstance(expired, OrderExpired)


def test_ioc_fills_what_it_can_and_cancels_the_rest(account, orders):
    quote(account, "1.10000", "1.10002", size=3000)
    ioc = orders.limit(EUR, OrderSide.BUY, qty(5000), px("1.10002"), time_in_force=TimeInForce.IOC)
    events = submit(account, ioc)
    assert kinds(events) == ["OrderAccepted", "OrderFilled", "OrderCanceled"]
    assert events[1].last_qty == qty(3000)  # the book is thinner than the order: a partial fill


def test_fok_that_cannot_fill_in_full_is_canceled_unfilled(account, orders):
    quote(account, "1.10000", "1.10002", size=3000)
    fok = orders.limit(EUR, OrderSide.BUY, qty(5000), px("1.10002"), time_in_force=TimeInForce.FOK)
    assert kinds(submit(account, fok)) == ["OrderAccepted", "OrderCanceled"] and net(account) == 0


def test_a_resting_limit_larger_than_the_quoted_size_fills_in_parts(account, orders):
    limit = orders.limit(EUR, OrderSide.SELL, qty(5000), px("1.10010"))
    submit(account, limit)
    first = quote(account, "1.10010", "1.10012", size=3000)
    second = quote(account, "1.10011", "1.10013", size=3000)
    assert [e.last_qty for e in first + second] == [qty(3000), qty(2000)]
    assert account.order_reports(T0, client_order_id=limit.client_order_id.value)[0].order_status == OrderStatus.FILLED


def test_day_orders_rest(account, orders):
    day = orders.limit(EUR, OrderSide.BUY, qty(1000), px("1.09900"), time_in_force=TimeInForce.DAY)
    assert kinds(submit(account, day)) == ["OrderAccepted"]


# Reduce-only, modify, cancel ------------------------------------------------------------------------

def test_reduce_only_is_honoured(account, orders):
    (rejected,) = submit(account, orders.market(EUR, OrderSide.SELL, qty(1000), reduce_only=True))
    assert isinstance(rejected, OrderRejected) and "REDUCE_ONLY" in rejected.reason
    submit(account, orders.market(EUR, OrderSide.BUY, qty(1000)))
    assert kinds(submit(account, orders.market(EUR, OrderSide.SELL, qty(1000), reduce_only=True))) == ["OrderFilled"]
    assert net(account) == 0


def test_modify_and_cancel_a_resting_order(account, orders):
    limit = orders.limit(EUR, OrderSide.BUY, qty(1000), px("1.09900"))
    submit(account, limit)
    (updated,) = modify(account, limit, quantity=qty(2000), price=px("1.09950"))
    assert isinstance(updated, OrderUpdated) and (updated.quantity, updated.price) == (qty(2000), px("1.09950"))
    assert kinds(cancel(account, limit)) == ["OrderCanceled"]
    (refused,) = cancel(account, limit)
    assert isinstance(refused, OrderCancelRejected)


# Contingencies --------------------------------------------------------------------------------------

def bracket(orders: OrderFactory, side: OrderSide = OrderSide.BUY):
    """As EMACrossBracket sends it: a GTD limit-if-touched entry (OTO) with a stop-loss and a take-profit
    that cancel each other (NautilusTrader makes them OUO, one-updates-other, which includes cancel)."""
    sign = 1 if side == OrderSide.BUY else -1
    return orders.bracket(
        EUR, side, qty(1000), entry_order_type=OrderType.LIMIT_IF_TOUCHED, entry_price=px("1.09995"),
        entry_trigger_price=px("1.09995"), sl_trigger_price=px(f"{1.09995 - sign * 0.0005:.5f}"),
        tp_price=px(f"{1.09995 + sign * 0.0005:.5f}"), time_in_force=TimeInForce.GTD,
        expire_time=pd.Timestamp(T0 + 30 * SEC, tz="UTC"),
    )


def test_a_bracket_holds_its_children_until_the_entry_fills_then_one_cancels_the_other(account, orders):
    order_list = bracket(orders)
    entry, stop_loss, take_profit = order_list.orders
    assert (entry.contingency_type, stop_loss.contingency_type) == (ContingencyType.OTO, ContingencyType.OUO)
    assert kinds(submit(account, order_list)) == ["OrderAccepted"]
    held = {r.client_order_id: r.order_status for r in account.order_reports(T0, open_only=True)}
    assert held == {entry.client_order_id: OrderStatus.ACCEPTED, stop_loss.client_order_id: OrderStatus.SUBMITTED,
                    take_profit.client_order_id: OrderStatus.SUBMITTED}  # the children are held, and reported
    events = quote(account, "1.09993", "1.09995")
    assert kinds(events) == ["OrderTriggered", "OrderFilled", "OrderAccepted", "OrderAccepted"]
    events = quote(account, "1.10045", "1.10047")
    assert kinds(events) == ["OrderFilled", "OrderCanceled"]
    assert (events[0].client_order_id, events[1].client_order_id) == (take_profit.client_order_id, stop_loss.client_order_id)
    assert net(account) == 0 and account.order_reports(T0, open_only=True) == [] and account.is_flat()


def test_oco_orders_cancel_each_other(account, orders):
    order_list = orders.bracket(EUR, OrderSide.BUY, qty(1000), sl_trigger_price=px("1.09900"), tp_price=px("1.10100"),
                                contingency_type=ContingencyType.OCO)
    submit(account, order_list)
    assert order_list.orders[1].contingency_type == ContingencyType.OCO
    events = quote(account, "1.09898", "1.09900")
    assert kinds(events) == ["OrderFilled", "OrderCanceled"] and account.is_flat()


def test_canceling_a_bracket_entry_cancels_its_held_children(account, orders):
    order_list = bracket(orders)
    submit(account, order_list)
    events = cancel(account, order_list.first)
    assert kinds(events) == ["OrderCanceled", "OrderCanceled", "OrderCanceled"]
    assert account.order_reports(T0, open_only=True) == [] and account.is_flat()


def test_a_bracket_entry_that_expires_takes_its_children_with_it(account, orders):
    submit(account, bracket(orders))
    events = quote(account, "1.10000", "1.10002", ts=T0 + 31 * SEC)
    assert "OrderExpired" in kinds(events) and account.is_flat()


# Positions and reports ------------------------------------------------------------------------------

def test_netting_reports_one_position_per_instrument_flat_included(account, orders):
    submit(account, orders.market(EUR, OrderSide.BUY, qty(3000)))
    (report,) = account.position_reports(T0)
    assert (report.position_side, report.quantity, report.venue_position_id) == (PositionSide.LONG, qty(3000), None)
    submit(account, orders.market(EUR, OrderSide.SELL, qty(3000)))
    (report,) = account.position_reports(T0)
    assert report.position_side == PositionSide.FLAT


def test_netting_is_one_position_per_instrument_whoever_trades_it(account, orders):
    """As at a real venue, which knows no strategies: a hand trade moves the position the node's
    strategy trades, and that strategy's reduce-only close reduces the one net position."""
    close_mine = "EUR/USD.SIM-S-001"  # the position id the node's NETTING close names
    submit(account, orders.market(EUR, OrderSide.BUY, qty(3000)))
    (hand,), others = account.hand_trade("BUY", "EUR/USD.SIM", "2000", T0)
    assert isinstance(hand, OrderFilled) and hand.client_order_id.value.startswith("HAND-") and others == []
    (fill,) = submit(account, orders.market(EUR, OrderSide.SELL, qty(3000), reduce_only=True), position_id=close_mine)
    assert isinstance(fill, OrderFilled) and fill.position_id is None  # a NETTING venue names no position
    assert net(account) == 2000  # the hand trade's part is left
    account.hand_trade("SELL", "EUR/USD.SIM", "2000", T0)
    assert net(account) == 0
    # A hand trade the node saw, and took for its strategy's (external_order_claims), is that strategy's to close.
    account.hand_trade("SELL", "EUR/USD.SIM", "1000", T0)
    close = orders.market(EUR, OrderSide.BUY, qty(1000), reduce_only=True)
    assert kinds(submit(account, close, position_id=close_mine)) == ["OrderFilled"]
    assert account.is_flat()
    # Two strategies whose positions offset hold nothing at the venue: a reduce-only close has nothing to reduce.
    submit(account, orders.market(EUR, OrderSide.BUY, qty(1000)))
    submit(account, OrderFactory(TRADER, StrategyId("S-002"), TestClock()).market(EUR, OrderSide.SELL, qty(1000)))
    close = orders.market(EUR, OrderSide.SELL, qty(1000), reduce_only=True)
    (rejected,) = submit(account, close, position_id=close_mine)
    assert isinstance(rejected, OrderRejected) and "would have increased position" in rejected.reason


def test_a_hand_trade_skips_the_ack_delay_and_the_nodes_events_are_told_apart(account, orders):
    account.set_ack_delay(2 * SEC)
    held = orders.market(EUR, OrderSide.BUY, qty(1000))
    assert submit(account, held) == []
    hand, others = account.hand_trade("BUY", "EUR/USD.SIM", "1000", T0)  # the delay is the node's: not this order's
    assert kinds(hand) == ["OrderFilled"] and others == [] and net(account) == 1000
    hand, others = account.hand_trade("SELL", "EUR/USD.SIM", "5000", T0 + 2 * SEC)  # the node's came due meanwhile
    assert kinds(hand) == ["OrderFilled"] and [e.client_order_id for e in others] == [held.client_order_id]
    assert net(account) == -3000
    assert kinds(submit(account, orders.market(EUR, OrderSide.BUY, qty(1000)), ts=T0 + 3 * SEC)) == []  # still delayed


@pytest.mark.parametrize("side, instrument, quantity, says", [
    ("HOLD", "EUR/USD.SIM", "1000", "side 'HOLD' is neither BUY nor SELL"),
    ("BUY", "GBP/USD.SIM", "1000", "the venue does not list 'GBP/USD.SIM'"),
    ("BUY", "EUR", "1000", "the venue does not list 'EUR'"),
    ("BUY", "EUR/USD.SIM", "1.5", "not a positive multiple of EUR/USD.SIM's size increment 1"),
    ("BUY", "EUR/USD.SIM", "-1000", "not a positive multiple"),
    ("BUY", "EUR/USD.SIM", "lots", "not a positive multiple"),
    ("BUY", "EUR/USD.SIM", "1e999999", "not a positive multiple"),
    ("BUY", "EUR/USD.SIM", "999", "below EUR/USD.SIM's minimum 1000"),
    ("SELL", "EUR/USD.SIM", "60000000", "above EUR/USD.SIM's maximum 50000000"),
])
def test_a_hand_trade_that_makes_no_sense_is_refused_without_touching_the_books(account, side, instrument, quantity,
                                                                                 says):
    with pytest.raises(HandTradeRefused, match=re.escape(says)):
        account.hand_trade(side, instrument, quantity, T0)
    assert account.order_reports(T0) == [] and account.position_reports(T0) == []


def test_hedging_keeps_a_position_per_position_id(orders):
    account = make_account("HEDGING")
    quote(account, "1.10000", "1.10002")
    submit(account, orders.market(EUR, OrderSide.BUY, qty(1000)), position_id="EUR/USD.SIM-LONG")
    submit(account, orders.market(EUR, OrderSide.SELL, qty(2000)), position_id="EUR/USD.SIM-SHORT")
    reports = {r.venue_position_id.value: (r.position_side, r.quantity) for r in account.position_reports(T0)}
    assert reports == {"EUR/USD.SIM-LONG": (PositionSide.LONG, qty(1000)), "EUR/USD.SIM-SHORT": (PositionSide.SHORT, qty(2000))}
    (fill,) = submit(account, orders.market(EUR, OrderSide.SELL, qty(1000), reduce_only=True), position_id="EUR/USD.SIM-LONG")
    assert fill.position_id == PositionId("EUR/USD.SIM-LONG")
    assert [r.venue_position_id.value for r in account.position_reports(T0)] == ["EUR/USD.SIM-SHORT"]


def test_fill_and_order_reports(account, orders):
    market = orders.market(EUR, OrderSide.BUY, qty(1000))
    submit(account, market)
    limit = orders.limit(EUR, OrderSide.SELL, qty(1000), px("1.20000"))
    submit(account, limit, ts=T0 + SEC)
    (fill,) = account.fill_reports(T0)
    assert (fill.client_order_id, fill.last_qty, fill.last_px) == (market.client_order_id, qty(1000), px("1.10002"))
    assert account.fill_reports(T0, since_ns=T0 + 1) == []
    assert [r.client_order_id for r in account.order_reports(T0)] == [market.client_order_id, limit.client_order_id]
    (open_report,) = account.order_reports(T0, open_only=True)
    assert (open_report.client_order_id, open_report.price, open_report.order_status) == (
        limit.client_order_id, px("1.20000"), OrderStatus.ACCEPTED)
    by_venue_id = account.order_reports(T0, venue_order_id=open_report.venue_order_id.value)
    assert [r.client_order_id for r in by_venue_id] == [limit.client_order_id]


# The venue's own rules ------------------------------------------------------------------------------

def test_unknown_instruments_and_duplicate_ids_are_rejected_without_touching_the_books(account, orders):
    (unknown,) = submit(account, orders.market(InstrumentId.from_str("GBP/USD.SIM"), OrderSide.BUY, qty(1000)))
    assert "does not list GBP/USD.SIM" in unknown.reason
    market = orders.market(EUR, OrderSide.BUY, qty(1000))
    submit(account, market)
    (duplicate,) = submit(account, market)
    assert "duplicate client_order_id" in duplicate.reason and net(account) == 1000


def test_ack_delay_holds_new_orders_submitted_and_a_cancel_meanwhile_is_rejected(account, orders):
    account.set_ack_delay(2 * SEC)
    market = orders.market(EUR, OrderSide.BUY, qty(1000))
    assert submit(account, market) == []
    (held,) = account.order_reports(T0, open_only=True)
    assert held.order_status == OrderStatus.SUBMITTED
    assert kinds(cancel(account, market, ts=T0 + SEC)) == ["OrderCancelRejected"]
    assert kinds(account.process(T0 + 2 * SEC)) == ["OrderFilled"]


def test_an_account_is_its_traders_until_flat_and_silent(account, orders):
    assert account.claim("A-001", now=100.0) is None
    assert account.claim("A-001", now=100.5) is None  # the owner, again: a reconnect or a restart
    assert "in use by trader A-001" in account.claim("B-001", now=101.0)
    submit(account, orders.market(EUR, OrderSide.BUY, qty(1000)))
    assert "not flat" in account.claim("B-001", now=200.0)
    submit(account, orders.market(EUR, OrderSide.SELL, qty(1000)))
    assert account.claim("B-001", now=100.5 + LEASE_SECS) is None and account.owner == "B-001"


def test_a_shared_account_is_every_traders_at_once(orders):
    account = make_account(shared=True)
    quote(account, "1.10000", "1.10002")
    assert account.claim("A-001", now=100.0) is None
    submit(account, orders.market(EUR, OrderSide.BUY, qty(1000)))
    assert account.claim("B-001", now=100.5) is None  # A is still heard from, and the account is not flat
    assert account.claim("A-001", now=101.0) is None and account.owner is None


def test_an_order_the_engine_fails_on_is_rejected_not_left_in_flight(account, orders):
    class Broken:
        def execute(self, command):
            raise RuntimeError("boom")

    account._engine = Broken()
    (rejected,) = submit(account, orders.market(EUR, OrderSide.BUY, qty(1000)))
    assert isinstance(rejected, OrderRejected) and "failed to carry it out: RuntimeError: boom" in rejected.reason
