"""One account at the paper venue, matched by NautilusTrader's own engine.

Each account is a SimulatedExchange (an OrderMatchingEngine per instrument, as NautilusTrader's
backtests and sandbox use) with an ExecutionEngine, a Portfolio and a Cache of its own, which keep the
account's orders and positions the way a backtest keeps them. So the venue knows every order type
(market, limit, stop-market, stop-limit, market- and limit-if-touched, trailing stops), every time in
force (GTD expires at its time), post-only and reduce-only, modify and cancel, order lists with their
contingencies (OTO, OCO, OUO), partial fills against the quoted size, and NETTING or HEDGING
positions, without matching code of our own. Accounts never see each other's orders.

Rules of ours, on top:
- Commands arrive as NautilusTrader's own (SubmitOrder, SubmitOrderList, ModifyOrder, CancelOrder,
  CancelAllOrders, BatchCancelOrders); the events they cause are returned, in order, as NautilusTrader
  order events. The venue's bookkeeping events (OrderSubmitted) are not; a denial (the venue's
  engine refusing an order outright) is returned as OrderRejected, which is what a venue says.
- An order for an instrument the venue does not list, or a client_order_id it already knows, is
  rejected without touching the books.
- NETTING is a real venue's: one position per instrument for the whole account. NautilusTrader's
  engines key a NETTING position by strategy ("{instrument}-{strategy}"), but a venue knows no
  strategies: a node's strategies, a trade by hand (hand_trade) and a node restarted under other
  strategy ids all trade the same position. So every order is filed under the instrument's net
  position ("{instrument}-NET") before the engine takes it, and a reduce-only order reduces that
  position, whoever opened it. Fills are sent without that position id, as a NETTING venue sends
  them: the node keys its own positions.
- ack_delay_ns (the drill): a new order reaches the matching engine that much after the node made
  it. Until then it is SUBMITTED here, and a cancel meanwhile is rejected ("not found"), as at a real
  venue whose acknowledgement is late. Every other command is carried out at once.
- Ownership: the account belongs to the trader that last said hello to it. Another trader may take
  it over only once it is flat (no position, no open order) and its owner has been silent for
  LEASE_SECS: so two nodes never trade one account by accident, and a restarted node gets its own
  account back. A shared account (declared so at the venue's start) has no owner: several traders
  use it at once, as several processes use one real account through the same API key, and its
  positions, orders and reports are the whole account's, whoever traded them.
- Closed orders and positions are forgotten a day after they closed (checked at most once a minute).
"""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation

from loguru import logger
from nautilus_trader.backtest.engine import SimulatedExchange
from nautilus_trader.backtest.execution_client import BacktestExecClient
from nautilus_trader.backtest.models import FillModel, LatencyModel, MakerTakerFeeModel
from nautilus_trader.cache.cache import Cache
from nautilus_trader.common.component import MessageBus, TestClock
from nautilus_trader.core.uuid import UUID4
from nautilus_trader.execution.engine import ExecutionEngine
from nautilus_trader.execution.messages import SubmitOrder, SubmitOrderList, TradingCommand
from nautilus_trader.execution.reports import FillReport, OrderStatusReport, PositionStatusReport
from nautilus_trader.model.data import QuoteTick
from nautilus_trader.model.enums import (
    AccountType, OmsType, OrderSide, OrderStatus, PositionSide, TimeInForce, TrailingOffsetType, TriggerType,
)
from nautilus_trader.model.events import (
    AccountState, OrderAccepted, OrderCanceled, OrderCancelRejected, OrderDenied, OrderEvent, OrderExpired,
    OrderFilled, OrderModifyRejected, OrderRejected, OrderTriggered, OrderUpdated,
)
from nautilus_trader.model.identifiers import (
    AccountId, ClientOrderId, InstrumentId, PositionId, StrategyId, TraderId, Venue, VenueOrderId,
)
from nautilus_trader.model.instruments import Instrument
from nautilus_trader.model.objects import Money, Quantity
from nautilus_trader.model.orders import MarketOrder, Order
from nautilus_trader.portfolio.portfolio import Portfolio

