"""The control socket: reads requests, answers every one it can, and keeps one client from crowding
out the others.

What the reader does with each message, in order, never waiting on one:
1. A message that is not [identity, one frame] is dropped (answered BAD_REQUEST if it had a frame).
2. The request is read (control/protocol.py: sizes, types, every field's limit); one that cannot be
   is answered with the error here.
3. `status` and `version` are answered here, in the reader, with no task and nothing else done: the
   socket's floor.
4. Any other request's client ("peer") is named: over tcp by its CURVE key, read from ZAP's User-Id on
   CURVE bindings only (the property raises on ipc, at about 35 us a time); over ipc by its
   connection (the ROUTER's routing id). It is BUSY if its peer already has PER_PEER_IN_FLIGHT
   requests in flight, if MAX_IN_FLIGHT are in flight in all, or if its peer has spent its
   BUDGET_PER_MINUTE (a token bucket, refilled evenly); else it runs as a task of its own, so a
   `status` is answered while a `restart` is under way.
What is refused in 1, 2 and 4 is put on record by the handler (coalesced per peer: refusals.py), so the
journal stays bounded however a client asks. ZMQ's ROUTER reads its peers in turn (fair queuing), so
a flood from one client delays another's request by about one message of its own; the reader yields
to the loop every YIELD_EVERY_SECS while a flood keeps it busy, so that nsup's own work goes on.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass
from typing import Protocol

import zmq
from loguru import logger

from supervisor.control import protocol as c
from supervisor.control.server.security import Binding

MAX_IN_FLIGHT = 32
PER_PEER_IN_FLIGHT = 4
BUDGET_PER_MINUTE = 20  # requests other than status and version, per peer
YIELD_EVERY_SECS = 0.002
CLOSE_GRACE_SECS = 1.0  # at exit, answers still being made get this long to go out
MAX_PEERS_REMEMBERED = 4096  # budgets kept; past it the full (idle) ones are forgotten


@dataclass(frozen=True)
class Peer:
    """Who sent a request, as far as the socket can tell."""

    name: str  # "key:<z85>" over tcp, "conn:<hex routing id>" over ipc
    key: str | None = None  # the CURVE public key ZAP authenticated (tcp)


class Handler(Protocol):
    def answer_now(self, request: c.Request) -> c.Reply | None: ...  # status, version; None for others
    async def handle(self, request: c.Request, peer: Peer) -> c.Reply: ...
    def refused(self, peer: Peer, command: str, errno: c.Errno, reason: str) -> None: ...  # answered here with an error


class Budget:
    """Each peer's requests that change something: `per_minute` of them, refilled evenly."""

    def __init__(self, per_minute: float, clock=time.monotonic):
        self._per_minute, self._rate, self._clock = per_minute, per_minute / 60.0, clock
        self._left: dict[str, tuple[float, float]] = {}  # peer -> (tokens, when counted)

    def spend(self, peer: str) -> float:
        """0 if the peer may go ahead (one token spent), else the seconds until it may."""
        now = self._clock()
        tokens, at = self._left.get(peer, (self._per_minute, now))
        tokens = min(self._per_minute, tokens + (now - at) * self._rate)
        if tokens < 1:
            self._left[peer] = (tokens, now)
            return (1 - tokens) / self._rate
        self._left[peer] = (tokens - 1, now)
        if len(self._left) > MAX_PEERS_REMEMBERED:
            idle = [p for p, (t, a) in self._left.items() if t + (now - a) * self._rate >= self._per_minute]
            for p in idle:
                del self._left[p]
        return 0.0


