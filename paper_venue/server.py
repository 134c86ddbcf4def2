"""The paper venue process: its accounts (paper_venue/account.py) and its market (paper_venue/market.py)
behind ZeroMQ.

A ROUTER answers every request with a Reply carrying its request_id; a request it cannot read gets
ok=False (with its request_id when that much can be read, else 0), never a crash. An Execute is
answered at once (ok means "received"; it needs a Hello for that account from that connection first,
else the error protocol.NOT_GREETED); what the venue then does with it arrives as OrderEvents, pushed
to the sessions that said Hello for the account as the order's trader (audience()): on a shared
account each node hears only of its own orders. Events pushed while no session is connected are
not queued: they are gone, and the adapter reconciles through QueryReports. A session the ROUTER can
no longer reach (or that stops reading) is forgotten at the next push; saying Hello again is
harmless. A PUB publishes, every interval, a quote per instrument, a trade now and then, and the
subscribed bars that closed; every account's resting orders are matched against each quote. Order,
trade and position ids are random (UUIDs), so a restarted venue, whose books start empty, never hands
one out again. A task of the venue that dies is logged ("venue task ... died").

Drills, switched by SetFaults while running:
- reject_orders: every order of a new Execute is rejected with "venue drill: rejecting orders".
- ack_delay_ms: a new order reaches the matching engine only that much after the node made it. Until
  then it is in flight, but known: the order reports list it as SUBMITTED, and a cancel meanwhile is
  rejected, as at a venue whose acknowledgement is late. Orders already held keep the delay they had.
- reply_delay_ms: every request is carried out at once but its Reply is sent only that much later
  (events are not delayed, so they overtake the Reply): processed, answered late. SetFaults itself is
  answered at once.
- drop_connection: after the reply, the ROUTER is closed and a new one bound on the same endpoint
  ~0.5 s later. Sessions are forgotten: a client's DEALER reconnects and must say Hello again.
- silent: no market data, no events, no replies; requests are dropped unread, as if lost on the wire.
  SetFaults is the one request still read and answered, so that SetFaults(silent=False) ends it. The
  market moves on meanwhile, and resting orders still fill: their events are lost.

And one more drill, HandTrade: someone trades on an account by hand (VenueAccount.hand_trade), a
market order. Answered at once, like SetFaults, whatever the drills; ok=False says why it makes no
sense. Seen, its events go to every session of the account, as an order from outside would (none
while silent); unseen, they are only logged, so the venue holds what the node does not know.
"""

from __future__ import annotations

import asyncio
import signal
import time
from dataclasses import dataclass, fields
from typing import NamedTuple

import msgspec
import zmq
import zmq.asyncio
from loguru import logger
from nautilus_trader.model.data import Bar, BarType, QuoteTick, TradeTick
from nautilus_trader.model.enums import OmsType
from nautilus_trader.model.events import OrderRejected

from paper_venue import protocol as v
from paper_venue.account import HAND_TRADER, HandTradeRefused, VenueAccount, orders_of
from paper_venue.codec import Undecodable, dumps, loads
from paper_venue.instruments import listings, starting_balances
from paper_venue.market import Market, UnsupportedData

DROP_SECS = 0.5
DRILL_REJECT = "venue drill: rejecting orders"
REPORT_KINDS = ("orders", "fills", "positions")


@dataclass
class Faults:
    reject_orders: bool = False
    ack_delay_ms: int = 0
    reply_delay_ms: int = 0
    silent: bool = False


class Session(NamedTuple):
    """What a ROUTER identity said Hello for."""

    account_id: str
    trader_id: str


