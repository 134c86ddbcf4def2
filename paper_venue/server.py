"""The paper venue process: the books of paper_venue.book behind ZeroMQ, and the random walk.

A ROUTER answers every request with a Reply carrying its request_id; a request it cannot read gets
ok=False (with its request_id when that much can be read, else 0), never a crash. Submit, Cancel and
Modify are answered at once (ok means "received", and needs a Hello from that connection first, else
the error protocol.NOT_GREETED); what the venue then does with them arrives as events, pushed to every
session that said Hello for the account. Events pushed while no session is connected are not queued:
they are gone, and the adapter reconciles through QueryOrders, QueryFills and QueryPositions. A
session the ROUTER can no longer reach (or that stops reading) is forgotten at the next push; saying
Hello again is harmless. A PUB publishes a Quote per instrument every interval (frames: the
instrument id, the Quote), and resting orders are matched against each one. Order and trade ids
carry the venue's start time (book.py), so a restarted venue, whose books start empty, never hands
out an id again. A task of the venue that dies is logged ("venue task ... died").

Drills, switched by SetFaults while running:
- reject_orders: every new Submit is rejected with "venue drill: rejecting orders".
- ack_delay_ms: a new Submit is carried out (accepted, filled, rejected) only that much later. Until
  then the order is in flight, but known: QueryOrders lists it as SUBMITTED (with its venue order id,
  its ts fields the time it was received), and a Cancel cancels it (OrderCanceled) so that it is
  never carried out.
- reply_delay_ms: every request is carried out at once but its Reply is sent only that much later
  (events are not delayed, so they overtake the Reply): processed, answered late. SetFaults itself is
  answered at once.
- drop_connection: after the reply, the ROUTER is closed and a new one bound on the same endpoint
  ~0.5 s later. Sessions are forgotten: a client's DEALER reconnects and must say Hello again.
- silent: no quotes, no events, no replies; requests are dropped unread, as if lost on the wire.
  SetFaults is the one request still read and answered, so that SetFaults(silent=False) ends it. The
  market moves on meanwhile, and resting orders still fill: their events are lost.
- HandTrade: someone trades on the account by hand, a market order at the touch (answered at once,
  whatever the other drills); `seen=False` loses its events, so the venue holds what no node knows.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, fields
from pathlib import Path

import msgspec
import zmq
import zmq.asyncio
from loguru import logger

from paper_venue import protocol as v
from paper_venue.book import TICK, Book
from paper_venue.launcher import endpoints_in

DROP_SECS = 0.5
DRILL_REJECT = "venue drill: rejecting orders"


class RandomWalk:
    """The synthetic feed's walk: the mid moves -1, 0 or +1 tick, the half-spread is 1 or 2 ticks."""

    def __init__(self, instruments: list[str], seed: int | None):
        self._rng = random.Random(seed)
        self._mids = {i: 110_000 + 10_000 * n for n, i in enumerate(instruments)}  # in ticks: 1.1, 1.2, ...

    def step(self, instrument_id: str, ts: int) -> v.Quote:
        mid = self._mids[instrument_id] = self._mids[instrument_id] + self._rng.choice((-1, 0, 1))
        half = self._rng.choice((1, 2))
        bid, ask = f"{(mid - half) * TICK:.5f}", f"{(mid + half) * TICK:.5f}"
        return v.Quote(instrument_id, bid, ask, "1000000", "1000000", ts)


@dataclass
class Faults:
    reject_orders: bool = False
    ack_delay_ms: int = 0
    reply_delay_ms: int = 0
    silent: bool = False


class _RequestId(msgspec.Struct):
    request_id: int = 0


def _request_id(payload: bytes) -> int:
    try:
        return msgspec.json.decode(payload, type=_RequestId).request_id
    except msgspec.MsgspecError:
        return 0


