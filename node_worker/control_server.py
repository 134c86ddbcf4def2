"""Serves nsup's commands on the node's own event loop.

Everything here runs as coroutines on the loop the TradingNode was built with, so every touch of the
node is already marshalled onto that loop; nothing reaches the node from a foreign thread. No
exception from one command or one heartbeat may end the serving: the node keeps trading whatever
happens here, so nsup must keep hearing from it.
"""

from __future__ import annotations

import asyncio
import os
import time

import zmq
import zmq.asyncio
from loguru import logger
from nautilus_trader.live.node import TradingNode
from nautilus_trader.model.enums import TradingState

from node_worker.closer import RECONCILE_TIMEOUT_SECS, close_everything, users_strategies
from node_worker.component_watch import ComponentWatch
from node_worker.entry_gate import EntryGate
from node_worker.faults import FaultWatch
from node_worker.log_pipe import LogPipe
from node_worker.node_status import read_status
from node_worker.shutdown_guard import ShutdownGuard
from node_worker.venue_check import venue_counts
from supervisor import protocol as p
from supervisor.lease import refused_by_worker

RUN_POLL_SECS = 0.01
SUPERVISOR_LOST_AFTER_BEATS = 5
# A worker whose node never ran has nothing to protect (it never connected to a venue): with no word
# from nsup this long after its hello, nsup died while starting it (killed between spawning it and
# putting it on record, so no new nsup can know it), and the worker ends itself, freeing the node's lock.
ORPHANED_BEFORE_RUN_AFTER_BEATS = 10


