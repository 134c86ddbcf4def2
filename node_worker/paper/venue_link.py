"""The adapter's end of the venue connection: requests with replies, and the events the venue pushes.

A link that trades says Hello for its account at the start and every second after: it is idempotent
at the venue, keeps the account's lease, and puts the session back on the venue's list after a
dropped connection, so events flow again by themselves. A link for market data only says none.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable

import msgspec
import zmq
import zmq.asyncio

from paper_venue import protocol as v

HELLO_EVERY_SECS = 1.0


class VenueError(RuntimeError):
    """The venue answered no."""


class VenueTimeout(VenueError):
    """No answer in time: the request may still be carried out (it waits in the socket or the venue)."""


class VenueLink:
    def __init__(self, endpoint: str, hello: Callable[[int], v.Hello] | None, on_event: Callable[[v.OrderEvent], None],
                 log, timeout_secs: float):
        self._endpoint = endpoint
        self._hello = hello
        self._on_event = on_event
        self._log = log
        self._timeout_secs = timeout_secs
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future] = {}
        self._socket: zmq.asyncio.Socket | None = None
        self._tasks: list[asyncio.Task] = []

    async def connect(self) -> None:
        self._socket = zmq.asyncio.Context.instance().socket(zmq.DEALER)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.connect(self._endpoint)
        self._tasks = [asyncio.ensure_future(self._read())]
        if self._hello is not None:
            await self.request(self._hello)
            self._tasks.append(asyncio.ensure_future(self._say_hello()))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._socket is not None:
            self._socket.close(linger=0)

    async def request(self, make: Callable[[int], v.Request]) -> v.Reply:
        try:
            return await self._request_once(make)
        except VenueError as exc:
            if str(exc) != v.NOT_GREETED or self._hello is None:
                raise
        # The venue forgot this session (a dropped connection): greet it again, then ask again once.
        await self._request_once(self._hello)
        return await self._request_once(make)

    async def _request_once(self, make: Callable[[int], v.Request]) -> v.Reply:
        request_id = next(self._ids)
        future = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            await self._socket.send(v.encode(make(request_id)))
            reply = await asyncio.wait_for(future, self._timeout_secs)
        except TimeoutError:
            raise VenueTimeout(f"the venue did not answer within {self._timeout_secs:g}s") from None
        finally:
            self._pending.pop(request_id, None)
        if not reply.ok:
            raise VenueError(reply.error or "refused")
        return reply

    async def _say_hello(self) -> None:
        while True:
            await asyncio.sleep(HELLO_EVERY_SECS)
            try:
                await self.request(self._hello)
            except VenueError as exc:
                self._log.warning(f"venue hello unanswered: {exc}")

    async def _read(self) -> None:
        while True:
            frame = await self._socket.recv()
            try:
                message = v.from_venue_decoder.decode(frame)
            except msgspec.MsgspecError as exc:
                self._log.error(f"unreadable message from the venue: {exc}")
                continue
            if isinstance(message, v.Reply):
                future = self._pending.get(message.request_id)
                if future is not None and not future.done():
                    future.set_result(message)
                continue
            try:
                self._on_event(message)
            except Exception as exc:  # one bad event must not stop the others
                self._log.exception(f"handling venue event {type(message).__name__} failed", exc)
