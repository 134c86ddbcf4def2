"""A strategy that is in the market most of the time, so that a stop almost always finds exposure.

Per instrument: wait `flat_secs`, open a market order on a random side, hold it `hold_secs`, close.
It opens nothing while a market exit runs, and backs off when the risk engine denies an order
(trading state REDUCING or HALTED).
"""

from __future__ import annotations

import random
from decimal import Decimal

from nautilus_trader.config import StrategyConfig
from nautilus_trader.model.data import QuoteTick
from nautilus_trader.model.enums import OrderSide
from nautilus_trader.model.events import OrderDenied, OrderFilled
from nautilus_trader.model.identifiers import InstrumentId
from nautilus_trader.trading.strategy import Strategy

DENIED_BACKOFF_SECS = 5.0


class DemoStrategyConfig(StrategyConfig, frozen=True, kw_only=True):
    instrument_ids: tuple[str, ...]
    trade_size: Decimal = Decimal(100_000)
    hold_secs: float = 4.0
    flat_secs: float = 1.0
    seed: int | None = None
    side: str | None = None  # "BUY" or "SELL" every time; None: a random side each time


class DemoStrategy(Strategy):
    def __init__(self, config: DemoStrategyConfig):
        super().__init__(config)
        self._instrument_ids = [InstrumentId.from_str(i) for i in config.instrument_ids]
        self._rng = random.Random(config.seed)
        self._last_change: dict[InstrumentId, float] = {}
        self._quiet_until = 0.0

    def on_start(self) -> None:
        now = self.clock.timestamp()
        for instrument_id in self._instrument_ids:
            self._last_change[instrument_id] = now - self.config.flat_secs
            self.subscribe_quote_ticks(instrument_id)

    def on_quote_tick(self, tick: QuoteTick) -> None:
        now = self.clock.timestamp()
        instrument_id = tick.instrument_id
        if self.is_exiting() or now < self._quiet_until:
            return
        if self.cache.orders_inflight_count(instrument_id=instrument_id, strategy_id=self.id):
            return
        since = now - self._last_change[instrument_id]
        positions = self.cache.positions_open(instrument_id=instrument_id, strategy_id=self.id)
        if positions and since >= self.config.hold_secs:
            self.close_all_positions(instrument_id)
            self._last_change[instrument_id] = now
        elif not positions and since >= self.config.flat_secs:
            self._open(instrument_id)
            self._last_change[instrument_id] = now

    def _open(self, instrument_id: InstrumentId) -> None:
        instrument = self.cache.instrument(instrument_id)
        side = OrderSide[self.config.side] if self.config.side else self._rng.choice((OrderSide.BUY, OrderSide.SELL))
        order = self.order_factory.market(instrument_id, side, instrument.make_qty(self.config.trade_size))
        self.submit_order(order)

    def on_event(self, event) -> None:
        if isinstance(event, OrderDenied):
            self._quiet_until = self.clock.timestamp() + DENIED_BACKOFF_SECS

    def on_order_filled(self, event: OrderFilled) -> None:
        order = self.cache.order(event.client_order_id)
        if order is not None:  # the benchmark reads this line: order created to fill seen here
            self.log.info(f"fill latency {(event.ts_init - order.ts_init) / 1e6:.3f} ms {event.client_order_id}")