class ControlServer:
    def __init__(self, node: TradingNode, endpoint: str, heartbeat_secs: float, reduce_after_supervisor_lost_secs: float = 0,
                 log: LogPipe | None = None):
        self._node = node
        self._log = log  # worker.log's writer: whether the log is being kept goes into the status
        self._log_problem: str | None = None
        self._endpoint = endpoint
        self._heartbeat_secs = heartbeat_secs
        self._reduce_after_supervisor_lost_secs = reduce_after_supervisor_lost_secs  # 0: never
        self._last_supervisor: float | None = None  # loop time of the supervisor's last message
        self._said_hello_at = 0.0  # loop time
        self._supervisor_lost_at: float | None = None
        self._socket: zmq.asyncio.Socket | None = None
        self._run_task: asyncio.Task | None = None
        self._stop_task: asyncio.Task | None = None
        self._stopped = asyncio.Event()
        EntryGate(node).install()
        self._faults = FaultWatch(node.kernel.msgbus, node.get_event_loop(), self.notice)
        self._components = ComponentWatch(node.kernel.msgbus, node.get_event_loop(), self._component_changed)
        self._shutdown_guard = ShutdownGuard(node, self._node_asks_to_stop)
        self._answering: set[asyncio.Task] = set()  # requests being answered (strong references)
        self._fence = 0  # the newest lease token seen (supervisor/lease.py): older ones are another nsup's past
        self._lease_until = 0.0  # until when its holder's lease holds (CLOCK_MONOTONIC, shared with nsup); 0: none
        self._lease_timer: asyncio.TimerHandle | None = None

    async def serve(self) -> None:
        """Runs until the supervisor's StopNode has been carried out (or has failed: either way the
        node is stopped as far as it will go, and the process may exit)."""
        ctx = zmq.asyncio.Context.instance()
        self._socket = ctx.socket(zmq.DEALER)
        self._socket.setsockopt(zmq.LINGER, 2000)
        # Reconnect with backoff (the Paranoid Pirate's): 100 ms, doubling, to 2 s while nsup is away.
        self._socket.setsockopt(zmq.RECONNECT_IVL, 100)
        self._socket.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
        self._socket.connect(self._endpoint)
        await self._send(p.Hello(p.PROTOCOL_VERSION, os.getpid(), str(self._node.trader_id), self._status()))
        self._said_hello_at = asyncio.get_running_loop().time()
        tasks = [asyncio.ensure_future(self._heartbeat()), asyncio.ensure_future(self._receive())]
        await self._stopped.wait()
        for task in tasks:
            task.cancel()
        self._socket.close(linger=2000)

    def _status(self, venues=None, unavailable=None):
        return read_status(self._node, venues, self._faults.recent(), unavailable,
                           self._log.describe() if self._log else None, self._components.troubled(),
                           self._components.heard())

    def _component_changed(self, component: str, component_type: str, source: str, dest: str) -> None:
        """On the loop (ComponentWatch marshals it): into or out of DEGRADED or FAULTED, told at once."""
        logger.warning("component {} ({}): {} -> {}", component, component_type, source, dest)
        asyncio.ensure_future(self._send(p.ComponentStateChange(component, component_type, source, dest)))

    def _watch_log(self) -> None:
        """A log that cannot be written is news for nsup's record (the node trades on regardless)."""
        problem = self._log.problem if self._log else None
        if (problem is None) != (self._log_problem is None):
            self.notice(f"worker.log cannot be written ({problem}): its lines are dropped, counted, until it can be; "
                        "the node trades on" if problem else "worker.log is written again")
        self._log_problem = problem

    def notice(self, text: str) -> None:
        logger.warning(text)
        asyncio.ensure_future(self._send(p.Notice(text)))

    async def _send(self, message) -> None:
        await self._socket.send(p.encode(message))

    def _node_asks_to_stop(self, component: str, reason: str) -> None:
        """The node wanted to stop itself: nsup is asked instead (from any thread: timers run on Rust's)."""
        request = p.StopRequested(component=component, reason=reason)
        self._node.get_event_loop().call_soon_threadsafe(lambda: asyncio.ensure_future(self._send(request)))

    async def _heartbeat(self) -> None:
        while True:
            try:
                await self._send(p.Heartbeat(self._status(), os.getpid()))
                self._miss_supervisor()
                self._watch_log()
            except Exception:
                logger.exception("heartbeat failed; trying again next beat")
            await asyncio.sleep(self._heartbeat_secs)

    def _heard_supervisor(self) -> None:
        if self._supervisor_lost_at is not None:
            lost_for = asyncio.get_running_loop().time() - self._supervisor_lost_at
            self.notice(f"the supervisor is back after {lost_for:.1f}s; trading state {self._status().trading_state}")
        self._last_supervisor, self._supervisor_lost_at = asyncio.get_running_loop().time(), None

    def _miss_supervisor(self) -> None:
        """No supervisor for a while: say so, keep trading as told (nsup re-attaches when it is back);
        after the configured grace, go closing-only, so nothing new opens with nobody watching. A
        worker whose node never ran ends itself instead (ORPHANED_BEFORE_RUN_AFTER_BEATS)."""
        now = asyncio.get_running_loop().time()
        silent_for = now - (self._last_supervisor or self._said_hello_at)
        if self._run_task is None and self._stop_task is None and silent_for >= ORPHANED_BEFORE_RUN_AFTER_BEATS * self._heartbeat_secs:
            logger.warning("no word from nsup for {:.1f}s and the node never ran: nothing to protect; the worker "
                           "ends itself, so that a new nsup can start the node", silent_for)
            self._stopped.set()
            return
        if self._last_supervisor is None or silent_for < SUPERVISOR_LOST_AFTER_BEATS * self._heartbeat_secs:
            return
        if self._supervisor_lost_at is None:
            self._supervisor_lost_at = self._last_supervisor
            logger.warning("no heartbeat from the supervisor for {:.1f}s: the node trades on, unsupervised",
                           now - self._last_supervisor)
        grace = self._reduce_after_supervisor_lost_secs
        trading_state = self._node.kernel.risk_engine.trading_state
        if grace and now - self._supervisor_lost_at >= grace and trading_state == TradingState.ACTIVE:
            self._node.kernel.risk_engine.set_trading_state(TradingState.REDUCING)
            logger.warning("no supervisor for {:.0f}s: trading state set to REDUCING (closing orders only)", grace)

    async def _receive(self) -> None:
        while True:
            frame = await self._socket.recv()
            try:
                request = p.decode_from_supervisor(frame)
            except p.ProtocolError as exc:
                logger.error("refused a frame from the supervisor: {}", exc)
                continue  # no request id to answer to
            if request.fence >= self._fence:
                self._heard_supervisor()  # a stale nsup is not our supervisor: its silence is the news
                self._newest_lease(request.fence, request.lease_until)
            if isinstance(request, p.Ping):
                continue
            # Each request is answered by a task of its own: a long one (RunNode, CloseAll) must not keep
            # this loop from hearing nsup's heartbeats, or the worker would think nsup gone.
            answering = asyncio.ensure_future(self._answer(request))
            self._answering.add(answering)
            answering.add_done_callback(self._answering.discard)

    async def _answer(self, request: p.Request) -> None:
        try:
            await self._send(await self._handle(request))
        except Exception:
            logger.exception("could not answer request {}", request.request_id)

    def _newest_lease(self, fence: int, lease_until: float) -> None:
        """The newest holder's token and deadline, from every message it sends; past the deadline with
        no word of a renewal, the node goes closing-only by itself (`_lease_expired`)."""
        if fence > self._fence and self._fence:
            self.notice(f"lease token {fence} now (was {self._fence}): commands with an older token are refused")
        if fence > self._fence or lease_until > self._lease_until:
            self._fence, self._lease_until = fence, lease_until
            self._arm_lease_timer()

    def _arm_lease_timer(self) -> None:
        if self._lease_timer is not None:
            self._lease_timer.cancel()
        if self._lease_until:
            self._lease_timer = asyncio.get_running_loop().call_later(
                max(0.0, self._lease_until - time.monotonic()), self._lease_expired)

    def _lease_expired(self) -> None:
        """No word of a renewal by the deadline: nsup's lease may be another's by now (nsup frozen, cut off
        from Redis), so nothing new opens here until nsup, holding the lease again, says ACTIVE."""
        if time.monotonic() < self._lease_until:  # the loop's timers may fire early (uvloop's are whole ms)
            self._arm_lease_timer()
            return
        risk_engine = self._node.kernel.risk_engine
        if risk_engine.trading_state == TradingState.ACTIVE:
            risk_engine.set_trading_state(TradingState.REDUCING)
            self.notice(f"nsup's lease (token {self._fence}) expired with no word of a renewal: trading state set to "
                        "REDUCING (closing orders only) until nsup, holding the lease again, says otherwise")

    async def _handle(self, request: p.Request) -> p.Reply:
        command = request.command
        refusal = refused_by_worker(self._fence, request.fence, request.lease_until, time.monotonic(), p.opens_trading(command))
        if refusal:  # checked as it is answered: a newer token may have come since
            logger.error("refused {}: {}", command, refusal)
            return p.Reply(request.request_id, ok=False, status=self._status(), error=refusal, code=p.ErrorCode.FENCED)
        logger.info("command {}", command)
        venues, unavailable, actions, error = None, None, [], None
        try:
            match command:
                case p.CheckVenues():
                    venues, unavailable = await venue_counts(self._node)
                case p.CloseAll():
                    actions = await close_everything(self._node)
                    for action in actions:
                        logger.warning("nsup's closer: {}", action)
                case _:
                    error = await self._execute(command)
        except Exception as exc:  # the node or a venue raised: answer, do not die
            logger.exception("command {} failed", command)
            error = f"{type(exc).__name__}: {exc}"
        status = self._status(venues, unavailable)
        if error is None:
            return p.Reply(request.request_id, ok=True, status=status, actions=actions)
        return p.Reply(request.request_id, ok=False, status=status, error=error, code=p.ErrorCode.NODE_ERROR)

    async def _execute(self, command: p.Command) -> str | None:
        """Carries out one command; returns None when done, or why it could not be."""
        match command:
            case p.GetStatus():
                return None
            case p.RunNode(timeout_secs=timeout):
                return await self._run_node(timeout)
            case p.SetTradingState(trading_state=name):
                if name not in TradingState.__members__:
                    return f"unknown trading state {name!r}"
                self._node.kernel.risk_engine.set_trading_state(TradingState[name])
                return None
            case p.MarketExit():
                for strategy in users_strategies(self._node):
                    strategy.market_exit()
                return None
            case p.Reconcile():
                reconciled = await self._node.kernel.exec_engine.reconcile_execution_state(timeout_secs=RECONCILE_TIMEOUT_SECS)
                return None if reconciled else "reconciliation with the venues did not complete; see worker.log"
            case p.StopNode(require_flat=require_flat):
                return await self._begin_stop(require_flat)
        return f"unknown command {command!r}"

    async def _run_node(self, timeout: float) -> str | None:
        if self._run_task is None:
            self._run_task = asyncio.ensure_future(self._node.run_async())
        deadline = asyncio.get_running_loop().time() + timeout
        while not self._node.trader.is_running:
            if self._run_task.done():
                return self._halt_after_failed_run("the node did not start (engines not connected or reconciliation failed)")
            if asyncio.get_running_loop().time() > deadline:
                return self._halt_after_failed_run(f"the node was not RUNNING within {timeout}s")
            await asyncio.sleep(RUN_POLL_SECS)
        return None

    def _halt_after_failed_run(self, reason: str) -> str:
        # If the node comes up after all, it must not trade with nobody managing it.
        self._node.kernel.risk_engine.set_trading_state(TradingState.HALTED)
        return f"{reason}; trading state set to HALTED; see worker.log"

    async def _begin_stop(self, require_flat: bool) -> str | None:
        if self._stop_task is not None:
            return None  # already stopping: a repeated StopNode is answered, not carried out twice
        risk_engine = self._node.kernel.risk_engine
        if require_flat:
            # HALTED first, then the check: nothing can open after it. A cache that still shows
            # positions with nothing open is judged by the venues (a disagreement, not exposure).
            before = risk_engine.trading_state
            risk_engine.set_trading_state(TradingState.HALTED)
            status = self._status()
            if not status.is_flat() and status.is_settled():
                venues, unavailable = await venue_counts(self._node)
                status = self._status(venues, unavailable)
            if not (status.is_flat() or (status.is_settled() and status.venue_says_flat())):
                risk_engine.set_trading_state(before)
                return "refused to stop: not flat, and no operator approval"
        self._stop_task = asyncio.ensure_future(self._stop_node())
        return None

    async def _stop_node(self) -> None:
        """Runs beside the receive loop, so that status requests are still answered while stopping."""
        try:
            logger.info("stopping the node")
            with self._shutdown_guard.allowed():
                await self._node.stop_async()
            if self._run_task is not None:
                await asyncio.wait([self._run_task], timeout=5)
        except Exception:
            logger.exception("stopping the node failed; exiting anyway, as nsup asked")
        finally:
            self._stopped.set()