class Venue:
    def __init__(self, book: Book, account: str, endpoint: str, quotes_endpoint: str, interval_ms: int, seed=None):
        self.book, self.account, self.endpoint, self.quotes_endpoint = book, account, endpoint, quotes_endpoint
        self.interval = interval_ms / 1000
        self.walk = RandomWalk(book.instruments, seed)
        self.faults = Faults()
        self.sessions: set[bytes] = set()  # ROUTER identities that said Hello
        self.ctx = zmq.asyncio.Context()
        self.router: zmq.asyncio.Socket | None = None
        self._tasks: set[asyncio.Task] = set()
        self._dropping: asyncio.Task | None = None
        self._hand_trades = 0

    async def run(self, stop: asyncio.Event) -> None:
        self.pub = self.ctx.socket(zmq.PUB)
        self.pub.setsockopt(zmq.LINGER, 0)
        self.pub.bind(self.quotes_endpoint)
        self._bind_router()
        self._spawn(self._ticks())
        logger.info(f"paper venue up: requests {self.endpoint}, quotes {self.quotes_endpoint}, account {self.account}")
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

    async def _ticks(self) -> None:
        while True:
            for instrument_id in self.book.instruments:
                quote = self.walk.step(instrument_id, time.time_ns())
                events = self.book.on_quote(quote)
                if not self.faults.silent:
                    await self.pub.send_multipart([instrument_id.encode(), v.encode(quote)])
                await self._push(events)
            await asyncio.sleep(self.interval)

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
        if self.faults.silent and not isinstance(request, v.SetFaults | v.HandTrade):
            return
        rid = request.request_id
        match request:
            case v.Hello(account_id=account) if account != self.account:
                await self._reply(identity, v.Reply(rid, False, error=f"unknown account {account!r}"))
            case v.Hello():
                if identity not in self.sessions:
                    logger.info(f"session {identity.hex()} said hello")
                    self.sessions.add(identity)
                await self._reply(identity, v.Reply(rid, True, instruments=self.book.instruments,
                                                    quotes_endpoint=self.quotes_endpoint))
            case v.Submit() | v.Cancel() | v.Modify() if identity not in self.sessions:
                await self._reply(identity, v.Reply(rid, False, error=v.NOT_GREETED))
            case v.Submit():
                await self._reply(identity, v.Reply(rid, True))
                refuse = DRILL_REJECT if self.faults.reject_orders else None
                await self._push(self.book.receive(request, time.time_ns()))
                await self._later(self.faults.ack_delay_ms / 1000,
                                  lambda: self._push(self.book.carry_out(request, time.time_ns(), refuse)))
            case v.Cancel():
                await self._reply(identity, v.Reply(rid, True))
                await self._push(self.book.cancel(request, time.time_ns()))
            case v.Modify():
                await self._reply(identity, v.Reply(rid, True))
                await self._push(self.book.modify(request, time.time_ns()))
            case v.QueryOrders(open_only=open_only, client_order_id=client_order_id):
                await self._reply(identity, v.Reply(rid, True, orders=self.book.orders(open_only, client_order_id)))
            case v.QueryFills(since_ts=since_ts):
                await self._reply(identity, v.Reply(rid, True, fills=self.book.fills(since_ts)))
            case v.QueryPositions():
                await self._reply(identity, v.Reply(rid, True, positions=self.book.positions()))
            case v.QueryAccount():
                await self._reply(identity, v.Reply(rid, True, balances=self.book.balances()))
            case v.SetFaults():
                await self._set_faults(identity, request)
            case v.HandTrade():
                await self._hand_trade(identity, request)

    async def _reply(self, identity: bytes, reply: v.Reply) -> None:
        """Sends a Reply now, or reply_delay_ms later; not while silent."""
        async def send() -> None:
            if not self.faults.silent:
                await self._send(identity, reply)

        await self._later(self.faults.reply_delay_ms / 1000, send)

    async def _set_faults(self, identity: bytes, request: v.SetFaults) -> None:
        """Answered at once, whatever the drills."""
        for name in ("ack_delay_ms", "reply_delay_ms"):
            if (getattr(request, name) or 0) < 0:
                await self._send(identity, v.Reply(request.request_id, False, error=f"{name} must be >= 0"))
                return
        for name in (f.name for f in fields(Faults)):
            if getattr(request, name) is not None:
                setattr(self.faults, name, getattr(request, name))
        logger.warning(f"faults: {self.faults}{', dropping the connection' if request.drop_connection else ''}")
        await self._send(identity, v.Reply(request.request_id, True))
        if request.drop_connection and (self._dropping is None or self._dropping.done()):  # one drop at a time
            self._dropping = self._spawn(self._drop())

    async def _hand_trade(self, identity: bytes, request: v.HandTrade) -> None:
        self._hand_trades += 1
        order = v.Submit(request_id=request.request_id, client_order_id=f"HAND-{self.book.epoch}-{self._hand_trades}",
                         strategy_id="HAND", instrument_id=request.instrument_id, side=request.side,
                         order_type="MARKET", quantity=request.quantity, time_in_force="IOC")
        events = self.book.submit(order, time.time_ns())
        refused = next((e.reason for e in events if isinstance(e, v.OrderRejected)), None)
        await self._send(identity, v.Reply(request.request_id, refused is None, error=refused))
        if request.seen:
            await self._push(events)
        else:
            logger.warning(f"hand trade {order.client_order_id} {request.side} {request.quantity} "
                           f"{request.instrument_id}: unseen, its events are not pushed")

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

    async def _push(self, events: list[v.Event]) -> None:
        for event in events:
            o = getattr(event, "order", None)
            what = f"{o.side} {o.filled_qty}/{o.quantity} {o.instrument_id} {o.status}" if o else event.reason
            logger.info(f"{type(event).__name__} {o.client_order_id if o else event.client_order_id}: {what}")
            if not self.faults.silent:
                for identity in list(self.sessions):
                    await self._send(identity, event)

    async def _send(self, identity: bytes, message) -> None:
        if self.router is None:
            return
        try:
            await self.router.send_multipart([identity, v.encode(message)], flags=zmq.DONTWAIT)
        except zmq.ZMQError as exc:  # gone (EHOSTUNREACH) or not reading (EAGAIN)
            if identity in self.sessions:
                logger.warning(f"session {identity.hex()} forgotten: {exc}")
                self.sessions.discard(identity)


