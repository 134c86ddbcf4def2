"""A live data client of our own: random-walk quotes for FX pairs on venue SIM, the paper venue's instruments.

It publishes every instrument's quotes whether or not anyone subscribed, because the sandbox
execution venue matches against the quotes it sees on the message bus.
"""

from __future__ import annotations

import asyncio
import random

from nautilus_trader.cache.cache import Cache
from nautilus_trader.common.component import LiveClock, MessageBus
from nautilus_trader.live.config import LiveDataClientConfig
from nautilus_trader.live.data_client import LiveMarketDataClient
from nautilus_trader.live.factories import LiveDataClientFactory
from nautilus_trader.model.data import QuoteTick
from nautilus_trader.model.identifiers import ClientId, Venue
from nautilus_trader.model.instruments import CurrencyPair
from nautilus_trader.common.providers import InstrumentProvider

from paper_venue.instruments import instruments
from paper_venue.protocol import VENUE

DEMO_VENUE = VENUE


class SyntheticFeedConfig(LiveDataClientConfig, frozen=True, kw_only=True):
    symbols: tuple[str, ...] = ("EUR/USD", "GBP/USD")
    interval_ms: int = 100
    seed: int | None = None


class SyntheticFeedClient(LiveMarketDataClient):
    def __init__(self, loop, msgbus, cache, clock, config: SyntheticFeedConfig, name: str):
        super().__init__(
            loop=loop,
            client_id=ClientId(name),
            venue=Venue(DEMO_VENUE),
            msgbus=msgbus,
            cache=cache,
            clock=clock,
            instrument_provider=InstrumentProvider(),
        )
        self._config = config
        self._instruments = instruments(config.symbols)
        self._rng = random.Random(config.seed)
        self._mids = {i.id: 1.1 + 0.1 * n for n, i in enumerate(self._instruments)}
        self._task: asyncio.Task | None = None

    async def _connect(self) -> None:
        for instrument in self._instruments:
            self._handle_data(instrument)
        self._task = self.create_task(self._publish_quotes())

    async def _disconnect(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _subscribe_quote_ticks(self, command) -> None:
        pass  # quotes flow for every instrument from the moment of connecting

    async def _unsubscribe_quote_ticks(self, command) -> None:
        pass

    async def _publish_quotes(self) -> None:
        interval = self._config.interval_ms / 1000
        while True:
            for instrument in self._instruments:
                self._handle_data(self._next_quote(instrument))
            await asyncio.sleep(interval)

    def _next_quote(self, instrument: CurrencyPair) -> QuoteTick:
        tick = float(instrument.price_increment)
        mid = self._mids[instrument.id] + self._rng.choice((-1, 0, 1)) * tick
        self._mids[instrument.id] = mid
        half_spread = tick * self._rng.choice((1, 2))
        now = self._clock.timestamp_ns()
        return QuoteTick(
            instrument_id=instrument.id,
            bid_price=instrument.make_price(mid - half_spread),
            ask_price=instrument.make_price(mid + half_spread),
            bid_size=instrument.make_qty(1_000_000),
            ask_size=instrument.make_qty(1_000_000),
            ts_event=now,
            ts_init=now,
        )


class SyntheticFeedFactory(LiveDataClientFactory):
    @staticmethod
    def create(loop, name: str, config: SyntheticFeedConfig, msgbus: MessageBus, cache: Cache, clock: LiveClock):
        # The sandbox venue loads its instruments from the cache when it connects, which may be
        # before this client has connected: put them there now.
        for instrument in instruments(config.symbols):
            cache.add_instrument(instrument)
        return SyntheticFeedClient(loop, msgbus, cache, clock, config, name)