def audience(sessions: dict[bytes, Session], account_id: str, trader_id: str, shared: bool) -> list[bytes]:
    """The sessions an order event of trader_id's on the account goes to. An account that is not shared
    is its owner's: its sessions hear of everything on it, as a real venue's account stream does. On a
    shared one, a trader hears of its own orders only, also while it is away (its node catches up by
    reconciling when it is back; another node must not take its fills for its own); a hand trade is
    nobody's, so news to every node on the account, as an order from outside is."""
    on_account = [(identity, s.trader_id) for identity, s in sessions.items() if s.account_id == account_id]
    if not shared or trader_id == HAND_TRADER.value:
        return [i for i, _ in on_account]
    return [i for i, t in on_account if t == trader_id]


class _RequestId(msgspec.Struct):
    request_id: int = 0


def _request_id(payload: bytes) -> int:
    try:
        return msgspec.json.decode(payload, type=_RequestId).request_id
    except msgspec.MsgspecError:
        return 0


class _Refused(Exception):
    """A request the venue answers with ok=False and this reason."""


def build_venue(symbols, accounts: dict[str, str], endpoint: str, quotes_endpoint: str, interval_ms: int,
                seed: int | None = None, history_secs: int = 3600, shared: frozenset[str] = frozenset()) -> Venue:
    """accounts: account id -> "NETTING" or "HEDGING"; shared: the ids of those several traders use at
    once. ValueError names what is wrong."""
    listed = listings(symbols)
    instruments = [listing.instrument for listing in listed]
    for account_id, oms in accounts.items():
        if oms not in v.OMS_TYPES:
            raise ValueError(f"account {account_id}: OMS type {oms!r} is not one of {', '.join(v.OMS_TYPES)}")
        if not account_id.startswith(f"{v.VENUE}-") or len(account_id) <= len(v.VENUE) + 1:
            raise ValueError(f"account {account_id!r}: an account id is {v.VENUE}-<name>, e.g. {v.VENUE}-001")
    balances = starting_balances(instruments)
    books = {a: VenueAccount(a, OmsType[oms], instruments, balances, a in shared) for a, oms in accounts.items()}
    market = Market(listed, seed, history_secs, time.time_ns(), start_epoch())
    return Venue(market, books, endpoint, quotes_endpoint, interval_ms)


