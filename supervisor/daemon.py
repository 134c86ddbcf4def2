"""The daemon around the lifecycle: spawns the worker, drives the machine, does all the I/O.

One coroutine, `_drive`, walks the lifecycle: CREATED -> BUILT -> RUNNING -> HALTING -> FLAT ->
STOPPED, and the detours an operator asks for (resume, abort, restart). Only `_drive` moves the
machine; operators and signals put WalkRequests on its queue and wait for the answer. Anything the
worker does on its own (exit, crash) surfaces as WorkerLost wherever the walk is waiting, so no
step can miss it. A worker that falls silent is alerted on by the heartbeat watchdog and waited
for; it is never ended for being silent while it may hold positions.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from loguru import logger

from supervisor import protocol as p
from supervisor.config import NsupConfig
from supervisor.journal import Journal, count_fields
from supervisor.lifecycle import BUILT, CREATED, FLAT, HALTING, RECOVERING, RUNNING, Approval, FlatReads, Lifecycle, Outcome
from supervisor.persisted_state import PersistedState, StateStore, WorkerIdentity
from supervisor.restart_policy import RestartPolicy
from supervisor.sd_notify import SdNotifier, keep_alive, messages_for_transition, status_text
from supervisor.stop_gate import EndAction, StopGate, describe_exposure
from supervisor.worker_link import LinkError, WorkerLink
from supervisor.worker_process import WorkerProcess

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_ABORTED = 0, 1, 2, 3

FLAT_POLL_SECS = 0.05
STUCK_REMINDER_SECS = 60.0
WORKER_EXIT_TIMEOUT_SECS = 30.0
MISSED_HEARTBEATS_ALERT = 3
REFUSAL_RETRY_HEARTBEATS = 10  # a refused end is tried again this many heartbeats later


class Refused(Exception):
    """An operator request that cannot be carried out now; the message says why."""


@dataclass
class WalkRequest:
    """Something only the walk may do: halt, resume, abort or restart."""

    kind: str
    actor: str
    approval: Approval | None = None
    stops_seen: int = 0  # how many stops had been asked for when this request was made
    answer: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())

    def done(self, **data) -> None:
        if not self.answer.done():
            self.answer.set_result(data)

    def refuse(self, reason: str) -> None:
        if not self.answer.done():
            self.answer.set_exception(Refused(reason))


class WorkerLost(Exception):
    """The worker is gone (or was ended because it could not start): recovery decides what next."""

    def __init__(self, exit_code: int | None, reason: str | None = None):
        super().__init__(reason or f"worker exited with code {exit_code}")
        self.exit_code = exit_code
        self.reason = reason


class Supervisor:
    def __init__(self, config: NsupConfig, journal: Journal, carry_on_from: PersistedState | None = None,
                 state_store: StateStore | None = None):
        """`carry_on_from`: what a crashed nsup left; its worker is re-attached if it still runs.
        `state_store`: where `persist` writes (default: state.json in the state dir, no mirror)."""
        self.config = config
        self.journal = journal
        self.sd = SdNotifier.from_environment()  # before any worker is spawned: it must not inherit NOTIFY_SOCKET
        self._carry_on_from = carry_on_from
        self.state_store = state_store or config.state_store()
        self.worker_identity: WorkerIdentity | None = None
        self.status_listeners: list[Callable[[str, p.NodeStatus], None]] = []  # every status: the terminal
        self.heartbeat_listeners: list[Callable[[str, p.NodeStatus], None]] = []  # heartbeats only: events
        s = config.supervisor
        self.lifecycle = Lifecycle(s.flat_confirm_secs, self._on_transition)
        self.restart_policy = RestartPolicy(s.max_restarts, s.restart_window_secs, s.restart_backoff_secs,
                                            s.restart_backoff_max_secs, s.stable_after_secs)
        self._walk_requests: asyncio.Queue[WalkRequest] = asyncio.Queue()
        self.shutdown_requested = False
        self.stop_requests = 0  # every stop asked for, repeats included: a resume undoes only those before it
        self.shutdown_actor = ""
        self.stuck = False  # HALTING, and not flat after every round
        self.detour: str | None = None  # "restart" or "abort" while the walk carries one out
        self.hung = False  # silent past hang_after_missed_heartbeats, and not answering since
        self.health: str | None = None  # from the worker's last status: ok, waiting_for_data, feed_silent, ...
        self.paused = False  # an operator's pause: the node runs closing-only until resumed
        self.restarts = 0
        self.started_at = time.monotonic()
        self.worker_started_at: float | None = None
        self.last_transition: dict | None = None
        self._node_ever_ran = False
        self.trader_id: str | None = None
        self.link: WorkerLink | None = None
        self.process: WorkerProcess | None = None
        self.gate: StopGate | None = None

    @property
    def _answer_timeout(self) -> float:
        return max(2.0, 2 * self.config.supervisor.heartbeat_interval_secs)

    # Entry point -------------------------------------------------------------------------------

    async def run(self) -> int:
        s = self.config.supervisor
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(sig, self._on_signal, sig)
        self.link = WorkerLink(f"ipc://{s.run_path / 'worker.sock'}", self._on_notice, self._on_status)
        self.journal.record("supervisor_start", pid=os.getpid(), state=self.lifecycle.state, factory=self.config.node.factory)
        if self._carry_on_from is None:
            self._spawn_worker()
        watchdog = asyncio.ensure_future(self._watch_heartbeats())
        keepalive = asyncio.ensure_future(keep_alive(self.sd, lambda: self.lifecycle.state))
        try:
            code = await self._drive()
        finally:
            watchdog.cancel()
            keepalive.cancel()
            self.link.close()
        self.journal.record("supervisor_exit", code=code, state=self.lifecycle.state)
        return code

    def _spawn_worker(self) -> None:
        s = self.config.supervisor
        spec_file = s.run_path / "worker-spec.json"  # not on the command line: it may hold secrets
        spec_file.touch(mode=0o600)
        spec_file.write_text(json.dumps(self.config.worker_spec()))
        self.link.expect_new_worker()
        self.process = WorkerProcess.spawn(
            [
                "--link", self.link.endpoint,
                "--factory", self.config.node.factory,
                "--spec-file", str(spec_file),
                "--lock", str(self.config.worker_lock_path),
                "--heartbeat-secs", str(s.heartbeat_interval_secs),
                "--reduce-after-supervisor-lost-secs", str(s.reduce_after_supervisor_lost_secs),
            ],
            log_path=s.state_path / "worker.log",
        )
        self.worker_started_at = time.monotonic()
        self._node_ever_ran, self.hung = False, False
        self.worker_identity = WorkerIdentity.of(self.process.pid)
        self.journal.record("worker_spawned", pid=self.process.pid, log=str(s.state_path / "worker.log"))
        self.gate = StopGate(self.process, self.link, self.journal, self._answer_timeout)
        self.persist()

    def persist(self) -> None:
        self.state_store.save(PersistedState(
            state=self.lifecycle.state, worker=self.worker_identity, trader_id=self.trader_id,
            shutdown_requested=self.shutdown_requested, shutdown_actor=self.shutdown_actor, paused=self.paused,
            restarts=self.restarts,
        ))

    async def _carry_on(self, was: PersistedState) -> None:
        """After a supervisor crash: re-attach to the worker if it is still the one we spawned (pid,
        start time, command line), and go on from the state on record; if it died meanwhile, it is a
        lost worker and the restart policy applies."""
        self.lifecycle.resume_at(was.state)
        self.trader_id, self.paused, self.restarts = was.trader_id, was.paused, was.restarts
        self.shutdown_requested, self.shutdown_actor = was.shutdown_requested, was.shutdown_actor
        if not was.vouches_for_a_live_worker(self.config.worker_lock_path):
            self.journal.record("reattach", result="the worker died while nsup was down", state=was.state)
            raise WorkerLost(None, "the worker died while nsup was down")
        self.process = WorkerProcess.attach(was.worker.pid)
        self.worker_identity, self.worker_started_at, self._node_ever_ran = was.worker, time.monotonic(), True
        self.link.adopt(was.worker.pid)
        self.gate = StopGate(self.process, self.link, self.journal, self._answer_timeout)
        try:
            await self._while_alive(asyncio.wait_for(asyncio.shield(self.link.hello), self.config.supervisor.startup_timeout_secs))
        except TimeoutError:  # a silent worker is not ended for its silence: the watchdog alerts
            self.journal.record("fault", reason=f"the re-attached worker {was.worker.pid} has not spoken yet")
        self.journal.record("reattach", result="re-attached", pid=was.worker.pid, state=was.state, **self.counts())
        self.sd.reattached(self.lifecycle.state, self.counts(), resumable=not self.stop_is_final)
        if self.lifecycle.state in (CREATED, BUILT, RECOVERING):  # it never reached RUNNING under us
            if self.lifecycle.state != BUILT:
                self._fire("build", actor="nsup")
            try:
                await self._run_node()
            except LinkError as exc:  # ended through the gate like any worker that cannot start
                self.journal.record("fault", reason=f"the re-attached worker did not start: {exc}")
                await self._end_worker(EndAction.STOP_COMMAND)
                raise WorkerLost(await self._await_exit(), f"the re-attached worker did not start: {exc}") from None
        self.restart_policy.worker_up()

    def request_shutdown(self, actor: str) -> str:
        """The graceful stop: flatten, verify flat, then stop. Repeats change nothing."""
        again = self.shutdown_requested
        self.stop_requests += 1
        if not again:
            self.shutdown_requested = True  # before the journal write: a full disk must not lose a stop
            self.shutdown_actor = actor
            self._walk_requests.put_nowait(WalkRequest("halt", actor))
        elif actor.startswith("signal:") and not self.stop_is_final:
            self.shutdown_actor = actor  # an operator's stop, now also the service manager's: no resume
        self.persist()
        result = "already shutting down; nsup stops once flat" if again else "graceful stop requested"
        self.journal.record("command", command="stop", actor=actor, result=result, state=self.lifecycle.state, **self.counts())
        if again:
            logger.warning("{} asked to stop again: {}", actor, result)
        return result

    @property
    def stop_is_final(self) -> bool:
        """A stop that came from a signal (systemd, a terminal): whoever sent it expects nsup to exit."""
        return self.shutdown_actor.startswith("signal:")

    def check_walk(self, kind: str) -> None:
        """Refuse at once what the walk could not do now, so no request waits on a queue unread."""
        state, wanted = self.lifecycle.state, {"restart": RUNNING, "resume": HALTING, "abort": HALTING}[kind]
        if state != wanted:
            raise Refused(f"{kind} only in {wanted}; nsup is {state}")
        if self.detour is not None:
            raise Refused(f"nsup is busy with a {self.detour}")
        if kind == "restart" and self.shutdown_requested:
            raise Refused("a stop is pending")
        if kind == "resume" and self.stop_is_final:
            raise Refused(f"this stop came from {self.shutdown_actor.removeprefix('signal:')} (the service manager or a "
                          "terminal), which expects nsup to exit; only a stop asked for with nsupctl can be resumed")

    async def walk(self, kind: str, actor: str, approval: Approval | None = None) -> dict:
        """Ask the walk to resume, abort or restart; returns its answer or raises Refused."""
        self.check_walk(kind)
        if kind != "resume":
            self.detour = kind  # until the walk answers: nothing else may start beside it
        request = WalkRequest(kind, actor, approval, stops_seen=self.stop_requests)
        self._walk_requests.put_nowait(request)
        try:
            return await request.answer
        finally:
            if self.detour == kind:
                self.detour = None

    async def set_trading_state(self, name: str, actor: str) -> p.NodeStatus:
        """Pause (REDUCING) or resume (ACTIVE) a RUNNING node; the walk is not involved."""
        self._refuse_beside_a_detour(RUNNING)
        self.paused = name != "ACTIVE"  # the operator's intent, kept even if the worker is replaced
        self.persist()
        return (await self._command(p.SetTradingState(name), actor=actor)).status

    async def market_exit(self, actor: str) -> p.NodeStatus:
        self._refuse_beside_a_detour(RUNNING, HALTING)
        return (await self._command(p.MarketExit(), actor=actor)).status

    def _refuse_beside_a_detour(self, *states: str) -> None:
        if self.lifecycle.state not in states:
            raise Refused(f"only in {' or '.join(states)}; nsup is {self.lifecycle.state}")
        if self.detour is not None:
            raise Refused(f"nsup is busy with a {self.detour}")

    async def fresh_status(self) -> p.NodeStatus | None:
        try:
            return (await self.link.request(p.GetStatus(), self._answer_timeout)).status
        except LinkError:
            return self.link.last_status

    # The walk ----------------------------------------------------------------------------------

    async def _drive(self) -> int:
        try:
            lost = None
            try:
                if self._carry_on_from is not None:
                    await self._carry_on(self._carry_on_from)
                else:
                    await self._start_worker()
            except WorkerLost as exc:
                lost = exc
            while True:
                if lost is not None:
                    if (code := await self._recover(lost)) is not None:
                        return code
                try:
                    return await self._walk()
                except WorkerLost as exc:
                    lost = exc
        finally:
            while not self._walk_requests.empty():  # nobody will read these now: answer them
                self._walk_requests.get_nowait().refuse(f"nsup is {self.lifecycle.state} and exiting")

    async def _walk(self) -> int:
        """From RUNNING (or wherever the worker was found) to the end: a stop, an abort, or a loss."""
        while True:
            if self.lifecycle.state == RUNNING and self.shutdown_requested:
                self._fire("halt", actor=self.shutdown_actor)  # also a stop that was pending through a restart
            if self.lifecycle.state == HALTING:
                if (code := await self._halting()) is not None:
                    return code
                continue
            if self.lifecycle.state == FLAT:
                return await self._stop_flat_worker()
            request = await self._while_alive(self._walk_requests.get())
            if request.kind == "halt":
                continue  # the top of the loop acts on shutdown_requested
            if request.kind == "restart":
                await self._restart(request)
                continue
            request.refuse(f"{request.kind} is only possible in HALTING; nsup is {self.lifecycle.state}")

    async def _recover(self, lost: WorkerLost) -> int | None:
        """RECOVERING: replace the worker within the restart bound. None once RUNNING again (the walk
        goes on, a pending stop included); otherwise the exit code of giving up."""
        while True:
            reason = lost.reason or self.link.build_failure or (
                f"the worker exited with code {lost.exit_code} in {self.lifecycle.state}")
            self.journal.record("fault", reason=reason, exit_code=lost.exit_code, **self.counts())
            if self.lifecycle.state != RECOVERING:
                self._fire("worker_lost", actor="worker", reason=reason)
            delay = self.restart_policy.next_delay()
            if delay is None:
                self._fire("give_up", actor="nsup", reason=(
                    f"{self.restart_policy.max_restarts} restarts in {self.restart_policy.window_secs:g}s: "
                    f"the restart bound is spent (last: {reason})"))
                return EXIT_ABORTED
            self.journal.record("restart_scheduled", in_secs=round(delay, 3), restarts=self.restarts + 1,
                                shutdown_pending=self.shutdown_requested)
            await asyncio.sleep(delay)
            self.restarts += 1
            self._spawn_worker()
            try:
                await self._start_worker()
                return None
            except WorkerLost as again:
                lost = again

    async def _start_worker(self) -> None:
        """Bring the spawned worker to RUNNING, or end it (through the gate) and raise WorkerLost."""
        failure = await self._start()
        if failure is None:
            self.restart_policy.worker_up()
            return
        self.journal.record("fault", reason=f"start-up failed in {self.lifecycle.state}: {failure}")
        if self.link.build_failure is None and self.process.alive():
            # The gate decides: a node never run may be ended; one that ran must be flat.
            await self._end_worker(EndAction.STOP_COMMAND if self.link.hello.done() else EndAction.SIGKILL)
        raise WorkerLost(await self._await_exit(), self.link.build_failure or failure)

    async def _halting(self) -> int | None:
        """HALTING until flat (then the stop), an approved abort, or a resume (then None)."""
        halting = asyncio.ensure_future(self._halt_until_flat())
        try:
            while True:
                next_request = asyncio.ensure_future(self._walk_requests.get())
                await self._while_alive(asyncio.wait([halting, next_request], return_when=asyncio.FIRST_COMPLETED))
                if halting.done():
                    next_request.cancel()
                    if next_request.done() and not next_request.cancelled():
                        next_request.result().refuse(f"nsup is already {self.lifecycle.state}, stopping")
                    halting.result()
                    return await self._stop_flat_worker()
                request = next_request.result()
                if request.kind == "halt":
                    continue  # a stop while already stopping: nothing more to do
                if request.kind not in ("resume", "abort"):
                    request.refuse(f"{request.kind} is not possible in HALTING")
                    continue
                if request.kind == "resume" and self.stop_requests != request.stops_seen:
                    request.refuse("a stop was asked for after this resume: the stop stands")
                    continue
                halting.cancel()
                await asyncio.wait([halting])
                if self.lifecycle.state != HALTING:  # flat was verified just before: stopping wins
                    request.refuse(f"nsup is already {self.lifecycle.state}, stopping")
                    return await self._stop_flat_worker()
                if request.kind == "resume":
                    self.shutdown_requested, self.shutdown_actor = False, ""  # a stop from now on is a new one
                    self.persist()
                    await self._while_alive(self._insist(p.SetTradingState("REDUCING" if self.paused else "ACTIVE")))
                    self._fire("resume", actor=request.actor)
                    request.done(state=self.lifecycle.state, paused=self.paused)
                    return None
                if (code := await self._abort(request)) is not None:
                    return code
                halting = asyncio.ensure_future(self._halt_until_flat())  # the abort did not go through
        finally:
            halting.cancel()

    async def _abort(self, request: WalkRequest) -> int | None:
        """The one path that ends a worker with exposure: an operator's approval on record."""
        decision = await self.gate.end_worker(EndAction.STOP_COMMAND, actor=request.actor, approval=request.approval)
        if not decision.allowed:
            request.refuse(decision.reason)
            return None
        self._fire("abort", actor=request.actor, approval=request.approval, reason=request.approval.reason)
        request.done(state=self.lifecycle.state)
        await self._await_exit(request.approval)
        return EXIT_ABORTED

    async def _restart(self, request: WalkRequest) -> None:
        """A new worker for a flat node. Closing-only while flat is confirmed, HALTED only once it
        is, then stopped, spawned and run again. Anything short of flat puts trading back as it was."""
        s = self.config.supervisor
        try:
            status = await self._command(p.GetStatus())
            if not status.status.is_flat():
                raise Refused(f"restart only when flat: {describe_exposure(status.status)}")
            await self._command(p.SetTradingState("REDUCING"), actor=request.actor)
            evidence = await self._while_alive(self._wait_for_flat(2 * s.flat_confirm_secs + s.heartbeat_interval_secs))
            if evidence is None:
                raise Refused(f"restart only when flat: {describe_exposure(self.link.last_status)}")
            await self._command(p.SetTradingState("HALTED"), actor=request.actor)
            if await self._fire_if_venues_flat("restart", request.actor, evidence) is None:
                raise Refused(f"restart only when flat, at the venues too: {describe_exposure(self.link.last_status)}")
        except (Refused, LinkError) as exc:
            await self._while_alive(self._insist(p.SetTradingState("REDUCING" if self.paused else "ACTIVE")))
            request.refuse(str(exc))
            return
        await self._end_worker(EndAction.STOP_COMMAND)
        await self._await_exit()
        self.restarts += 1
        self._spawn_worker()
        try:
            await self._start_worker()
        except WorkerLost as lost:
            request.refuse(f"the new worker did not start: {lost}")
            raise
        request.done(state=self.lifecycle.state, restarts=self.restarts, worker_pid=self.process.pid, paused=self.paused)

    async def _start(self) -> str | None:
        """CREATED -> BUILT -> RUNNING; returns why not, if not."""
        s = self.config.supervisor
        try:
            hello = await self._while_alive(asyncio.wait_for(asyncio.shield(self.link.hello), s.startup_timeout_secs))
        except TimeoutError:
            return f"no hello from the worker within {s.startup_timeout_secs:g}s"
        except LinkError as exc:
            return str(exc)
        if hello.version != p.PROTOCOL_VERSION:
            return f"the worker speaks protocol {hello.version}, nsup speaks {p.PROTOCOL_VERSION}"
        self.trader_id = hello.trader_id
        # Read again now that the worker runs our code: the record a restarted nsup trusts is this one.
        self.worker_identity = WorkerIdentity.of(self.process.pid) or self.worker_identity
        self.persist()
        self.journal.record("worker_hello", pid=hello.pid, trader_id=hello.trader_id)
        self._fire("build", actor="nsup")
        try:
            await self._run_node()
        except LinkError as exc:
            return str(exc)
        return None

    async def _run_node(self) -> None:
        """BUILT -> RUNNING, for a new worker and a re-attached one alike: closing-only first when a
        stop or a pause is pending, so that no strategy opens new risk. Raises LinkError."""
        s = self.config.supervisor
        if self.shutdown_requested or self.paused:
            await self._while_alive(self._command(p.SetTradingState("REDUCING")))
        self._node_ever_ran = True
        await self._while_alive(self._command(p.RunNode(s.startup_timeout_secs), timeout=s.startup_timeout_secs + 5))
        self._fire("run", actor="nsup")

    async def _halt_until_flat(self) -> None:
        """HALTING: REDUCING, market_exit in bounded rounds, then FLAT once verified. Never gives up
        into a stop: when the budget is spent it stays here, loudly, until flat."""
        s = self.config.supervisor
        await self._while_alive(self._insist(p.SetTradingState("REDUCING")))
        for round_no in range(1, s.flatten_rounds + 1):
            await self._while_alive(self._insist(p.MarketExit(), round=round_no))
            evidence = await self._while_alive(self._wait_for_flat(s.flatten_round_wait_secs))
            if evidence and await self._enter_flat(evidence):
                return
            self.journal.record("flatten_round", round=round_no, of=s.flatten_rounds, flat=False, **self.counts())
        self._report_stuck()
        reminded = time.monotonic()
        while True:  # stuck: goes on only once flat (e.g. positions closed by hand at the venue)
            evidence = await self._while_alive(self._wait_for_flat(s.heartbeat_interval_secs))
            if evidence and await self._enter_flat(evidence):
                return
            if time.monotonic() - reminded > STUCK_REMINDER_SECS:
                reminded = time.monotonic()
                logger.critical("still HALTING and not flat: {}", describe_exposure(self.link.last_status))

    async def _enter_flat(self, evidence: FlatReads) -> bool:
        await self._while_alive(self._insist(p.SetTradingState("HALTED")))
        if await self._fire_if_venues_flat("flat", "nsup", evidence) is not None:
            return True
        await self._while_alive(self._insist(p.SetTradingState("REDUCING")))  # not flat after all
        return False

    async def _fire_if_venues_flat(self, trigger: str, actor: str, evidence: FlatReads) -> p.NodeStatus | None:
        """With HALTED set: ask the venues, and fire `trigger` (flat, restart) with their answer as the
        last read of the evidence. Returns that read if the machine moved, else None."""
        venues = await self._while_alive(self._ask_venues())
        if venues is None:
            return None
        moved = self._fire(trigger, actor=actor, evidence=FlatReads((*evidence.reads, venues), evidence.span_secs)).ok
        return venues if moved else None

    async def _ask_venues(self) -> p.NodeStatus | None:
        """The node's status with what the venues themselves hold; a disagreement is journaled loudly.
        None if a venue cannot say: unknown is never flat."""
        try:
            status = (await self._command(p.CheckVenues())).status
        except LinkError as exc:
            self.journal.record("fault", reason=f"the venues could not be asked what they hold: {exc}", **self.counts())
            return None
        if not status.venue_counts.all_zero() and status.is_flat():
            self.journal.record("venue_disagrees", node=status.counts, venue=status.venue_counts, reason=(
                "the node's cache is flat but the venue holds open positions or orders; nsup stays HALTING"))
        return status

    async def _stop_flat_worker(self) -> int:
        await self._end_worker(EndAction.STOP_COMMAND)
        code = await self._await_exit()
        if code is None:  # a re-attached worker is not our child: it acknowledged the stop, and is gone
            self.journal.record("worker_exit_unknown", reason="re-attached worker: its exit code is its old parent's")
            code = 0
        if self._fire("stop", actor="nsup", exit_code=code).ok:
            return EXIT_OK
        raise WorkerLost(code)

    # Helpers -----------------------------------------------------------------------------------

    async def _end_worker(self, action: EndAction, approval: Approval | None = None) -> None:
        """Ask the gate until it allows (each refusal is journaled by the gate), or the worker exits."""
        while not (await self.gate.end_worker(action, "nsup", approval, self._node_ever_ran)).allowed:
            wait = REFUSAL_RETRY_HEARTBEATS * self.config.supervisor.heartbeat_interval_secs
            await asyncio.wait([self.process.exited], timeout=wait)

    async def _await_exit(self, approval: Approval | None = None) -> int:
        """The worker's exit code, once it has ended; one that hangs in its stop is killed, through
        the gate: flat, or under the approval it was ended with."""
        try:
            code = await asyncio.wait_for(asyncio.shield(self.process.exited), WORKER_EXIT_TIMEOUT_SECS)
        except TimeoutError:
            logger.error("the worker did not exit {}s after it was ended", WORKER_EXIT_TIMEOUT_SECS)
            await self._end_worker(EndAction.SIGKILL, approval)
            code = await self.process.exited
        self.journal.record("worker_exit", pid=self.process.pid, code=code)
        return code

    async def _wait_for_flat(self, budget_secs: float) -> FlatReads | None:
        """Two flat reads `flat_confirm_secs` apart within the budget, or None."""
        confirm = self.config.supervisor.flat_confirm_secs
        deadline = time.monotonic() + budget_secs
        while time.monotonic() < deadline:
            first = (await self._insist(p.GetStatus())).status
            if first.is_flat():
                first_at = time.monotonic()
                self.journal.record("flat_seen", confirm_in_secs=confirm)
                await asyncio.sleep(confirm)
                second = (await self._insist(p.GetStatus())).status
                if second.is_flat():
                    return FlatReads((first, second), time.monotonic() - first_at)
            await asyncio.sleep(FLAT_POLL_SECS)
        return None

    async def _command(self, command: p.Command, timeout: float | None = None, actor: str = "nsup", **details) -> p.Reply:
        if not isinstance(command, p.GetStatus):  # on record before it is sent
            self.journal.record("worker_command", command=command, actor=actor, **details, **self.counts())
        return await self.link.request(command, timeout or self._answer_timeout)

    async def _insist(self, command: p.Command, **details) -> p.Reply:
        """A command that must get through. While the worker does not answer, the heartbeat watchdog
        alerts; while it refuses, the refusal is journaled once. Either way nsup tries again and
        never ends the worker for it."""
        refused = None
        while True:
            try:
                return await self._command(command, **details)
            except LinkError as exc:
                if str(exc) != refused:
                    refused = str(exc)
                    self.journal.record("fault", reason=f"{exc}; trying again", **self.counts())
            await asyncio.sleep(self.config.supervisor.heartbeat_interval_secs)

    async def _while_alive(self, awaitable):
        """Await, but raise WorkerLost the moment the worker exits."""
        task = asyncio.ensure_future(awaitable)
        try:
            await asyncio.wait([task, self.process.exited], return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not task.done():
                task.cancel()  # also when we ourselves are cancelled: no step runs on, orphaned
        if not task.cancelled() and task.done():
            return task.result()
        raise WorkerLost(self.process.exited.result())

    async def _watch_heartbeats(self) -> None:
        """The one owner of 'the worker is silent': alert after missed heartbeats, note the return, and
        past `hang_after_missed_heartbeats` call it hung: replaced if it was flat, else the operator's."""
        s = self.config.supervisor
        interval, silent_since = s.heartbeat_interval_secs, None
        while True:
            await asyncio.sleep(interval)
            await self.link.ping()
            heard = self.link.last_heard
            if heard is None:
                continue  # still starting: the start-up timeout covers this
            silence = time.monotonic() - heard
            if silent_since is None and silence > MISSED_HEARTBEATS_ALERT * interval:
                silent_since = heard
                self.journal.record(
                    "fault", reason=f"the worker has missed {MISSED_HEARTBEATS_ALERT} heartbeats ({silence:.1f}s silent) "
                    f"in {self.lifecycle.state}; nsup waits and will not end it without flat status or an approval",
                    **self.counts(),
                )
            elif silent_since is not None and silence <= interval:
                self.journal.record("worker_answering", silent_secs=round(heard - silent_since, 3))
                silent_since, self.hung = None, False
            if (silent_since is not None and not self.hung and silence > s.hang_after_missed_heartbeats * interval
                    and self.lifecycle.state in (BUILT, RUNNING, HALTING) and self.detour is None):
                self.hung = True
                await self._on_hung(silence)

    async def _on_hung(self, silence: float) -> None:
        last = self.link.last_status
        if last is not None and last.is_flat():
            self.journal.record("hung", silent_secs=round(silence, 3), result="flat when last heard: killed, to be replaced",
                                **self.counts())
            await self.gate.end_worker(EndAction.SIGKILL, "nsup", node_ever_ran=self._node_ever_ran)
            return
        self.journal.record(
            "hung_with_exposure", silent_secs=round(silence, 3), positions=last.positions if last else [], **self.counts(),
            reason="the worker is hung with exposure: nsup will not kill it by itself. If it does not come back, "
                   "`nsupctl recover` shows the positions and, on a typed confirmation, kills it for a replacement",
        )

    async def recover(self, approval: Approval, actor: str) -> dict:
        """An operator's approved kill of a hung worker; the walk sees it gone and recovery replaces it."""
        if not self.hung:
            raise Refused("recover is for a hung worker, and this one answers")
        decision = await self.gate.end_worker(EndAction.SIGKILL, actor, approval, self._node_ever_ran)
        if not decision.allowed:
            raise Refused(decision.reason)
        return {"result": "the hung worker was killed; nsup replaces it within the restart bound"}

    def _fire(self, trigger: str, actor: str, **evidence) -> Outcome:
        outcome = self.lifecycle.fire(trigger, actor=actor, **evidence)
        if not outcome.ok:
            self.journal.record("refusal", trigger=trigger, actor=actor, reason=outcome.reason, **self.counts())
        return outcome

    def counts(self) -> dict:
        return count_fields(self.link.last_status if self.link else None)

    def _report_stuck(self) -> None:
        status = self.link.last_status
        reason = (
            f"not flat after {self.config.supervisor.flatten_rounds} market_exit rounds: {describe_exposure(status)}. "
            "nsup stays HALTING and will not stop or signal the worker; it goes on by itself once flat"
        )
        self.stuck = True
        self.journal.record("halt_stuck", reason=reason, positions=status.positions, **self.counts())
        self.sd.status(status_text(HALTING, self.counts(), f"stuck, not flat after {self.config.supervisor.flatten_rounds} rounds"))

    # Callbacks ---------------------------------------------------------------------------------

    def _on_transition(self, trigger: str, source: str, dest: str, evidence: dict) -> None:
        self.stuck = self.stuck and dest == HALTING
        flat = evidence.get("evidence")
        proof = None
        if flat is not None:
            proof = {
                "span_secs": round(flat.span_secs, 3),
                "reads": [{"ts": r.ts, "trading_state": r.trading_state, **count_fields(r),
                           "exiting": [s.strategy_id for s in r.strategies if s.is_exiting]} for r in flat.reads],
            }
        self.last_transition = self.journal.record(
            "transition", trigger=trigger, source=source, dest=dest, actor=evidence.get("actor"),
            reason=evidence.get("reason"), **self.counts(), **({"evidence": proof} if proof else {}),
        )
        self.persist()
        self.sd.send(*messages_for_transition(source, dest, self.counts(), resumable=not self.stop_is_final))

    def _on_signal(self, sig: signal.Signals) -> None:
        if sig == signal.SIGHUP:  # a closed terminal must not end supervision
            self.journal.record("signal", signal=sig.name, state=self.lifecycle.state, result="ignored")
            return
        if self.lifecycle.state in (HALTING, FLAT):  # an operator's stop, now final: tell systemd too
            self.sd.stopping()
        self.request_shutdown(actor=f"signal:{sig.name}")

    def _on_notice(self, text: str) -> None:
        self.journal.record("worker_notice", text=text)

    def _on_status(self, status: p.NodeStatus, is_heartbeat: bool) -> None:
        health = status.health(self.config.supervisor.feed_silent_after_secs)
        if health != self.health:  # a silent feed is not a hang: it is on record and alerted, nothing more
            self.journal.record("health", health=health, was=self.health, data_age_secs=status.data_age_secs,
                                clients=status.clients, state=self.lifecycle.state)
            self.health = health
        for listener in self.status_listeners + (self.heartbeat_listeners if is_heartbeat else []):
            listener(self.lifecycle.state, status)