class ControlServer:
    def __init__(self, bindings: list[Binding], handler: Handler):
        self._handler = handler
        self._sockets = [(binding.bind(zmq.ROUTER, c.MAX_FRAME_BYTES), binding.curve) for binding in bindings]
        self.endpoints = [binding.endpoint for binding in bindings]
        self._in_flight: set[asyncio.Task] = set()
        self._in_flight_of: Counter[str] = Counter()
        self._budget = Budget(BUDGET_PER_MINUTE)
        self._readers = [asyncio.ensure_future(self._read(socket, curve)) for socket, curve in self._sockets]

    async def close(self, grace_secs: float = CLOSE_GRACE_SECS) -> None:
        """Stops reading; answers already being made get `grace_secs` (an abort's, as nsup ends)."""
        for task in self._readers:
            task.cancel()
        if self._in_flight:
            await asyncio.wait(self._in_flight, timeout=grace_secs)
        for task in self._in_flight:
            task.cancel()
        for socket, _ in self._sockets:
            socket.close(linger=int(grace_secs * 1000))

    async def _read(self, socket, curve: bool) -> None:
        yielded = time.monotonic()
        while True:
            frames = await socket.recv_multipart(copy=False)
            try:
                await self._take(socket, curve, frames)
            except Exception:  # nothing a peer sends may end the reading; the traceback goes on record
                logger.exception("control: a message could not be handled")
            if time.monotonic() - yielded > YIELD_EVERY_SECS:  # a flood must not keep the loop to itself
                await asyncio.sleep(0)
                yielded = time.monotonic()

    async def _take(self, socket, curve: bool, frames) -> None:
        if len(frames) != 2:  # on record (coalesced), not in the log: a flood of them must not flood it
            if len(frames) > 2:
                await self._refuse(socket, frames[0].bytes, _peer(frames[0].bytes, None), "", "", c.Errno.BAD_REQUEST,
                                   "expected exactly one frame per request")
            return
        identity, frame = frames[0].bytes, frames[1]
        try:
            request = c.decode_request(frame.bytes)
        except c.BadRequest as exc:
            peer = _peer(identity, _client_key(frame) if curve else None)
            await self._refuse(socket, identity, peer, exc.request_id, exc.command, exc.errno, str(exc))
            return
        reply = self._handler.answer_now(request)
        if reply is not None:  # status, version: no peer named, no task
            await self._send(socket, identity, reply)
            return
        peer = _peer(identity, _client_key(frame) if curve else None)
        busy = self._busy(peer)
        if busy:
            await self._refuse(socket, identity, peer, request.id, request.__struct_config__.tag, c.Errno.BUSY, busy)
            return
        task = asyncio.ensure_future(self._answer(socket, identity, request, peer))
        self._in_flight.add(task)
        self._in_flight_of[peer.name] += 1
        task.add_done_callback(lambda done: self._done(done, peer))

    def _busy(self, peer: Peer) -> str | None:
        """Why this peer's request cannot run now, or None (then one of its budget's tokens is spent)."""
        if self._in_flight_of[peer.name] >= PER_PEER_IN_FLIGHT:
            return f"this client has {PER_PEER_IN_FLIGHT} requests in flight already; wait for their answers"
        if len(self._in_flight) >= MAX_IN_FLIGHT:
            return f"more than {MAX_IN_FLIGHT} requests in flight"
        wait = self._budget.spend(peer.name)
        if wait:
            return (f"this client has sent more than {BUDGET_PER_MINUTE} requests a minute (status and version aside); "
                    f"the next is taken in {wait:.1f}s")
        return None

    def _done(self, task: asyncio.Task, peer: Peer) -> None:
        self._in_flight.discard(task)
        self._in_flight_of[peer.name] -= 1
        if not self._in_flight_of[peer.name]:
            del self._in_flight_of[peer.name]

    async def _answer(self, socket, identity: bytes, request: c.Request, peer: Peer) -> None:
        try:
            reply = await self._handler.handle(request, peer)
        except Exception as exc:  # a bug of ours: the operator gets a reason, nsup keeps serving
            logger.exception("control: {} failed", request.__struct_config__.tag)
            reply = c.error(request.id, c.Errno.INTERNAL, f"internal error: {type(exc).__name__}: {exc}")
        await self._send(socket, identity, reply)

    async def _refuse(self, socket, identity: bytes, peer: Peer, request_id: str, command: str, errno: c.Errno,
                      reason: str) -> None:
        self._handler.refused(peer, command, errno, reason)
        await self._send(socket, identity, c.error(request_id, errno, reason))

    async def _send(self, socket, identity: bytes, reply: c.Reply) -> None:
        try:
            await socket.send_multipart([identity, c.encode(reply)])
        except zmq.ZMQError as exc:
            logger.warning("control: could not answer a client that left ({})", exc)


def _peer(identity: bytes, key: str | None) -> Peer:
    return Peer(f"key:{key}", key) if key else Peer(f"conn:{identity.hex()}")


def _client_key(frame: zmq.Frame) -> str | None:
    """Over CURVE, ZAP tells who authenticated: the client's public key, which it cannot forge."""
    try:
        return frame.get("User-Id") or None
    except zmq.ZMQError:
        return None
