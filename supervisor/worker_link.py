"""The supervisor's end of the worker link: a ZMQ ROUTER that the worker's DEALER connects to.

It owns the conversation with one worker (a session's: each worker gets a link, and a socket, of its
own), not the decisions: it matches replies to requests, keeps the last status and when it was
heard, and hands what the worker says unasked to whoever listens. It never sends StopNode on its own;
supervisor.stop_gate does, through `request`. Nothing a peer sends can end its reading.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import Callable

import zmq
import zmq.asyncio
from loguru import logger

from supervisor import protocol as p


class LinkError(RuntimeError):
    """A request that could not be carried out."""


class NoAnswer(LinkError):
    """The worker did not answer in time: hung, busy, or gone."""


class WorkerRefused(LinkError):
    """The worker answered, and said it could not."""


class WorkerLink:
    def __init__(self, endpoint: str, on_said: Callable[[p.Said], None],
                 on_status: Callable[[p.NodeStatus, bool], None], adopt_pid: int | None = None,
                 fence: Callable[[], tuple[int, float]] = lambda: (0, 0.0)):
        """`on_said(message)` hears what the worker says unasked (a notice, a stop it asks for, a
        component's change of state);
        `on_status(status, is_heartbeat)` hears every status: heartbeats and replies alike.
        `adopt_pid`: the worker of an earlier nsup, whose first heartbeat (carrying this pid) stands
        for a hello; None for a new worker, which says hello first. `fence()`: the lease's token and
        deadline that every request and ping carries (supervisor/lease.py; 0s without a lease)."""
        self.endpoint = endpoint
        self._fence = fence
        self._on_said = on_said
        self._on_status = on_status
        self._socket = zmq.asyncio.Context.instance().socket(zmq.ROUTER)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.setsockopt(zmq.ROUTER_MANDATORY, 1)  # a send to a vanished worker raises, not drops
        self._socket.setsockopt(zmq.MAXMSGSIZE, p.MAX_FRAME_BYTES)
        self._socket.bind(endpoint)
        os.chmod(endpoint.removeprefix("ipc://"), 0o600)  # only nsup's own user may pose as the worker
        self._request_ids = itertools.count(1)
        self._pending: dict[int, tuple[str, asyncio.Future[p.Reply]]] = {}
        self.hello: asyncio.Future[p.Hello] = asyncio.get_running_loop().create_future()
        self._worker_identity: bytes | None = None
        self.last_status: p.NodeStatus | None = None
        self.last_heard: float | None = None  # time.monotonic() of the worker's last message
        self.build_failure: str | None = None  # the worker's own account, if it could not build
        self._adopt_pid = adopt_pid
        self._reader = asyncio.ensure_future(self._read())

    async def request(self, command: p.Command, timeout: float) -> p.Reply:
        """Send one command and wait for its reply; NoAnswer on silence, WorkerRefused on a refusal."""
        tag = command.__struct_config__.tag
        if self._worker_identity is None:
            raise NoAnswer(f"{tag}: no worker has said hello")
        request_id = next(self._request_ids)
        future = asyncio.get_running_loop().create_future()
        self._pending[request_id] = (tag, future)
        try:
            await self._socket.send_multipart([self._worker_identity, p.encode(p.Request(request_id, command, *self._fence()))])
            reply = await asyncio.wait_for(future, timeout)
        except (TimeoutError, zmq.ZMQError) as exc:
            raise NoAnswer(f"{tag}: no reply within {timeout:g}s ({type(exc).__name__})") from None
        finally:
            self._pending.pop(request_id, None)
        if not reply.ok:
            raise WorkerRefused(f"{tag}: the worker refused: {reply.error}")
        return reply

    async def ping(self) -> None:
        """nsup's side of the heartbeat (Paranoid Pirate: both ways); nothing if no worker is known."""
        if self._worker_identity is not None:
            try:
                await self._socket.send_multipart([self._worker_identity, p.encode(p.Ping(*self._fence()))])
            except zmq.ZMQError:
                pass  # the worker is gone: its exit is seen through the pidfd

    def close(self) -> None:
        if self.hello.done() and not self.hello.cancelled():
            self.hello.exception()  # retrieved: a build failure is already on record
        self._reader.cancel()
        self._socket.close(linger=0)

    async def _read(self) -> None:
        while True:
            frames = await self._socket.recv_multipart()
            try:
                identity, frame = frames
                message = p.decode_from_worker(frame)
            except (ValueError, p.ProtocolError) as exc:
                logger.error("dropped an unreadable message on the worker link: {}", exc)
                continue
            if self._worker_identity is not None and identity != self._worker_identity:
                logger.error("dropped a {} from a peer that is not our worker", type(message).__name__)
                continue
            if self._worker_identity is None and isinstance(message, p.Heartbeat) and message.pid != self._adopt_pid:
                continue  # not yet ours: a new worker says hello first; an adopted one is known by pid
            self.last_heard = time.monotonic()
            try:
                self._dispatch(identity, message)
            except Exception:
                logger.exception("handling a {} from the worker failed", type(message).__name__)

    def _dispatch(self, identity: bytes, message: p.WorkerMessage) -> None:
        match message:
            case p.Hello() if self._worker_identity is None:
                self._worker_identity = identity
                self._take_status(message.status)
                if not self.hello.done():
                    self.hello.set_result(message)
            case p.BuildFailed():
                self.build_failure = f"the worker could not build the node: {message.reason}"
                if not self.hello.done():
                    self.hello.set_exception(LinkError(self.build_failure))
            case p.Heartbeat(status=status, pid=pid) if self._worker_identity is None and pid == self._adopt_pid:
                self._worker_identity = identity
                self._take_status(status, is_heartbeat=True)
                if not self.hello.done():
                    self.hello.set_result(p.Hello(p.PROTOCOL_VERSION, pid, "", status))
            case p.Heartbeat(status=status) if self._worker_identity is not None:
                self._take_status(status, is_heartbeat=True)
            case p.Reply(request_id=request_id):
                if message.status is not None:
                    self._take_status(message.status)
                tag, future = self._pending.get(request_id, (None, None))
                if future is None:
                    logger.warning("a late reply to request {} arrived after its timeout (ok={})", request_id, message.ok)
                elif not future.done():
                    future.set_result(message)
            case p.Notice() | p.StopRequested() | p.ComponentStateChange():
                self._on_said(message)
            case _:
                logger.warning("ignored an unexpected {} from the worker", type(message).__name__)

    def _take_status(self, status: p.NodeStatus, is_heartbeat: bool = False) -> None:
        self.last_status = status
        self._on_status(status, is_heartbeat)