def start_epoch() -> str:
    """The token in this start's ids: the time in milliseconds, in base 36 (8 characters until 2059)."""
    n, token = time.time_ns() // 1_000_000, ""
    while n:
        n, digit = divmod(n, 36)
        token = "0123456789abcdefghijklmnopqrstuvwxyz"[digit] + token
    return token


def _endpoint(text: str) -> str:
    if not (text.startswith("ipc://") or text.startswith("tcp://127.0.0.1:")):
        raise argparse.ArgumentTypeError(f"{text!r}: only ipc:// or tcp://127.0.0.1:PORT")
    return text


async def _serve_until_signal(venue: Venue) -> None:
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await venue.run(stop)


def main(argv: list[str] | None = None) -> int:
    """Runs the venue until SIGTERM or SIGINT; exit 0. A leading "serve" is allowed, a leading "drill" drills."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["drill"]:
        return drill(argv[1:])
    argv = argv[1:] if argv[:1] == ["serve"] else argv
    parser = argparse.ArgumentParser(prog="python -m paper_venue serve", description="Run the paper venue.")
    default, default_quotes = endpoints_in(Path("DIR"))
    parser.add_argument("--dir", help="where the default endpoints' ipc sockets go (default: a new temp dir)")
    parser.add_argument("--endpoint", type=_endpoint, help=f"requests (default {default})")
    parser.add_argument("--quotes-endpoint", type=_endpoint, help=f"quotes (default {default_quotes})")
    parser.add_argument("--symbols", nargs="+", default=["EUR/USD", "GBP/USD"])
    parser.add_argument("--interval-ms", type=int, default=100)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--account", default="SIM-001")
    args = parser.parse_args(argv)
    endpoint, quotes_endpoint = args.endpoint, args.quotes_endpoint
    if not (endpoint and quotes_endpoint):  # a default is wanted: it lives in DIR
        directory = Path(args.dir or tempfile.mkdtemp(prefix="paper-venue-"))
        directory.mkdir(parents=True, exist_ok=True)
        default, default_quotes = endpoints_in(directory)
        endpoint, quotes_endpoint = endpoint or default, quotes_endpoint or default_quotes
    print(f"paper venue: requests {endpoint}, quotes {quotes_endpoint}", flush=True)
    logger.remove()
    logger.add(sys.stderr, level="INFO")
    book = Book(tuple(args.symbols), epoch=start_epoch())
    venue = Venue(book, args.account, endpoint, quotes_endpoint, args.interval_ms, args.seed)
    try:
        asyncio.run(_serve_until_signal(venue))
    except zmq.ZMQError as exc:
        logger.error(f"paper venue failed: {exc}")
        return 1
    return 0


def drill(argv: list[str] | None = None) -> int:
    """Sends one SetFaults (or a HandTrade) and prints the reply. Exit 0 ok, 1 refused, 3 no answer."""
    on_off = {"on": True, "off": False}
    parser = argparse.ArgumentParser(prog="python -m paper_venue drill", description="Switch the venue's drills.")
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--reject-orders", choices=on_off)
    parser.add_argument("--ack-delay-ms", type=int)
    parser.add_argument("--reply-delay-ms", type=int)
    parser.add_argument("--drop-connection", action="store_true")
    parser.add_argument("--silent", choices=on_off)
    parser.add_argument("--hand-trade", metavar="SIDE:INSTRUMENT:QUANTITY",
                        help="trade by hand on the account instead, e.g. BUY:EUR/USD.SIM:100000")
    parser.add_argument("--unseen", action="store_true", help="with --hand-trade: its events never reach the node")
    parser.add_argument("--timeout-secs", type=float, default=5.0)
    args = parser.parse_args(argv)
    if args.hand_trade:
        side, _, rest = args.hand_trade.partition(":")
        instrument, _, quantity = rest.rpartition(":")
        if side not in ("BUY", "SELL") or not instrument or not quantity:
            parser.error("--hand-trade: expected SIDE:INSTRUMENT:QUANTITY, e.g. BUY:EUR/USD.SIM:100000")
        request = v.HandTrade(request_id=1, instrument_id=instrument, side=side, quantity=quantity, seen=not args.unseen)
    else:
        request = v.SetFaults(
            request_id=1, reject_orders=on_off.get(args.reject_orders), ack_delay_ms=args.ack_delay_ms,
            reply_delay_ms=args.reply_delay_ms, drop_connection=args.drop_connection or None,
            silent=on_off.get(args.silent),
        )
    ctx = zmq.Context()
    socket = ctx.socket(zmq.DEALER)
    socket.setsockopt(zmq.LINGER, 0)
    socket.connect(args.endpoint)
    try:
        socket.send(v.encode(request))
        if not socket.poll(int(args.timeout_secs * 1000)):
            print(f"no reply from {args.endpoint} within {args.timeout_secs:g}s", file=sys.stderr)
            return 3
        reply = v.from_venue_decoder.decode(socket.recv())
        print(v.encode(reply).decode())
        return 0 if isinstance(reply, v.Reply) and reply.ok else 1
    finally:
        ctx.destroy(linger=0)
