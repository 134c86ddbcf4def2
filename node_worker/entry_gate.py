"""Closing orders only, while nsup says REDUCING.

NautilusTrader's own TradingState.REDUCING (1.231) denies only orders that would grow an open
position: from flat, a strategy may still open new risk. nsup's REDUCING means "no new entries", so
the worker puts this gate in front of the risk engine's endpoint: while it is closed, a submitted
order passes only if it is reduce-only or reduces the current net position by no more than its size.
Denials go through the risk engine's own path, so the order ends DENIED and the strategy is told.
"""

from __future__ import annotations

from nautilus_trader.execution.messages import SubmitOrder, SubmitOrderList
from nautilus_trader.live.node import TradingNode
from nautilus_trader.model.orders import Order

RISK_ENDPOINT = "RiskEngine.execute"


class EntryGate:
    def __init__(self, node: TradingNode):
        self._risk_engine = node.kernel.risk_engine
        self._portfolio = node.portfolio
        self._msgbus = node.kernel.msgbus
        self.closing_only = False
        self._msgbus.deregister(RISK_ENDPOINT, self._risk_engine.execute)
        self._msgbus.register(RISK_ENDPOINT, self.execute)

    def execute(self, command) -> None:
        if self.closing_only:
            orders = command.order_list.orders if isinstance(command, SubmitOrderList) else (
                [command.order] if isinstance(command, SubmitOrder) else []
            )
            opening = next((o for o in orders if not self._reduces(o)), None)
            if opening is not None:
                self._risk_engine._deny_command(
                    command, f"nsup REDUCING: {opening.side_string()} {opening.quantity} {opening.instrument_id} would open risk"
                )
                return
        self._risk_engine.execute(command)

    def _reduces(self, order: Order) -> bool:
        if order.is_reduce_only:
            return True
        net = self._portfolio.net_position(order.instrument_id)  # Decimal, signed
        if order.is_buy:
            return net < 0 and order.quantity.as_decimal() <= -net
        return net > 0 and order.quantity.as_decimal() <= net
