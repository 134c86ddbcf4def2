"""NautilusTrader's sandbox venue, with one fault an operator can rehearse: exits that keep failing."""

from __future__ import annotations

from nautilus_trader.adapters.sandbox.config import SandboxExecutionClientConfig
from nautilus_trader.adapters.sandbox.execution import SandboxExecutionClient
from nautilus_trader.adapters.sandbox import factory as nautilus_sandbox


class DemoSandboxConfig(SandboxExecutionClientConfig, frozen=True, kw_only=True):
    reject_reduce_only: bool = False  # the venue rejects every reduce-only order: no position can close


class DemoSandboxClient(SandboxExecutionClient):
    def __init__(self, *, config: DemoSandboxConfig, **kwargs):
        super().__init__(config=config, **kwargs)
        self._reject_reduce_only = config.reject_reduce_only

    def submit_order(self, command):
        order = command.order
        if self._reject_reduce_only and order.is_reduce_only:
            now = self._clock.timestamp_ns()
            self.generate_order_submitted(command.strategy_id, order.instrument_id, order.client_order_id, now)
            self.generate_order_rejected(
                command.strategy_id,
                order.instrument_id,
                order.client_order_id,
                "demo fault: venue rejects reduce-only orders",
                now,
            )
            return None
        return super().submit_order(command)


# The node builder passes the portfolio only to a factory class of exactly this name
# (nautilus_trader/live/node_builder.py, 1.231), so ours keeps it.
class SandboxLiveExecClientFactory(nautilus_sandbox.SandboxLiveExecClientFactory):
    @staticmethod
    def create(loop, name, config: DemoSandboxConfig, portfolio, msgbus, cache, clock):
        return DemoSandboxClient(
            loop=loop, clock=clock, portfolio=portfolio, msgbus=msgbus, cache=cache, config=config
        )
