"""The paper venue's books and matching: pure and synchronous, no I/O and no clock (callers pass ts).

Every command method returns the protocol Events it produced, in order. The rules, all of them:

- An order is received (receive: from then on it is known, SUBMITTED, with its venue order id) and
  then carried out (carry_out: accepted, and matched, or rejected); submit does both at once. A
  SUBMITTED order shows quantity and price as the Submit gave them. It can be canceled before it is
  carried out (it then stays known, CANCELED, and is never carried out), not modified.
- Ids carry the book's epoch, which the venue sets to its start time: "V-<epoch>-<n>" for orders,
  "T-<epoch>-<n>" for trades, so a restarted venue never reuses one.

- Instruments are "EUR/USD.SIM": prices have 5 decimals (tick 0.00001), sizes are whole units; the
  quote currency is the symbol's last three letters.
- MARKET fills at once, in full, at the touch: a BUY at the ask, a SELL at the bid. With no quote yet
  for its instrument it is rejected ("no market"). Quote sizes are shown, never consumed.
- LIMIT fills in full as soon as it crosses the touch (a BUY priced at or above the ask, a SELL at or
  below the bid): at once on submit or modify, or on the first quote that crosses it while it rests.
  It fills at the better of its limit and the touch, which for a crossing order is always the touch.
  One that does not cross rests (GTC and DAY alike: DAY never expires here); an IOC or FOK one is
  canceled instead. So there are no partial fills.
- reduce_only: rejected on submit (or its modify refused) unless it reduces the position without
  flipping it: opposite side, quantity at most the position's. One that no longer would when it
  comes to fill is canceled instead.
- Rejected orders are not kept: an order the venue does not know was never accepted. A duplicate
  client_order_id is rejected at once, on receipt.
- Bounded memory: the order history keeps the open orders and the last keep_orders (10,000) orders,
  and prunes a closed order further back (a prune runs every keep_orders / 10 new orders, so at most
  11,000 closed ones are kept): QueryOrders no longer lists it, a Cancel or Modify calls it unknown.
  The fill history keeps the last keep_fills (100,000) fills. Positions and cash forget nothing.
- Positions are NETTING, one per instrument, id "SIM-EURUSD": a signed quantity and the average open
  price (weighted on adds, kept on reductions, the fill price after a flip, 0 when FLAT). A position
  that has ever traded stays listed, FLAT or not.
- Commission: 0.00002 of the notional (quantity x price), rounded to 0.01, in the quote currency.
  Each currency's balance is its start (10,000,000 USD) plus realized PnL minus commission; nothing
  is locked.
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from paper_venue.protocol import (
    VENUE, Balance, Cancel, CommandRejected, Event, Fill, Modify, OrderAccepted, OrderCanceled, OrderFilled,
    OrderRejected, OrderState, OrderUpdated, Position, Quote, Submit,
)

TICK = Decimal("0.00001")
CENT = Decimal("0.01")
COMMISSION_RATE = Decimal("0.00002")
STARTING_BALANCE = Decimal(10_000_000)
MAX_VALUE = Decimal(10) ** 12  # any quantity or price above is refused
WORKING = ("ACCEPTED", "PARTIALLY_FILLED")  # accepted and not closed: matched, modifiable
OPEN_STATUSES = ("SUBMITTED", *WORKING)  # not closed: cancelable
KEEP_ORDERS = 10_000
KEEP_FILLS = 100_000
TIMES_IN_FORCE = ("GTC", "IOC", "FOK", "DAY")


class _Refused(Exception):
    """The reason a submit or a modify is refused."""


def _decimal(text: str | None, what: str) -> Decimal:
    try:
        value = Decimal(text)
    except (InvalidOperation, TypeError, ValueError):
        raise _Refused(f"invalid {what} {text!r}") from None
    if not value.is_finite() or not 0 < value <= MAX_VALUE:
        raise _Refused(f"invalid {what} {text!r}")
    return value


def _quantity(text: str | None) -> Decimal:
    value = _decimal(text, "quantity")
    if value != value.to_integral_value():
        raise _Refused(f"invalid quantity {text!r}: sizes are whole units")
    return value


def _price(text: str | None) -> Decimal:
    value = _decimal(text, "price")
    if value != value.quantize(TICK):
        raise _Refused(f"invalid price {text!r}: the tick is {TICK}")
    return value


def _px(value: Decimal) -> str:
    return f"{value:.5f}"


def _avg(value: Decimal) -> str:
    """An average price: 5 decimals, or up to 8 where it needs them."""
    text = f"{value:.8f}"
    return text[: max(text.index(".") + 6, len(text.rstrip("0")))]


def _sign(side: str) -> int:
    return 1 if side == "BUY" else -1


@dataclass
class _Order:
    submit: Submit
    venue_order_id: str
    ts_accepted: int  # when received, until accepted
    ts_last: int
    status: str = "SUBMITTED"
    accepted: bool = False  # quantity and price are checked and set
    quantity: Decimal = Decimal(0)
    price: Decimal | None = None
    filled_qty: Decimal = Decimal(0)
    avg_px: Decimal | None = None

    def state(self) -> OrderState:
        s = self.submit
        if self.accepted:
            quantity, price = f"{self.quantity:.0f}", None if self.price is None else _px(self.price)
        else:  # as the Submit gave them
            quantity, price = s.quantity, s.price
        return OrderState(
            s.client_order_id, self.venue_order_id, s.strategy_id, s.instrument_id, s.side, s.order_type,
            quantity, f"{self.filled_qty:.0f}", None if self.avg_px is None else _avg(self.avg_px),
            price, s.time_in_force, s.reduce_only, self.status, self.ts_accepted, self.ts_last,
        )


@dataclass
class _Position:
    qty: Decimal = Decimal(0)  # signed: > 0 LONG, < 0 SHORT
    avg_px: Decimal = Decimal(0)
    realized_pnl: Decimal = Decimal(0)
    ts: int = 0


class Book:
    def __init__(self, symbols=("EUR/USD", "GBP/USD"), venue: str = VENUE, commission_rate=COMMISSION_RATE,
                 epoch: str = "0", keep_orders: int = KEEP_ORDERS, keep_fills: int = KEEP_FILLS):
        self.venue, self.epoch, self.keep_orders = venue, epoch, keep_orders
        self.instruments = [f"{s}.{venue}" for s in symbols]
        self.commission_rate = Decimal(commission_rate)
        self._cash: dict[str, Decimal] = {"USD": STARTING_BALANCE}
        self._touch: dict[str, tuple[Decimal, Decimal]] = {}  # instrument -> (bid, ask)
        self._orders: dict[str, _Order] = {}  # by client_order_id, in arrival order
        self._resting: dict[str, _Order] = {}  # the WORKING ones
        self._prune_at = keep_orders + max(1, keep_orders // 10)
        self._fills: deque[Fill] = deque(maxlen=keep_fills)
        self._positions: dict[str, _Position] = {}
        self._order_ids = itertools.count(1)
        self._trade_ids = itertools.count(1)

    # Commands ------------------------------------------------------------------------------------

    def submit(self, cmd: Submit, ts: int, refuse: str | None = None) -> list[Event]:
        """Receives the order and carries it out at once."""
        return self.receive(cmd, ts) + self.carry_out(cmd, ts, refuse)

    def receive(self, cmd: Submit, ts: int) -> list[Event]:
        """The order is known from now on, SUBMITTED; nothing is pushed unless its client_order_id is a duplicate."""
        if cmd.client_order_id in self._orders:
            return [OrderRejected(cmd.client_order_id, f"duplicate client_order_id {cmd.client_order_id!r}", ts)]
        self._orders[cmd.client_order_id] = _Order(cmd, f"V-{self.epoch}-{next(self._order_ids)}", ts, ts)
        self._prune()
        return []

    def carry_out(self, cmd: Submit, ts: int, refuse: str | None = None) -> list[Event]:
        """Accepts and matches, or rejects, the order `receive` took; nothing if it is no longer SUBMITTED
        (canceled meanwhile) or was never received. refuse: a reason to reject it whatever it is (the
        reject_orders drill)."""
        order = self._orders.get(cmd.client_order_id)
        if order is None or order.submit is not cmd or order.status != "SUBMITTED":
            return []
        try:
            if refuse:
                raise _Refused(refuse)
            order.quantity, order.price = self._check(cmd)
        except _Refused as why:
            del self._orders[cmd.client_order_id]
            return [OrderRejected(cmd.client_order_id, str(why), ts)]
        order.status, order.accepted, order.ts_accepted, order.ts_last = "ACCEPTED", True, ts, ts
        self._resting[cmd.client_order_id] = order
        events: list[Event] = [OrderAccepted(order.state()), *self._match(order, ts)]
        if order.status in WORKING and cmd.time_in_force in ("IOC", "FOK"):
            events += self._cancel(order, ts)
        return events

    def cancel(self, cmd: Cancel, ts: int) -> list[Event]:
        order = self._orders.get(cmd.client_order_id)
        if order is None or order.status not in OPEN_STATUSES:
            reason = "unknown order" if order is None else f"order is {order.status}"
            return [CommandRejected(cmd.client_order_id, "cancel", reason, ts)]
        return self._cancel(order, ts)

    def modify(self, cmd: Modify, ts: int) -> list[Event]:
        order = self._orders.get(cmd.client_order_id)
        try:
            if order is None or order.status not in WORKING:
                raise _Refused("unknown order" if order is None else f"order is {order.status}")
            quantity = order.quantity if cmd.quantity is None else _quantity(cmd.quantity)
            price = order.price if cmd.price is None else _price(cmd.price)
            if quantity <= order.filled_qty:
                raise _Refused(f"quantity {cmd.quantity} is not above the filled {order.filled_qty:.0f}")
            if order.submit.reduce_only and not self._reduces(order.submit, quantity - order.filled_qty):
                raise _Refused("reduce-only order would increase or flip the position")
        except _Refused as why:
            return [CommandRejected(cmd.client_order_id, "modify", str(why), ts)]
        order.quantity, order.price, order.ts_last = quantity, price, ts
        return [OrderUpdated(order.state()), *self._match(order, ts)]

    def on_quote(self, quote: Quote) -> list[Event]:
        """A new touch: resting orders of that instrument that it crosses fill, oldest first."""
        if quote.instrument_id not in self.instruments:
            return []
        self._touch[quote.instrument_id] = (Decimal(quote.bid), Decimal(quote.ask))
        events: list[Event] = []
        for order in list(self._resting.values()):
            if order.submit.instrument_id == quote.instrument_id:
                events += self._match(order, quote.ts)
        return events

    # Queries -------------------------------------------------------------------------------------

    def orders(self, open_only: bool = False, client_order_id: str | None = None) -> list[OrderState]:
        """In arrival order; open_only: those not closed (OPEN_STATUSES); client_order_id: only that one."""
        found = self._orders.values() if client_order_id is None else filter(None, [self._orders.get(client_order_id)])
        return [o.state() for o in found if not open_only or o.status in OPEN_STATUSES]

    def fills(self, since_ts: int = 0) -> list[Fill]:
        return [f for f in self._fills if f.ts >= since_ts]

    def positions(self) -> list[Position]:
        return [
            Position(
                instrument_id, f"{self.venue}-{instrument_id.split('.')[0].replace('/', '')}",
                "LONG" if p.qty > 0 else "SHORT" if p.qty < 0 else "FLAT", f"{abs(p.qty):.0f}", _avg(p.avg_px), p.ts,
            )
            for instrument_id, p in self._positions.items()
        ]

    def signed_position(self, instrument_id: str) -> Decimal:
        return self._positions.get(instrument_id, _Position()).qty

    def balances(self) -> list[Balance]:
        return [Balance(c, f"{v:.2f}", f"{v:.2f}", "0.00") for c, v in self._cash.items()]

    # Matching ------------------------------------------------------------------------------------

    def _check(self, cmd: Submit) -> tuple[Decimal, Decimal | None]:
        if cmd.instrument_id not in self.instruments:
            raise _Refused(f"unknown instrument {cmd.instrument_id!r}")
        if cmd.side not in ("BUY", "SELL"):
            raise _Refused(f"invalid side {cmd.side!r}")
        if cmd.order_type not in ("MARKET", "LIMIT"):
            raise _Refused(f"unsupported order type {cmd.order_type!r}")
        if cmd.time_in_force not in TIMES_IN_FORCE:
            raise _Refused(f"unsupported time in force {cmd.time_in_force!r}")
        quantity = _quantity(cmd.quantity)
        if cmd.order_type == "MARKET" and cmd.price is not None:
            raise _Refused("a MARKET order takes no price")
        price = _price(cmd.price) if cmd.order_type == "LIMIT" else None
        if cmd.reduce_only and not self._reduces(cmd, quantity):
            raise _Refused("reduce-only order would increase or flip the position")
        if cmd.order_type == "MARKET" and cmd.instrument_id not in self._touch:
            raise _Refused("no market")
        return quantity, price

    def _reduces(self, cmd: Submit, quantity: Decimal) -> bool:
        position = self.signed_position(cmd.instrument_id)
        return position * _sign(cmd.side) < 0 and quantity <= abs(position)

    def _match(self, order: _Order, ts: int) -> list[Event]:
        touch = self._touch.get(order.submit.instrument_id)
        if touch is None or order.status not in WORKING:
            return []
        side = order.submit.side
        px = touch[1] if side == "BUY" else touch[0]
        if order.price is not None and (order.price - px) * _sign(side) < 0:
            return []  # a limit that does not cross
        leaves = order.quantity - order.filled_qty
        if order.submit.reduce_only and not self._reduces(order.submit, leaves):
            return self._cancel(order, ts)
        return [self._fill(order, leaves, px, ts)]

    def _fill(self, order: _Order, quantity: Decimal, px: Decimal, ts: int) -> OrderFilled:
        s = order.submit
        order.avg_px = (px * quantity + (order.avg_px or 0) * order.filled_qty) / (order.filled_qty + quantity)
        order.filled_qty += quantity
        order.status = "FILLED" if order.filled_qty == order.quantity else "PARTIALLY_FILLED"
        order.ts_last = ts
        if order.status == "FILLED":
            del self._resting[s.client_order_id]
        currency = s.instrument_id.split(".")[0][-3:]
        commission = (quantity * px * self.commission_rate).quantize(CENT, ROUND_HALF_UP)
        pnl = self._net(self._positions.setdefault(s.instrument_id, _Position()), quantity * _sign(s.side), px, ts)
        self._cash[currency] = self._cash.get(currency, Decimal(0)) + pnl - commission
        fill = Fill(f"T-{self.epoch}-{next(self._trade_ids)}", s.client_order_id, order.venue_order_id,
                    s.instrument_id, s.side, f"{quantity:.0f}", _px(px), f"{commission:.2f}", currency, ts)
        self._fills.append(fill)
        return OrderFilled(order.state(), fill)

    @staticmethod
    def _net(p: _Position, qty: Decimal, px: Decimal, ts: int) -> Decimal:
        """Nets a signed fill into the position; returns the PnL it realized."""
        pnl = Decimal(0)
        if p.qty * qty >= 0:  # opens or adds
            p.avg_px = (p.avg_px * abs(p.qty) + px * abs(qty)) / abs(p.qty + qty)
        else:  # reduces, closes or flips
            closed = min(abs(qty), abs(p.qty))
            pnl = closed * (px - p.avg_px) * (1 if p.qty > 0 else -1)
            if abs(qty) > abs(p.qty):
                p.avg_px = px  # flipped: the rest opens at the fill price
            elif abs(qty) == abs(p.qty):
                p.avg_px = Decimal(0)
        p.qty += qty
        p.realized_pnl += pnl
        p.ts = ts
        return pnl

    def _cancel(self, order: _Order, ts: int) -> list[Event]:
        order.status, order.ts_last = "CANCELED", ts
        self._resting.pop(order.submit.client_order_id, None)
        return [OrderCanceled(order.state())]

    def _prune(self) -> None:
        """Forgets the closed orders more than keep_orders back; runs every keep_orders / 10 new orders."""
        if len(self._orders) < self._prune_at:
            return
        behind = list(itertools.islice(self._orders.items(), len(self._orders) - self.keep_orders))
        for client_order_id, order in behind:
            if order.status not in OPEN_STATUSES:
                del self._orders[client_order_id]
        self._prune_at = len(self._orders) + max(1, self.keep_orders // 10)
