"""The control socket: reads requests, hands each to the supervisor, answers every one it can.

Malformed frames, bad JSON, unknown commands, wrong types, oversized messages and floods get a
clear error where a reply is possible and never reach the supervisor's state. Each request runs as
its own task, so a `status` is answered while a `restart` is still under way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import zmq
from loguru import logger

from supervisor.control import protocol as c
from supervisor.control.server.security import Binding

MAX_IN_FLIGHT = 32

Handler = Callable[[c.Request, str | None], Awaitable[c.Reply]]  # the request, and the CURVE key it came with


class ControlServer:
    def __init__(self, bindings: list[Binding], handler: Handler):
        self._handler = handler
        self._sockets = []
        for binding in bindings:
            self._sockets.append(binding.bind(zmq.ROUTER, c.MAX_FRAME_BYTES))
        self.endpoints = [binding.endpoint for binding in bindings]
        self._in_flight: set[asyncio.Task] = set()
        self._readers = [asyncio.ensure_future(self._read(socket)) for socket in self._sockets]

    def close(self) -> None:
        for task in [*self._readers, *self._in_flight]:
            task.cancel()
        for socket in self._sockets:
            socket.close(linger=0)

    async def _read(self, socket) -> None:
        while True:
            frames = await socket.recv_multipart(copy=False)
            try:
                await self._take(socket, frames)
            except Exception:  # nothing a peer sends may end the reading
                logger.exception("control: a message could not be handled")

    async def _take(self, socket, frames) -> None:
        if len(frames) != 2:
            logger.warning("control: dropped a message of {} frames (expected identity and request)", len(frames))
            if len(frames) > 2:
                await self._send(socket, frames[0].bytes, c.error("", c.Errno.BAD_REQUEST, "expected exactly one frame per request"))
            return
        identity, frame = frames[0].bytes, frames[1]
        try:
            request = c.decode_request(frame.bytes)  # a bad one is answered here, at once, and goes no further
        except c.BadRequest as exc:
            await self._send(socket, identity, c.error(exc.request_id, exc.errno, str(exc)))
            return
        if len(self._in_flight) >= MAX_IN_FLIGHT:
            await self._send(socket, identity, c.error(request.id, c.Errno.BUSY, f"more than {MAX_IN_FLIGHT} requests in flight"))
            return
        task = asyncio.ensure_future(self._answer(socket, identity, request, _client_key(frame)))
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    async def _answer(self, socket, identity: bytes, request: c.Request, key: str | None) -> None:
        try:
            reply = await self._handler(request, key)
        except Exception as exc:  # a bug of ours: the operator gets a reason, nsup keeps serving
            logger.exception("control: {} failed", request)
            reply = c.error(request.id, c.Errno.INTERNAL, f"internal error: {type(exc).__name__}: {exc}")
        await self._send(socket, identity, reply)

    async def _send(self, socket, identity: bytes, reply: c.Reply) -> None:
        try:
            await socket.send_multipart([identity, c.encode(reply)])
        except zmq.ZMQError as exc:
            logger.warning("control: could not answer a client that left ({})", exc)


def _client_key(frame: zmq.Frame) -> str | None:
    """Over CURVE, ZAP tells who authenticated: the client's public key, which it cannot forge."""
    try:
        return frame.get("User-Id") or None
    except zmq.ZMQError:  # ipc: no ZAP, no key
        return None
