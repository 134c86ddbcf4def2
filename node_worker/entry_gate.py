"""Closing orders only, whenever the trading state is not ACTIVE.

NautilusTrader's own TradingState.REDUCING (1.231) denies only orders that would grow an open
position: from flat, a strategy may still open new risk. nsup's REDUCING means "no new entries", so
the worker puts this gate in front of the risk engine's endpoint. While the trading state is not
ACTIVE, a submitted order passes only if it is reduce-only, or if it and every working order on the
same side together reduce the net position by no more than its size (so no run of orders can flip
it). Denials go through the risk engine's own path: the order ends DENIED and the strategy is told.
"""

from __future__ import annotations

from decimal import Decimal

from nautilus_trader.execution.messages import SubmitOrder, SubmitOrderList
from nautilus_trader.live.node import TradingNode
from nautilus_trader.model.enums import TradingState
from nautilus_trader.model.orders import Order

RISK_ENDPOINT = "RiskEngine.execute"


class EntryGate:
    def __init__(self, node: TradingNode):
        self._risk_engine = node.kernel.risk_engine
        self._portfolio = node.portfolio
        self._cache = node.kernel.cache
        self._msgbus = node.kernel.msgbus

    def install(self) -> None:
        self._msgbus.deregister(RISK_ENDPOINT, self._risk_engine.execute)
        self._msgbus.register(RISK_ENDPOINT, self.execute)

    def execute(self, command) -> None:
        if self._risk_engine.trading_state != TradingState.ACTIVE:
            if isinstance(command, SubmitOrderList):
                orders = command.order_list.orders
            elif isinstance(command, SubmitOrder):
                orders = [command.order]
            else:
                orders = []
            opening = self._first_opening(orders)
            if opening is not None:
                self._risk_engine._deny_command(  # the engine's own denial path (cpdef)
                    command, f"nsup closing-only: {opening.side_string()} {opening.quantity} {opening.instrument_id} would open risk"
                )
                return
        self._risk_engine.execute(command)

    def _first_opening(self, orders: list[Order]) -> Order | None:
        """The first order that would open or grow risk, counting the orders before it as working."""
        pending: dict[tuple, Decimal] = {}
        for order in orders:
            if order.is_reduce_only:
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