class Venue:
    def __init__(self, market: Market, accounts: dict[str, VenueAccount], endpoint: str, quotes_endpoint: str,
                 interval_ms: int):
        self.market, self.accounts = market, accounts
        self.endpoint, self.quotes_endpoint = endpoint, quotes_endpoint
        self.interval = interval_ms / 1000
        self.faults = Faults()
        self.sessions: dict[bytes, Session] = {}  # by ROUTER identity
        self.ctx = zmq.asyncio.Context()
        self.router: zmq.asyncio.Socket | None = None
        self._tasks: set[asyncio.Task] = set()
        self._dropping: asyncio.Task | None = None

    async def run(self, stop: asyncio.Event) -> None:
        self.pub = self.ctx.socket(zmq.PUB)
        self.pub.setsockopt(zmq.LINGER, 0)
        self.pub.bind(self.quotes_endpoint)
        self._bind_router()
        self._spawn(self._ticks())
        accounts = ", ".join(f"{a} ({b.oms_type.name}{', shared' if b.shared else ''})" for a, b in self.accounts.items())
        logger.info(f"paper venue up: requests {self.endpoint}, market data {self.quotes_endpoint}; "
                    f"instruments {', '.join(str(i.id) for i in self.market.instruments)}; accounts {accounts}")
        try:
            await stop.wait()
        finally:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self.ctx.destroy(linger=0)
            logger.info("paper venue stopped")

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro, name=coro.__qualname__)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            logger.opt(exception=exc).error(f"venue task {task.get_name()} died: {exc!r}")

    async def _later(self, delay_secs: float, action) -> None:
        """Awaits action() now, or runs it in a task delay_secs from now."""
        if delay_secs > 0:
            self._spawn(self._sleep_then(delay_secs, action))
        else:
            await action()

    @staticmethod
    async def _sleep_then(delay_secs: float, action) -> None:
        await asyncio.sleep(delay_secs)
        await action()

    def _bind_router(self) -> None:
        self.router = self.ctx.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 0)
        self.router.setsockopt(zmq.ROUTER_MANDATORY, 1)  # an unroutable session is noticed, and forgotten
        self.router.setsockopt(zmq.MAXMSGSIZE, 1 << 20)
        self.router.bind(self.endpoint)
        self._receiver = self._spawn(self._receive(self.router))

    # The market --------------------------------------------------------------------------------

    async def _ticks(self) -> None:
        while True:
            now = time.time_ns()
            ticks, bars = self.market.step(now)
            for account_id, account in self.accounts.items():
                events = []
                try:
                    for quote in (t for t in ticks if isinstance(t, QuoteTick)):
                        events += account.on_quote(quote, now)
                except Exception:  # one account's failure must not stop the market
                    logger.exception(f"{account_id}: matching the market failed")
                await self._push(account_id, events)
            if not self.faults.silent:
                for data in (*ticks, *bars):
                    await self.pub.send_multipart([_topic(data), bytes(dumps(data))])
            await asyncio.sleep(self.interval)

    # Requests ----------------------------------------------------------------------------------

    async def _receive(self, router: zmq.asyncio.Socket) -> None:
        while True:
            identity, *frames = await router.recv_multipart()
            try:
                await self._serve(identity, frames)
            except Exception:
                logger.exception("a request failed")
                await self._reply(identity, v.Reply(_request_id(frames[-1]), False, error="internal error"))

    async def _serve(self, identity: bytes, frames: list[bytes]) -> None:
        try:
            if len(frames) != 1:
                raise msgspec.ValidationError(f"{len(frames)} frames, expected 1")
            request = v.request_decoder.decode(frames[0])
        except msgspec.MsgspecError as exc:
            await self._reply(identity, v.Reply(_request_id(frames[-1]), False, error=f"malformed request: {exc}"))
            return
        if isinstance(request, v.SetFaults):
            await self._set_faults(identity, request)
            return
        if isinstance(request, v.HandTrade):
            await self._hand_trade(identity, request)
            return
        if self.faults.silent:
            return
        try:
            reply, then = self._answer(identity, request)
        except (_Refused, UnsupportedData, Undecodable) as why:
            reply, then = v.Reply(request.request_id, False, error=str(why)), None
        await self._reply(identity, reply)
        if then is not None:
            await then()

    def _answer(self, identity: bytes, request: v.Request) -> tuple[v.Reply, object]:
        """The Reply, and what to do once it is sent (or None)."""
        rid, now = request.request_id, time.time_ns()
        match request:
            case v.Hello():
                account = self._account(request.account_id)
                if account.oms_type.name != request.oms_type:
                    raise _Refused(f"account {request.account_id} is {account.oms_type.name} at the venue, "
                                   f"the node expects {request.oms_type}")
                previous = account.owner
                if (why := account.claim(request.trader_id, time.monotonic())) is not None:
                    raise _Refused(why)
                if previous not in (None, request.trader_id):  # the old owner's sessions trade no more
                    logger.warning(f"account {request.account_id} passes from trader {previous} to {request.trader_id}")
                    for other in [i for i, s in self.sessions.items() if s.account_id == request.account_id]:
                        del self.sessions[other]
                session = Session(request.account_id, request.trader_id)
                if self.sessions.get(identity) != session:
                    logger.info(f"session {identity.hex()} said hello for {request.account_id} ({request.trader_id})")
                    self.sessions[identity] = session
                return v.Reply(rid, True, quotes_endpoint=self.quotes_endpoint), None
            case v.Execute():
                if identity not in self.sessions or self.sessions[identity].account_id != request.account_id:
                    raise _Refused(v.NOT_GREETED)
                command, account = loads(request.command), self._account(request.account_id)
                return v.Reply(rid, True), lambda: self._execute(request.account_id, account, command, now)
            case v.QueryReports():
                return v.Reply(rid, True, items=[dumps(r) for r in self._reports(request, now)]), None
            case v.QueryAccount():
                return v.Reply(rid, True, items=[dumps(self._account(request.account_id).account_state())]), None
            case v.QueryInstruments():
                return v.Reply(rid, True, items=[dumps(i) for i in self.market.instruments],
                               quotes_endpoint=self.quotes_endpoint), None
            case v.SubscribeBars():
                self.market.subscribe(_bar_type(request.bar_type))
                logger.info(f"publishing {request.bar_type}")
                return v.Reply(rid, True), None
            case v.UnsubscribeBars():
                self.market.unsubscribe(_bar_type(request.bar_type))
                return v.Reply(rid, True), None
            case v.RequestBars():
                bars = self.market.history(_bar_type(request.bar_type), request.start_ns, request.end_ns, request.limit)
                return v.Reply(rid, True, items=[dumps(b) for b in bars]), None
        raise _Refused(f"unknown request {type(request).__name__}")

    def _account(self, account_id: str) -> VenueAccount:
        account = self.accounts.get(account_id)
        if account is None:
            raise _Refused(f"unknown account {account_id!r}; the venue has {', '.join(self.accounts)}")
        return account

    def _reports(self, request: v.QueryReports, now: int) -> list:
        if request.kind not in REPORT_KINDS:
            raise _Refused(f"unknown report kind {request.kind!r}; one of {', '.join(REPORT_KINDS)}")
        accounts = [self._account(request.account_id)] if request.account_id else list(self.accounts.values())
        reports = []
        for account in accounts:
            if request.kind == "orders":
                reports += account.order_reports(now, request.open_only, request.instrument_id, request.client_order_id,
                                                 request.venue_order_id)
            elif request.kind == "fills":
                reports += account.fill_reports(now, request.since_ns, request.instrument_id, request.venue_order_id)
            else:
                reports += account.position_reports(now, request.instrument_id)
        return reports

    async def _execute(self, account_id: str, account: VenueAccount, command, ts: int) -> None:
        orders = orders_of(command)
        if self.faults.reject_orders and orders:
            await self._push(account_id, [account.rejected(o, DRILL_REJECT, ts) for o in orders])
        else:
            await self._push(account_id, account.execute(command, ts))

    async def _reply(self, identity: bytes, reply: v.Reply) -> None:
        """Sends a Reply now, or reply_delay_ms later; not while silent."""
        async def send() -> None:
            if not self.faults.silent:
                await self._send(identity, reply)

        await self._later(self.faults.reply_delay_ms / 1000, send)

    # Drills -------------------------------------------------------------------------------------

    async def _set_faults(self, identity: bytes, request: v.SetFaults) -> None:
        """Answered at once, whatever the drills."""
        for name in ("ack_delay_ms", "reply_delay_ms"):
            if (getattr(request, name) or 0) < 0:
                await self._send(identity, v.Reply(request.request_id, False, error=f"{name} must be >= 0"))
                return
        for name in (f.name for f in fields(Faults)):
            if getattr(request, name) is not None:
                setattr(self.faults, name, getattr(request, name))
        for account in self.accounts.values():
            account.set_ack_delay(self.faults.ack_delay_ms * 1_000_000)
        logger.warning(f"faults: {self.faults}{', dropping the connection' if request.drop_connection else ''}")
        await self._send(identity, v.Reply(request.request_id, True))
        if request.drop_connection and (self._dropping is None or self._dropping.done()):  # one drop at a time
            self._dropping = self._spawn(self._drop())

    async def _hand_trade(self, identity: bytes, request: v.HandTrade) -> None:
        """Answered at once, whatever the drills (reject_orders and ack_delay_ms are the node's); the hand
        order's events are sent only if seen."""
        try:
            account_id = request.account_id or self._only_account()
            account = self._account(account_id)
            hand, others = account.hand_trade(request.side, request.instrument_id, request.quantity, time.time_ns())
        except (_Refused, HandTradeRefused) as why:
            await self._send(identity, v.Reply(request.request_id, False, error=f"hand trade refused: {why}"))
            return
        logger.warning(f"hand trade on {account_id}: {request.side} {request.quantity} {request.instrument_id}"
                       f"{'' if request.seen else ', unseen'}")
        rejected = next((e.reason for e in hand if isinstance(e, OrderRejected)), None)
        await self._send(identity, v.Reply(request.request_id, rejected is None,
                                           error=None if rejected is None else f"hand trade rejected: {rejected}"))
        await self._push(account_id, others)  # the node's orders that came due meanwhile: it hears of them as ever
        await self._push(account_id, hand, seen=request.seen)

    def _only_account(self) -> str:
        """The account a drill that names none means: the venue's only one. With several, guessing could
        trade the wrong one."""
        if len(self.accounts) > 1:
            raise _Refused(f"the venue has accounts {', '.join(self.accounts)}: name one")
        return next(iter(self.accounts))

    async def _drop(self) -> None:
        self._receiver.cancel()
        await asyncio.sleep(0.05)  # lets the drill's reply out
        router, self.router = self.router, None
        router.close(linger=0)
        self.sessions.clear()
        await asyncio.sleep(DROP_SECS)
        while True:
            try:
                return self._bind_router()
            except zmq.ZMQError as exc:
                logger.warning(f"binding {self.endpoint} again failed ({exc}); retrying")
                await asyncio.sleep(DROP_SECS)

    # Sending ------------------------------------------------------------------------------------

    async def _push(self, account_id: str, events: list, seen: bool = True) -> None:
        """Logs the events and sends each to its audience(); unseen (the HandTrade drill), they are only
        logged: lost on the wire."""
        for event in events:
            unseen = "" if seen else " (unseen: not sent)"
            logger.info(f"{account_id} {type(event).__name__} {event.client_order_id} {_detail(event)}{unseen}")
            if seen and not self.faults.silent:
                message = v.OrderEvent(account_id, dumps(event))
                for identity in audience(self.sessions, account_id, event.trader_id.value, self.accounts[account_id].shared):
                    await self._send(identity, message)

    async def _send(self, identity: bytes, message) -> None:
        if self.router is None:
            return
        try:
            await self.router.send_multipart([identity, v.encode(message)], flags=zmq.DONTWAIT)
        except zmq.ZMQError as exc:  # gone (EHOSTUNREACH) or not reading (EAGAIN)
            if identity in self.sessions:
                logger.warning(f"session {identity.hex()} forgotten: {exc}")
                del self.sessions[identity]


def _detail(event) -> str:
    if hasattr(event, "last_qty"):
        return f"{event.order_side.name} {event.last_qty} {event.instrument_id} @ {event.last_px}"
    return getattr(event, "reason", "") or str(event.instrument_id)


def _topic(data: QuoteTick | TradeTick | Bar) -> bytes:
    if isinstance(data, Bar):
        return f"bar.{data.bar_type}".encode()
    return f"{'quote' if isinstance(data, QuoteTick) else 'trade'}.{data.instrument_id}".encode()


def _bar_type(text: str) -> BarType:
    try:
        return BarType.from_str(text)
    except Exception as exc:  # from_str raises ValueError, or a Rust panic's exception
        raise UnsupportedData(f"invalid bar type {text!r}: {exc}") from None


def start_epoch() -> str:
    """The token in this start's trade ids: the time in milliseconds, in base 36 (8 characters until 2059)."""
    n, token = time.time_ns() // 1_000_000, ""
    while n:
        n, digit = divmod(n, 36)
        token = "0123456789abcdefghijklmnopqrstuvwxyz"[digit] + token
    return token


async def serve_until_signal(venue: Venue) -> None:
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await venue.run(stop)
