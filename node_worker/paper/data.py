"""Quotes from the paper venue's PUB socket, as NautilusTrader QuoteTicks."""

from __future__ import annotations

import asyncio

import zmq
import zmq.asyncio
from nautilus_trader.common.providers import InstrumentProvider
from nautilus_trader.live.config import LiveDataClientConfig
from nautilus_trader.live.data_client import LiveMarketDataClient
from nautilus_trader.live.factories import LiveDataClientFactory
from nautilus_trader.model.data import QuoteTick
from nautilus_trader.model.identifiers import ClientId, InstrumentId, Venue
from nautilus_trader.model.objects import Price, Quantity

from node_worker.fx_instruments import fx_instruments
from paper_venue import protocol as v


class PaperDataClientConfig(LiveDataClientConfig, frozen=True, kw_only=True):
    quotes_endpoint: str
    symbols: tuple[str, ...] = ("EUR/USD", "GBP/USD")


class PaperDataClient(LiveMarketDataClient):
    def __init__(self, loop, msgbus, cache, clock, config: PaperDataClientConfig, name: str):
        super().__init__(
            loop=loop, client_id=ClientId(name), venue=Venue(v.VENUE), msgbus=msgbus, cache=cache, clock=clock,
            instrument_provider=InstrumentProvider(),
        )
        self._config = config
        self._socket: zmq.asyncio.Socket | None = None
        self._task: asyncio.Task | None = None

    async def _connect(self) -> None:
        for instrument in fx_instruments(self._config.symbols, v.VENUE):
            self._handle_data(instrument)
        self._socket = zmq.asyncio.Context.instance().socket(zmq.SUB)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.setsockopt(zmq.SUBSCRIBE, b"")
        self._socket.connect(self._config.quotes_endpoint)
        self._task = self.create_task(self._receive())

    async def _disconnect(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._socket is not None:
            self._socket.close(linger=0)

    async def _subscribe_quote_ticks(self, command) -> None:
        pass  # the venue publishes every instrument's quotes

    async def _unsubscribe_quote_ticks(self, command) -> None:
        pass

    async def _receive(self) -> None:
        while True:
            _, payload = await self._socket.recv_multipart()
            quote = v.quote_decoder.decode(payload)
            self._handle_data(QuoteTick(
                instrument_id=InstrumentId.from_str(quote.instrument_id),
                bid_price=Price.from_str(quote.bid),
                ask_price=Price.from_str(quote.ask),
                bid_size=Quantity.from_str(quote.bid_size),
                ask_size=Quantity.from_str(quote.ask_size),
                ts_event=quote.ts,
                ts_init=self._clock.timestamp_ns(),
            ))


class PaperDataClientFactory(LiveDataClientFactory):
    @staticmethod
    def create(loop, name: str, config: PaperDataClientConfig, msgbus, cache, clock):
        for instrument in fx_instruments(config.symbols, v.VENUE):  # before the exec client connects
            cache.add_instrument(instrument)
        return PaperDataClient(loop, msgbus, cache, clock, config, name)
