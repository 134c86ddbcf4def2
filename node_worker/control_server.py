"""Serves nsup's commands on the node's own event loop.

Everything here runs as coroutines on the loop the TradingNode was built with, so every touch of the
node is already marshalled onto that loop; nothing reaches the node from a foreign thread.
"""

from __future__ import annotations

import asyncio
import os

import zmq
import zmq.asyncio
from loguru import logger
from nautilus_trader.live.node import TradingNode
from nautilus_trader.model.enums import TradingState

from node_worker.entry_gate import EntryGate
from node_worker.node_status import read_status
from supervisor import protocol as p

RUN_POLL_SECS = 0.01


class ControlServer:
    def __init__(self, node: TradingNode, endpoint: str, heartbeat_secs: float):
        self._node = node
        self._endpoint = endpoint
        self._heartbeat_secs = heartbeat_secs
        self._socket: zmq.asyncio.Socket | None = None
        self._run_task: asyncio.Task | None = None
        self._stopped = asyncio.Event()
        self._entry_gate = EntryGate(node)

    async def serve(self) -> None:
        """Runs until the supervisor's StopNode has been carried out."""
        ctx = zmq.asyncio.Context.instance()
        self._socket = ctx.socket(zmq.DEALER)
        self._socket.setsockopt(zmq.LINGER, 2000)
        self._socket.connect(self._endpoint)
        status = read_status(self._node)
        await self._send(p.Hello(p.PROTOCOL_VERSION, os.getpid(), str(self._node.trader_id), status))
        heartbeats = asyncio.ensure_future(self._heartbeat())
        receiving = asyncio.ensure_future(self._receive())
        await self._stopped.wait()
        heartbeats.cancel()
        receiving.cancel()
        self._socket.close(linger=2000)

    def notice(self, text: str) -> None:
        logger.warning(text)
        asyncio.ensure_future(self._send(p.Notice(text)))

    async def _send(self, message) -> None:
        await self._socket.send(p.encode(message))

    async def _heartbeat(self) -> None:
        while True:
            await self._send(p.Heartbeat(read_status(self._node)))
            await asyncio.sleep(self._heartbeat_secs)

    async def _receive(self) -> None:
        while True:
            frame = await self._socket.recv()
            try:
                request = p.decode_from_supervisor(frame)
            except p.ProtocolError as exc:
                logger.error("refused a frame from the supervisor: {}", exc)
                continue  # no request id to answer to
            reply = await self._handle(request)
            await self._send(reply)
            if isinstance(request.command, p.StopNode) and reply.ok:
                await self._stop_node()

    async def _handle(self, request: p.Request) -> p.Reply:
        command = request.command
        logger.info("command {}", type(command).__name__)
        try:
            error = await self._execute(command)
        except Exception as exc:  # the node raised: answer, do not die
            logger.exception("command {} failed", command)
            error = f"{type(exc).__name__}: {exc}"
        status = read_status(self._node)
        if error is None:
            return p.Reply(request.request_id, ok=True, status=status)
        return p.Reply(request.request_id, ok=False, status=status, error=error, code=p.ErrorCode.NODE_ERROR)

    async def _execute(self, command: p.Command) -> str | None:
        """Carries out one command; returns None when done, or why it could not be."""
        node = self._node
        match command:
            case p.GetStatus():
                return None
            case p.RunNode(timeout_secs=timeout):
                return await self._run_node(timeout)
            case p.SetTradingState(trading_state=name):
                if name not in ("ACTIVE", "REDUCING", "HALTED"):
                    return f"unknown trading state {name!r}"
                # Closing-only first, so no order slips through between the two.
                self._entry_gate.closing_only = name != "ACTIVE"
                node.kernel.risk_engine.set_trading_state(TradingState[name])
                return None
            case p.MarketExit():
                for strategy in node.trader.strategies():
                    strategy.market_exit()
                return None
            case p.StopNode(require_flat=require_flat):
                if require_flat and not read_status(node).is_flat():
                    return "refused to stop: not flat and no operator approval"
                return None  # carried out after the reply has gone out
        return f"unknown command {command!r}"

    async def _run_node(self, timeout: float) -> str | None:
        if self._run_task is None:
            self._run_task = asyncio.ensure_future(self._node.run_async())
        deadline = asyncio.get_running_loop().time() + timeout
        while not self._node.trader.is_running:
            if self._run_task.done():
                return "the node did not start (engines not connected or reconciliation failed); see worker.log"
            if asyncio.get_running_loop().time() > deadline:
                return f"the node was not RUNNING within {timeout}s"
            await asyncio.sleep(RUN_POLL_SECS)
        return None

    async def _stop_node(self) -> None:
        logger.info("stopping the node")
        await self._node.stop_async()
        if self._run_task is not None:
            await asyncio.wait([self._run_task], timeout=5)
        self._stopped.set()
