"""Market data from the paper venue: its instruments, quotes, trades and bars, live and historical.

The venue publishes every instrument's quotes and trades, so subscribing to them asks the venue
nothing. Bars are the venue's own (time bars of BID, ASK, MID or LAST): subscribing asks it to
publish a bar type, and a request for bars answers from its history, so a strategy that warms up
with `request_bars` trades at its first live bar. What the venue does not serve (order books, tick
history, other bar types) is answered, where NautilusTrader lets a client answer, with an empty
response whose params carry the "error", and always reported to nsup as a fault.
"""

from __future__ import annotations

import asyncio

import zmq
import zmq.asyncio
from nautilus_trader.common.providers import InstrumentProvider
from nautilus_trader.live.config import LiveDataClientConfig
from nautilus_trader.live.data_client import LiveMarketDataClient
from nautilus_trader.live.factories import LiveDataClientFactory
from nautilus_trader.model.identifiers import ClientId, Venue

from node_worker.faults import report_fault
from node_worker.paper.venue_link import VenueError, VenueLink
from paper_venue import protocol as v
from paper_venue.codec import Undecodable, loads


class PaperDataClientConfig(LiveDataClientConfig, frozen=True, kw_only=True):
    endpoint: str  # the venue's request endpoint
    quotes_endpoint: str | None = None  # its market data; None: where the venue says it publishes
    request_timeout_secs: float = 5.0


class PaperDataClient(LiveMarketDataClient):
    def __init__(self, loop, msgbus, cache, clock, config: PaperDataClientConfig, name: str):
        super().__init__(
            loop=loop, client_id=ClientId(name), venue=Venue(v.VENUE), msgbus=msgbus, cache=cache, clock=clock,
            instrument_provider=InstrumentProvider(),
        )
        self._config = config
        self._link = VenueLink(config.endpoint, None, lambda _: None, self._log, config.request_timeout_secs)
        self._socket: zmq.asyncio.Socket | None = None
        self._task: asyncio.Task | None = None

    async def _connect(self) -> None:
        await self._link.connect()
        reply = await self._link.request(lambda i: v.QueryInstruments(request_id=i))
        for instrument in map(loads, reply.items or []):
            self._instrument_provider.add(instrument)
            self._handle_data(instrument)
        self._socket = zmq.asyncio.Context.instance().socket(zmq.SUB)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.setsockopt(zmq.SUBSCRIBE, b"")
        self._socket.connect(self._config.quotes_endpoint or reply.quotes_endpoint)
        self._task = self.create_task(self._receive())

    async def _disconnect(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._socket is not None:
            self._socket.close(linger=0)
        await self._link.close()

    async def _receive(self) -> None:
        while True:
            topic, payload = await self._socket.recv_multipart()
            try:
                self._handle_data(loads(payload))
            except Undecodable as exc:
                self._fault(f"unreadable market data on {topic!r}: {exc}")

    # Subscriptions: quotes and trades flow anyway; bars are asked for ------------------------------

    async def _subscribe_instruments(self, command) -> None:
        pass  # the venue's whole list was loaded at connect

    async def _subscribe_instrument(self, command) -> None:
        self._check_listed(command.instrument_id)

    async def _subscribe_quote_ticks(self, command) -> None:
        self._check_listed(command.instrument_id)

    async def _subscribe_trade_ticks(self, command) -> None:
        self._check_listed(command.instrument_id)

    async def _subscribe_bars(self, command) -> None:
        try:
            await self._link.request(lambda i: v.SubscribeBars(request_id=i, bar_type=str(command.bar_type)))
        except VenueError as exc:
            self._fault(f"no {command.bar_type} bars: {exc}")

    async def _unsubscribe_bars(self, command) -> None:
        await self._link.request(lambda i: v.UnsubscribeBars(request_id=i, bar_type=str(command.bar_type)))

    async def _unsubscribe_instruments(self, command) -> None:
        pass

    _unsubscribe_instrument = _unsubscribe_quote_ticks = _unsubscribe_trade_ticks = _unsubscribe_instruments

    def _check_listed(self, instrument_id) -> None:
        if self._instrument_provider.find(instrument_id) is None:
            self._fault(f"{instrument_id} is not listed at the paper venue (it lists "
                        f"{', '.join(str(i.id) for i in self._instrument_provider.list_all())})")

    # Requests --------------------------------------------------------------------------------------

    async def _request_bars(self, request) -> None:
        bars, error = [], None
        try:
            reply = await self._link.request(lambda i: v.RequestBars(
                request_id=i, bar_type=str(request.bar_type), limit=request.limit or 0,
                start_ns=request.start.value if request.start is not None else None,
                end_ns=request.end.value if request.end is not None else None,
            ))
            bars = [loads(b) for b in reply.items or []]
        except VenueError as exc:
            error = f"no {request.bar_type} bar history: {exc}"
            self._fault(error)
        self._handle_bars(request.bar_type, bars, request.id, request.start, request.end, _params(request, error))

    async def _request_instrument(self, request) -> None:
        instrument = self._instrument_provider.find(request.instrument_id)
        if instrument is None:
            await self._refuse_request(request, f"{request.instrument_id} is not listed at the paper venue")
        else:
            self._handle_instrument(instrument, request.id, request.start, request.end, _params(request, None))

    async def _request_instruments(self, request) -> None:
        self._handle_instruments(request.venue, self._instrument_provider.list_all(), request.id, request.start,
                                 request.end, _params(request, None))

    async def _refuse_request(self, request, error: str | None = None) -> None:
        error = error or f"the paper venue does not serve {request.data_type.type.__name__} history"
        self._fault(error)
        self._handle_data_response(request.data_type, [], request.id, getattr(request, "start", None),
                                   getattr(request, "end", None), _params(request, error))

    _request_quote_ticks = _request_trade_ticks = _request_funding_rates = _refuse_request
    _request_order_book_deltas = _request_order_book_depth = _request_order_book_snapshot = _refuse_request

    # Faults: anything this client cannot do reaches nsup, not only the log ------------------------

    def _fault(self, text: str) -> None:
        self._log.error(text)
        report_fault(self._msgbus, f"{self.id}: {text}")

    def _handle_completion(self, coro_name, actions, success_msg, success_color, exception=None) -> None:
        super()._handle_completion(coro_name, actions, success_msg, success_color, exception)
        if isinstance(exception, NotImplementedError):
            self._fault(f"the paper venue does not support {coro_name}")
        elif exception is not None:
            self._fault(f"{coro_name} failed: {type(exception).__name__}: {exception}")


def _params(request, error: str | None) -> dict:
    return {**(request.params or {}), **({"error": error} if error else {})}


class PaperDataClientFactory(LiveDataClientFactory):
    @staticmethod
    def create(loop, name: str, config: PaperDataClientConfig, msgbus, cache, clock):
        return PaperDataClient(loop, msgbus, cache, clock, config, name)