from paper_venue.protocol import VENUE

LEASE_SECS = 3.0
KEEP_CLOSED_SECS = 24 * 3600
PURGE_EVERY_NS = 60 * 1_000_000_000
# What a node hears of: the order events a venue itself would send.
_FORWARDED = (OrderAccepted, OrderRejected, OrderTriggered, OrderUpdated, OrderCanceled, OrderExpired, OrderFilled,
              OrderModifyRejected, OrderCancelRejected)
# Whose a hand trade is: nobody's strategy (a person at the venue); its client order ids start "HAND-".
HAND_TRADER, HAND_STRATEGY = TraderId("HAND-001"), StrategyId("HAND-001")


class HandTradeRefused(ValueError):
    """A hand trade that makes no sense (an unknown side or instrument, a bad quantity); says why."""


class VenueAccount:
    def __init__(self, account_id: str, oms_type: OmsType, instruments: list[Instrument], balances: list[Money],
                 shared: bool = False):
        self.account_id = AccountId(account_id)
        self.oms_type = oms_type
        self.shared = shared
        self.owner: str | None = None  # the trader id that last said hello; None on a shared account
        self.owner_heard_at = 0.0  # its hello's time.monotonic()
        self._clock = TestClock()
        self._latency = LatencyModel(0)  # the ack delay drill's (set_ack_delay), for the node's orders
        self._msgbus = MessageBus(TraderId(f"{VENUE}-VENUE"), self._clock)
        self._cache = Cache()
        portfolio = Portfolio(self._msgbus, self._cache, self._clock)
        self._engine = ExecutionEngine(self._msgbus, self._cache, self._clock)
        self._exchange = SimulatedExchange(
            venue=Venue(VENUE), oms_type=oms_type, account_type=AccountType.MARGIN, starting_balances=balances,
            base_currency=None, default_leverage=Decimal(1), leverages={}, modules=[], portfolio=portfolio,
            msgbus=self._msgbus, cache=self._cache, clock=self._clock, fill_model=FillModel(),
            fee_model=MakerTakerFeeModel(), latency_model=self._latency,
            bar_execution=False, trade_execution=False,  # matching follows the quotes only (on_quote)
            use_random_ids=True,  # a restarted venue never hands out an id again
        )
        self._client = BacktestExecClient(self._exchange, self._msgbus, self._cache, self._clock)
        self._client._set_account_id(self.account_id)
        self._exchange.register_client(self._client)
        self._engine.register_client(self._client)
        for instrument in instruments:
            self._cache.add_instrument(instrument)
            self._exchange.add_instrument(instrument)
        self._events: list[OrderEvent] = []
        self._msgbus.subscribe("events.order.*", self._events.append)
        self._exchange.initialize_account()
        self._engine.start()
        self._client._set_connected(True)
        self._purged_at = 0

    # Commands and market data: each returns the order events it caused ---------------------------

    def execute(self, command: TradingCommand, ts: int) -> list[OrderEvent]:
        self._clock.set_time(ts)
        orders = orders_of(command)
        refusal = next((why for o in orders if (why := self._refusal(o)) is not None), None)
        if refusal is not None:
            return [self.rejected(o, refusal, ts) for o in orders]
        try:
            if self.oms_type == OmsType.NETTING:
                for order in orders:
                    self._file_under_net_position(order, command)
            self._engine.execute(command)  # the orders are in the books now; the engine takes them at process()
            for order in orders:
                # Known by its venue order id from the start, like a held OTO child, which the engine
                # accepts only when its parent fills: reconciliation meanwhile reports the same id.
                self._cache.add_venue_order_id(order.client_order_id, VenueOrderId(str(UUID4())))
            return self.process(ts)
        except Exception as exc:  # a bug of the engine's or ours: the node must hear of it, not wait
            logger.opt(exception=exc).error(f"{self.account_id}: carrying out {command} failed")
            reason = f"the paper venue failed to carry it out: {type(exc).__name__}: {exc}"
            return self._drain() + [self.rejected(o, reason, ts) for o in orders if self._not_yet_working(o)]

    def hand_trade(self, side: str, instrument_id: str, quantity: str,
                   ts: int) -> tuple[list[OrderEvent], list[OrderEvent]]:
        """Someone trades on the account by hand at the venue (a trader on the broker's website): a market
        order at the touch, of no node's strategy. On a NETTING account it moves the one net position the
        node's orders trade too. The ack delay drill is the node's, not this order's: it reaches the
        matching engine at once. Returns the hand order's events, and the events of other orders that
        came due meanwhile; HandTradeRefused says why a hand trade makes no sense."""
        order = self._hand_order(side, instrument_id, quantity, ts)
        self._exchange.set_latency_model(LatencyModel(0))
        try:
            events = self.execute(SubmitOrder(HAND_TRADER, HAND_STRATEGY, order, UUID4(), ts), ts)
        finally:
            self._exchange.set_latency_model(self._latency)
        mine = [e for e in events if e.client_order_id == order.client_order_id]
        return mine, [e for e in events if e.client_order_id != order.client_order_id]

    def _hand_order(self, side: str, instrument_id: str, quantity: str, ts: int) -> MarketOrder:
        if side not in ("BUY", "SELL"):
            raise HandTradeRefused(f"side {side!r} is neither BUY nor SELL")
        instrument = next((i for i in self._cache.instruments() if str(i.id) == instrument_id), None)
        if instrument is None:
            raise HandTradeRefused(f"the venue does not list {instrument_id!r}")
        # GTC, not IOC: a market order fills whole, its rest past the quoted size one tick worse.
        return MarketOrder(HAND_TRADER, HAND_STRATEGY, instrument.id, ClientOrderId(f"HAND-{UUID4()}"), OrderSide[side],
                           _hand_quantity(instrument, quantity), UUID4(), ts, TimeInForce.GTC)

    def on_quote(self, quote: QuoteTick, ts: int) -> list[OrderEvent]:
        """Matching follows the quotes only: a trade would reset the book's top to its own price and size."""
        self._clock.set_time(ts)
        self._cache.add_quote_tick(quote)
        self._exchange.process_quote_tick(quote)
        return self.process(ts)

    def process(self, ts: int) -> list[OrderEvent]:
        """Carries out what is due (orders held by an ack delay); the events so far."""
        self._exchange.process(ts)
        if ts - self._purged_at >= PURGE_EVERY_NS:
            self._cache.purge_closed_orders(ts, KEEP_CLOSED_SECS)
            self._cache.purge_closed_positions(ts, KEEP_CLOSED_SECS)
            self._purged_at = ts
        return self._drain()

    def _drain(self) -> list[OrderEvent]:
        """The order events since the last drain, as a venue sends them."""
        events, self._events[:] = list(self._events), []
        return [self._as_sent(e) for e in events if isinstance(e, (*_FORWARDED, OrderDenied))]

    def set_ack_delay(self, delay_ns: int) -> None:
        self._latency = LatencyModel(base_latency_nanos=0, insert_latency_nanos=delay_ns)
        self._exchange.set_latency_model(self._latency)

    def rejected(self, order: Order, reason: str, ts: int) -> OrderRejected:
        return OrderRejected(order.trader_id, order.strategy_id, order.instrument_id, order.client_order_id,
                             self.account_id, reason, UUID4(), ts, ts)

    def _not_yet_working(self, order: Order) -> bool:
        known = self._cache.order(order.client_order_id)
        return known is None or known.status in (OrderStatus.INITIALIZED, OrderStatus.SUBMITTED)

    def _refusal(self, order: Order) -> str | None:
        if self._cache.instrument(order.instrument_id) is None:
            return f"the venue does not list {order.instrument_id}"
        if self._cache.order_exists(order.client_order_id):
            return f"duplicate client_order_id {order.client_order_id}"
        return None

    def _file_under_net_position(self, order: Order, command: TradingCommand) -> None:
        """Caches a new order under its instrument's net position. The engine caches an order (under the
        command's position id, or none) only if it is not cached yet, so this comes first; then the
        matching engine's reduce-only check and the engine's fills both go by the net position, whatever
        the strategy (see the module's docstring)."""
        self._cache.add_order(order, PositionId(f"{order.instrument_id}-NET"), command.client_id)

    def _as_sent(self, event: OrderEvent) -> OrderEvent:
        if isinstance(event, OrderDenied):
            return OrderRejected(event.trader_id, event.strategy_id, event.instrument_id, event.client_order_id,
                                 self.account_id, event.reason, UUID4(), event.ts_event, event.ts_init)
        if isinstance(event, OrderFilled) and self.oms_type == OmsType.NETTING:
            # A copy: the books keep their own.
            return OrderFilled.from_dict(OrderFilled.to_dict(event) | {"position_id": None})
        return event

    # Ownership ---------------------------------------------------------------------------------------

    def claim(self, trader_id: str, now: float) -> str | None:
        """Hands the account to trader_id, or says why not. A shared account is every trader's at once."""
        if self.shared:
            return None
        if self.owner not in (None, trader_id):
            if not self.is_flat():
                return f"account {self.account_id} belongs to trader {self.owner} and is not flat"
            if now - self.owner_heard_at < LEASE_SECS:
                return f"account {self.account_id} is in use by trader {self.owner}"
        self.owner, self.owner_heard_at = trader_id, now
        return None

    def is_flat(self) -> bool:
        return not self._cache.positions_open() and all(o.is_closed for o in self._cache.orders())

    # Reports: what the account holds, as NautilusTrader's reconciliation asks for it -------------

    def account_state(self) -> AccountState:
        return self._cache.account(self.account_id).last_event

    def order_reports(self, ts: int, open_only: bool = False, instrument_id: str | None = None,
                      client_order_id: str | None = None, venue_order_id: str | None = None) -> list[OrderStatusReport]:
        orders = self._cache.orders()
        if client_order_id is not None:
            orders = [o for o in orders if o.client_order_id == ClientOrderId(client_order_id)]
        if venue_order_id is not None:
            orders = [o for o in orders if o.venue_order_id == VenueOrderId(venue_order_id)]
        return [self._order_report(o, ts) for o in orders
                if (not open_only or not o.is_closed) and (instrument_id is None or str(o.instrument_id) == instrument_id)]

    def fill_reports(self, ts: int, since_ns: int = 0, instrument_id: str | None = None,
                     venue_order_id: str | None = None) -> list[FillReport]:
        fills = [e for o in self._cache.orders() for e in o.events if isinstance(e, OrderFilled) and e.ts_event >= since_ns]
        return [
            FillReport(
                account_id=self.account_id, instrument_id=f.instrument_id, venue_order_id=f.venue_order_id,
                trade_id=f.trade_id, order_side=f.order_side, last_qty=f.last_qty, last_px=f.last_px,
                commission=f.commission, liquidity_side=f.liquidity_side, report_id=UUID4(), ts_event=f.ts_event,
                ts_init=ts, client_order_id=f.client_order_id,
                venue_position_id=f.position_id if self.oms_type == OmsType.HEDGING else None,
            )
            for f in sorted(fills, key=lambda f: f.ts_event)
            if (instrument_id is None or str(f.instrument_id) == instrument_id)
            and (venue_order_id is None or f.venue_order_id == VenueOrderId(venue_order_id))
        ]

    def position_reports(self, ts: int, instrument_id: str | None = None) -> list[PositionStatusReport]:
        """HEDGING: each open position, by its venue position id. NETTING: the net position of each
        instrument ever traded (there is one, see execute), FLAT included, and no position id."""
        positions = [p for p in self._cache.positions() if instrument_id is None or str(p.instrument_id) == instrument_id]
        hedging = self.oms_type == OmsType.HEDGING
        return [self._position_report(p.instrument_id, p.signed_decimal_qty(), p.ts_last, ts, p.id if hedging else None,
                                      p.avg_px_open)
                for p in positions if p.is_open or not hedging]

    def _position_report(self, instrument_id: InstrumentId, net: Decimal, ts_last: int, ts: int, position_id,
                         avg_px_open) -> PositionStatusReport:
        side = PositionSide.LONG if net > 0 else PositionSide.SHORT if net < 0 else PositionSide.FLAT
        precision = self._cache.instrument(instrument_id).size_precision
        return PositionStatusReport(
            account_id=self.account_id, instrument_id=instrument_id, position_side=side,
            quantity=Quantity(abs(net), precision), report_id=UUID4(), ts_last=ts_last, ts_init=ts,
            venue_position_id=position_id, avg_px_open=Decimal(str(avg_px_open)) if avg_px_open and net else None,
        )

    def _order_report(self, o: Order, ts: int) -> OrderStatusReport:
        expire_ns = getattr(o, "expire_time_ns", 0)
        trailing = getattr(o, "trailing_offset_type", TrailingOffsetType.NO_TRAILING_OFFSET)
        return OrderStatusReport(
            account_id=self.account_id, instrument_id=o.instrument_id,
            venue_order_id=o.venue_order_id or self._cache.venue_order_id(o.client_order_id),
            order_side=o.side, order_type=o.order_type, time_in_force=o.time_in_force, order_status=o.status,
            quantity=o.quantity, filled_qty=o.filled_qty, report_id=UUID4(), ts_accepted=o.ts_accepted or o.ts_init,
            ts_last=o.ts_last, ts_init=ts, client_order_id=o.client_order_id, order_list_id=o.order_list_id,
            venue_position_id=o.position_id if self.oms_type == OmsType.HEDGING else None,
            linked_order_ids=o.linked_order_ids, parent_order_id=o.parent_order_id, contingency_type=o.contingency_type,
            expire_time=datetime.fromtimestamp(expire_ns / 1e9, tz=timezone.utc) if expire_ns else None,
            price=getattr(o, "price", None), trigger_price=getattr(o, "trigger_price", None),
            trigger_type=getattr(o, "trigger_type", TriggerType.NO_TRIGGER),
            limit_offset=getattr(o, "limit_offset", None), trailing_offset=getattr(o, "trailing_offset", None),
            trailing_offset_type=trailing if trailing != TrailingOffsetType.NO_TRAILING_OFFSET else None,
            avg_px=Decimal(str(o.avg_px)) if o.filled_qty else None, display_qty=getattr(o, "display_qty", None),
            post_only=o.is_post_only, reduce_only=o.is_reduce_only,
        )


def _hand_quantity(instrument: Instrument, text: str) -> Quantity:
    """What a person could order: a positive multiple of the size increment, within the instrument's
    limits (the matching engine itself checks neither limit)."""
    step = instrument.size_increment.as_decimal()
    try:
        amount = Decimal(text)
        whole = amount.is_finite() and amount > 0 and amount % step == 0
    except InvalidOperation:  # not a number, or too large to divide
        whole = False
    if not whole:
        raise HandTradeRefused(f"quantity {text!r} is not a positive multiple of {instrument.id}'s "
                               f"size increment {step}")
    least, most = instrument.min_quantity, instrument.max_quantity
    if least is not None and amount < least.as_decimal():
        raise HandTradeRefused(f"quantity {text} is below {instrument.id}'s minimum {least}")
    if most is not None and amount > most.as_decimal():
        raise HandTradeRefused(f"quantity {text} is above {instrument.id}'s maximum {most}")
    return Quantity(amount, instrument.size_precision)


def orders_of(command: TradingCommand) -> list[Order]:
    if isinstance(command, SubmitOrder):
        return [command.order]
    if isinstance(command, SubmitOrderList):
        return list(command.order_list.orders)
    return []
