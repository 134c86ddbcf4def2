"""Closing orders only, whenever the trading state is not ACTIVE.

NautilusTrader's own TradingState.REDUCING (1.231) denies only orders that would grow an open
position: from flat, a strategy may still open new risk. nsup's REDUCING means "no new entries", so
the worker puts this gate in front of the risk engine's endpoint. While the trading state is not
ACTIVE, a submitted order passes only if it is reduce-only, or if it and every working order on the
same side together reduce the net position by no more than its size (so no run of orders can flip
it). On a HEDGING account, where every order without a position id opens a position of its own
(however it moves the net), it passes only if reduce-only or if it closes the position it names.
Denials go through the risk engine's own path: the order ends DENIED and the strategy is told.

A strategy reaches the risk engine by three doors (NautilusTrader 1.231, Strategy.submit_order): an
emulated order goes to the OrderEmulator first, an order for an execution algorithm (a TWAP's parent)
to that algorithm's own endpoint, and only the rest to the risk engine. The gate stands in front of
all three, so a new parent order is denied whole instead of spawning slices that are each denied.
"""

from __future__ import annotations

from decimal import Decimal

from nautilus_trader.execution.messages import SubmitOrder, SubmitOrderList
from nautilus_trader.live.node import TradingNode
from nautilus_trader.model.enums import OmsType, TradingState
from nautilus_trader.model.orders import Order

RISK_ENDPOINT = "RiskEngine.execute"
EMULATOR_ENDPOINT = "OrderEmulator.execute"


class EntryGate:
    def __init__(self, node: TradingNode):
        self._risk_engine = node.kernel.risk_engine
        self._portfolio = node.portfolio
        self._cache = node.kernel.cache
        self._msgbus = node.kernel.msgbus
        self._routing = node.kernel.exec_engine._routing_map  # venue -> its execution client, with its OMS type
        self._doors = {RISK_ENDPOINT: self._risk_engine.execute, EMULATOR_ENDPOINT: node.kernel.emulator.execute,
                       **{f"{a.id}.execute": a.execute for a in node.trader.exec_algorithms()}}

    def install(self) -> None:
        for endpoint, handler in self._doors.items():
            self._msgbus.deregister(endpoint, handler)
            self._msgbus.register(endpoint, self._guarding(handler))

    def _guarding(self, handler):
        return lambda command: self.execute(command, handler)

    def execute(self, command, handler=None) -> None:
        """The command goes on to `handler` (the risk engine's by default), unless it would open risk
        while the trading state is not ACTIVE."""
        handler = handler or self._risk_engine.execute
        if self._risk_engine.trading_state != TradingState.ACTIVE:
            if isinstance(command, SubmitOrderList):
                orders = command.order_list.orders
            elif isinstance(command, SubmitOrder):
                orders = [command.order]
            else:
                orders = []
            opening = self._first_opening(orders, getattr(command, "position_id", None))
            if opening is not None:
                self._risk_engine._deny_command(  # the engine's own denial path (cpdef)
                    command, f"nsup closing-only: {opening.side_string()} {opening.quantity} {opening.instrument_id} would open risk"
                )
                return
        handler(command)

    def _first_opening(self, orders: list[Order], position_id=None) -> Order | None:
        """The first order that would open or grow risk, counting the orders before it as working."""
        pending: dict[tuple, Decimal] = {}
        for order in orders:
            if order.is_reduce_only:
                continue
            if self._hedging(order):
                if not self._closes(order, position_id):
                    return order
                continue
            key = (order.instrument_id, order.side)
            if key not in pending:
                pending[key] = self._working_quantity(order)
            pending[key] += order.quantity.as_decimal()
            net = self._portfolio.net_position(order.instrument_id)  # signed Decimal
            room = -net if order.is_buy else net
            if pending[key] > room:
                return order
        return None

    def _hedging(self, order: Order) -> bool:
        return hedging(self._routing, order.instrument_id.venue)

    def _closes(self, order: Order, position_id) -> bool:
        position = self._cache.position(position_id) if position_id is not None else None
        return (position is not None and position.is_open and position.instrument_id == order.instrument_id
                and (position.is_long != order.is_buy) and order.quantity <= position.quantity)

    def _working_quantity(self, order: Order) -> Decimal:
        # An order pending update or cancel is both open and in flight: count it once.
        working = {
            o.client_order_id: o
            for o in self._cache.orders_open(instrument_id=order.instrument_id)
            + self._cache.orders_inflight(instrument_id=order.instrument_id)
        }
        return sum(
            (o.leaves_qty.as_decimal() for o in working.values() if o.side == order.side and not o.is_reduce_only),
            Decimal(0),
        )


def hedging(routing_map: dict, venue) -> bool:
    """Is the venue's account HEDGING (its OMS type, on the execution client that routes to it)?"""
    client = routing_map.get(venue)
    return client is not None and client.oms_type == OmsType.HEDGING
