"""The daemon around the lifecycle: each state's work, and the operator's requests.

Every lifecycle state has one piece of work (an "activity", in the sense of a UML state's do-activity)
that runs while nsup is in it and ends by firing the trigger that leaves it: RUNNING watches the
worker, HALTING flattens in rounds, FLAT stops the worker, and so on (`ACTIVITIES`, below). `_drive`
runs the current state's activity and, once the state has changed, the next one's, until STOPPED
or ABORTED. Operators and signals fire triggers directly, when the table allows them; a change of
state that an activity did not make itself cancels that activity, and the new state's begins. The
worker is one `WorkerSession`; replacing it means a new session. Anything the worker does on its
own (exit, crash) surfaces as WorkerLost wherever the activity is waiting, so no step can miss it.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable

from loguru import logger

from supervisor import protocol as p
from supervisor.config import NsupConfig
from supervisor.holdings import ENDED_WITH_KINDS, MISMATCH, SESSION_END, Holdings, differences, ended_with
from supervisor.intent import Approval, Refused, StopRequest
from supervisor.journal import Journal, count_fields, read_journal
from supervisor.lease import Change, Lease
from supervisor.lifecycle import (ABORTED, ABORTING, ANSWERING, BUILT, CREATED, FLAT, HALTING, RECOVERING, RESTARTING,
                                  RUNNING, STOPPED, STOPPING, STUCK, TERMINAL, FlatReads, Lifecycle, Outcome, nothing_is_held)
from supervisor.persisted_state import PersistedState, StateStore, WorkerIdentity
from supervisor.restart_policy import RestartPolicy
from supervisor.scheduler import Scheduler
from supervisor.sd_notify import SdNotifier, keep_alive, messages_for_transition, status_text
from supervisor.session import WorkerLost, WorkerSession
from supervisor.snapshot import Snapshot
from supervisor.stop_gate import EndAction, describe_exposure
from supervisor.worker_link import LinkError

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_ABORTED = 0, 1, 2, 3
EXIT_INTERRUPTED = 130  # Ctrl-C before supervision began (or after it ended): nothing of the node runs

STUCK_REMINDER_SECS = 60.0
ABORT_KILL_AFTER_SECS = 5.0  # an approved abort's worker that acknowledged the stop and has not exited is killed
DURABILITY_RETRY_SECS = 1.0  # while the journal or state.json cannot be written, tried again this often

def _last_session_end(journal_path) -> Holdings | None:
    """What the last session ended with (supervisor/holdings.py); unknown if the journal cannot be read."""
    try:
        return ended_with(read_journal(journal_path, kinds=ENDED_WITH_KINDS) if journal_path.exists() else [])
    except OSError as exc:
        logger.error("the journal cannot be read ({}): what the last session left is unknown", exc)
        return None


def carried_on_at(state: str) -> str:
    """Where a new nsup goes on from the state a crashed one left: busy states begin again from their start."""
    return {RESTARTING: RUNNING, ABORTING: HALTING, STUCK: HALTING}.get(state, state)


StatusListener = Callable[[str, p.NodeStatus, bool], None]  # lifecycle state, the worker's status, heartbeat?


class Supervisor:
    def __init__(self, config: NsupConfig, journal: Journal, carry_on_from: PersistedState | None = None,
                 state_store: StateStore | None = None, scheduler: Scheduler | None = None, lease: Lease | None = None):
        """`carry_on_from`: what a crashed nsup left; its worker is re-attached if it still runs.
        `state_store`: where `persist` writes (default: state.json in the state dir, no mirror).
        `scheduler`: the trading-session schedule, if configured: shown in the snapshot (and persisted).
        `lease`: the node's lease in Redis (supervisor/lease.py), taken or asked for once already;
        None without Redis: one host, no fencing."""
        self.config = config
        self.journal = journal
        self.sd = SdNotifier.from_environment()  # before any worker is spawned: it must not inherit NOTIFY_SOCKET
        self._carry_on_from = carry_on_from
        self._state_store = state_store or config.state_store()
        self.scheduler = scheduler
        s = config.supervisor
        self.lifecycle = Lifecycle(s.flat_confirm_secs, self._on_transition, trust_cache=s.venue_check == "trust_cache")
        self._restart_policy = RestartPolicy(s.max_restarts, s.restart_window_secs, s.restart_backoff_secs,
                                             s.restart_backoff_max_secs, s.stable_after_secs)
        self._stop: StopRequest | None = None
        self._paused = False  # an operator's pause: the node runs closing-only until unpaused
        self._restarts = 0
        self._trader_id: str | None = None
        self._session: WorkerSession | None = None
        self._started_at = time.monotonic()
        self._last_transition: dict | None = None
        self._entered_by: str | None = None  # the trigger that led into the current state
        self._last_loss = ""  # why the last worker was lost: the reason given if the restart bound is spent
        self._approval: Approval | None = None  # the abort under way
        self._activity: asyncio.Task | None = None
        self._moved: list[asyncio.Future] = []  # who waits for the next change of state
        self._status_listeners: list[StatusListener] = []
        self._stop_askers: list[Callable[[str, str], None]] = []
        self._ended_with = _last_session_end(config.journal_path)
        self._mismatch: list[str] = []  # this start's reconciliation report, if it found a mismatch
        # Whether a node of this nsup may have run: a carried-on session's, unless it never got past CREATED.
        self._node_ran = carry_on_from is not None and carry_on_from.state != CREATED
        self._problems: tuple[str | None, str | None] = (None, None)  # journal's, state.json's: as last said
        self._lease = lease
        self._lease_taken = asyncio.Event()  # set while the lease is held: a worker is spawned or adopted only then
        self._fenced: str | None = None  # why the lease was lost: the node runs closing-only until it is back
        self._lease_steps: set[asyncio.Task] = set()  # what a change of the lease sent the worker (strong references)

    # What the outside sees ---------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        session, now = self._session, time.monotonic()
        alive = session is not None and session.process.alive()
        heard = session.link.last_heard if session else None
        return Snapshot(
            state=self.lifecycle.state, node=session.last_status if session else None,
            health=session.health if session else None, hung=bool(session and session.hung), stop=self._stop,
            paused=self._paused, trader_id=self._trader_id, worker=session.identity if session else None,
            worker_alive=alive, worker_uptime_secs=round(now - session.started_at, 3) if alive else None,
            supervisor_pid=os.getpid(), supervisor_uptime_secs=round(now - self._started_at, 3),
            heartbeat_age_secs=round(now - heard, 3) if heard else None, restarts=self._restarts,
            last_transition=self._last_transition, reconciliation_mismatch=self._mismatch,
            degraded=self._not_durable(), records_held=self.journal.held, lease_lost=self._fenced,
            schedule=self.scheduler.view() if self.scheduler else None,
        )

    def on_status(self, listener: StatusListener) -> None:
        """`listener(state, status, is_heartbeat)` hears every status the worker sends."""
        self._status_listeners.append(listener)

    def on_node_stop_request(self, listener: Callable[[str, str], None]) -> None:
        """`listener(actor, reason)` hears the node ask to stop itself ("node:<component>"): whoever
        carries out stop requests (control/server/operators.py) treats it as one."""
        self._stop_askers.append(listener)

    def counts(self) -> dict:
        return count_fields(self._session.last_status if self._session else None)

    def persist(self) -> None:
        """state.json (and Redis's copy): never fails; a disk that will not take it is noted (degraded)."""
        self._state_store.save(self.snapshot().persisted())
        self._note_durability()

    def _not_durable(self) -> str | None:
        """What of nsup's record cannot be written now, and why; None when everything is on file."""
        parts = []
        if self.journal.problem is not None:
            parts.append(f"journal not durable ({self.journal.problem}; {self.journal.held} records held in memory)")
        if self._state_store.problem is not None:
            parts.append(f"state.json not durable ({self._state_store.problem})")
        return "; ".join(parts) or None

    def _note_durability(self) -> None:
        """Says when what is durable changes: systemd's STATUS, and the journal for state.json (the
        journal says its own). Status and metrics read it from the snapshot."""
        problems = (self.journal.problem, self._state_store.problem)
        if problems == self._problems:
            return
        (_, state_was), self._problems = self._problems, problems
        state_problem = problems[1]
        if (state_problem is None) != (state_was is None):
            self.journal.record("state_not_durable" if state_problem else "state_durable", reason=(
                f"state.json cannot be written ({state_problem}): a restarted nsup would carry on from an older "
                "state (or Redis's copy); nsup tries again every second" if state_problem else
                "state.json is written again"))
        self.sd.status(status_text(self.lifecycle.state, self.counts(), self._degraded_note))

    @property
    def _degraded_note(self) -> str | None:
        degraded = self._not_durable()
        return f"degraded: {degraded}" if degraded else None

    async def _keep_durable(self) -> None:
        """While anything of nsup's record is held back, write it as soon as the disk takes it."""
        while True:
            await asyncio.sleep(DURABILITY_RETRY_SECS)
            self.journal.make_durable()
            self._state_store.retry()
            self._note_durability()

    # The lease (supervisor/lease.py) -----------------------------------------------------------

    def _keep_lease(self) -> asyncio.Task | None:
        if self._lease is None:
            return None
        if self._lease.held():
            self._lease_changed(Change(True, self._lease.token, "taken"))
        else:
            self.journal.record("lease_wait", key=self._lease.key, reason=(
                "Redis could not be asked for this node's lease: no worker is spawned or adopted until it is held"))
            self.sd.status(status_text(self.lifecycle.state, self.counts(), "waiting for this node's lease in Redis"))
        return asyncio.ensure_future(self._lease.keep(self._lease_changed))

    async def _lease_held(self) -> None:
        """Returns once the lease is held (at once without one): a worker is spawned or adopted only then."""
        if self._lease is not None:
            await self._lease_taken.wait()

    def _lease_changed(self, change: Change) -> None:
        """Taken: workers may be spawned and adopted, and trading goes on as it was, unless another nsup
        held the node meanwhile (the token says): then it stays closing-only for an operator. Lost: the
        node goes closing-only, as an operator's pause does, and is not stopped for it."""
        if change.held:
            self._lease_taken.set()
            was_fenced, self._fenced = self._fenced, None
            reason = None
            if was_fenced is not None and change.others_took_it:
                self.intend_paused(True)
                reason = ("another nsup held this node while the lease was lost (the token moved on by more than "
                          "this take): it stays closing-only until an operator resumes it (nsupctl resume)")
            self.journal.record("lease_taken", key=self._lease.key, token=change.token, others_took_it=change.others_took_it,
                                reason=reason, **self.counts())
            if was_fenced is not None and self._intended_trading_state == "ACTIVE":
                self._lease_pause(False, "the lease is held again, and nobody else held the node meanwhile")
            return
        self._lease_taken.clear()
        self._fenced = change.reason
        self.journal.record("lease_lost", key=self._lease.key, token=change.token, reason=(
            f"{change.reason}: the node goes closing-only, and no new worker is spawned or adopted, until the lease "
            "is held again; nsup stops no worker for it"), **self.counts())
        self._lease_pause(True, change.reason)

    def _lease_pause(self, paused: bool, reason: str) -> None:
        """The lease's pause or unpause of a RUNNING node, the way an operator's goes: the table, then the
        trading state the intent now means, sent to the worker once (one that does not take it is on
        record) and never waited on. Elsewhere the state's own work sets it: a node being started runs
        closing-only from its first RunNode, and a stop is closing-only already."""
        trigger = "pause" if paused else "unpause"
        session = self._session
        if session is None or self.lifecycle.state != RUNNING or not self._fire(trigger, actor="lease", reason=reason).ok:
            return
        trading_state = self._intended_trading_state

        async def tell() -> None:
            try:
                await session.command(p.SetTradingState(trading_state), actor="lease")
            except LinkError as exc:
                self.journal.record("fault", reason=f"the lease's {trigger} ({trading_state}) did not reach the worker: {exc}")

        step = asyncio.ensure_future(tell())
        self._lease_steps.add(step)
        step.add_done_callback(self._lease_steps.discard)

    # Entry point -------------------------------------------------------------------------------

    async def run(self) -> int:
        self.journal.record("supervisor_start", pid=os.getpid(), state=self.lifecycle.state, factory=self.config.node.factory)
        keepalive = asyncio.ensure_future(keep_alive(self.sd, lambda: self.lifecycle.state))
        durable = asyncio.ensure_future(self._keep_durable())
        lease = self._keep_lease()
        try:
            code = await self._drive()
        finally:
            keepalive.cancel()
            durable.cancel()
            if lease is not None:
                lease.cancel()
            self._end_session()
            if self._lease is not None and self.lifecycle.state in TERMINAL:
                self._lease.release()  # no worker of ours is left: the next nsup need not wait for the expiry
        self.journal.record("supervisor_exit", code=code, state=self.lifecycle.state)
        return code

    async def _drive(self) -> int:
        while self.lifecycle.state not in TERMINAL:
            activity = self._activity = asyncio.ensure_future(ACTIVITIES[self.lifecycle.state](self))
            try:
                await asyncio.wait([activity])
            finally:
                activity.cancel()  # when we ourselves are cancelled: nothing runs on, orphaned
            if activity.cancelled():
                continue  # someone else moved the machine: the new state's work begins
            try:
                activity.result()
            except WorkerLost as lost:
                self._worker_lost(lost)
        return EXIT_OK if self.lifecycle.state == STOPPED else EXIT_ABORTED

    def _fire(self, trigger: str, actor: str = "nsup", **evidence) -> Outcome:
        outcome = self.lifecycle.fire(trigger, actor=actor, **evidence)
        if not outcome.ok:
            self.journal.record("refusal", trigger=trigger, actor=actor, reason=outcome.reason, **self.counts())
        return outcome

    def _on_transition(self, trigger: str, source: str, dest: str, evidence: dict) -> None:
        flat = evidence.get("evidence")
        proof = None
        if flat is not None:
            proof = {
                "span_secs": round(flat.span_secs, 3),
                "reads": [{"ts": r.ts, "trading_state": r.trading_state, **count_fields(r),
                           "exiting": [s.strategy_id for s in r.strategies if s.is_exiting]} for r in flat.reads],
            }
        self._entered_by = trigger
        if trigger == "resume":
            self._stop = None  # cancelled: a stop from now on is a new one
        if dest == ABORTING:
            self._approval = evidence["approval"]
        self._last_transition = self.journal.record(
            "transition", trigger=trigger, source=source, dest=dest, actor=evidence.get("actor"),
            reason=evidence.get("reason"), **self.counts(), **({"evidence": proof} if proof else {}),
        )
        self.persist()
        self.sd.send(*messages_for_transition(source, dest, self.counts(), resumable=self._resumable,
                                              note=self._degraded_note))
        self._interrupt_activity()  # an operator (or a signal) moved the machine: this state's work is over
        for waiter in self._moved:
            if not waiter.done():
                waiter.set_result(dest)
        self._moved.clear()

    def _interrupt_activity(self) -> None:
        """The current state's work is cancelled (unless it is the caller); `_drive` then runs the
        activity of the state the machine is in now."""
        if self._activity is not None and asyncio.current_task() is not self._activity:
            self._activity.cancel()

    @property
    def _resumable(self) -> bool:
        return self._stop is not None and not self._stop.final

    # The activities: one per state, each ends by leaving it ----------------------------------------

    async def _created(self) -> None:
        if await self._abandoned():
            return
        if self._carry_on_from is not None:
            await self._carry_on(self._carry_on_from)
        else:
            await self._start_session()

    async def _recovering(self) -> None:
        """Replace the worker: an operator's restart (the old one is verified flat and alive: it is
        stopped first, and the restart bound is not spent on it) or a lost worker (within the bound)."""
        if await self._abandoned():
            return
        old = self._session
        if old is not None and old.process.alive():
            await old.end_when_allowed(EndAction.STOP_COMMAND)
            await old.exit_code()
        else:
            delay = self._restart_policy.next_delay()
            if delay is None:
                self._fire("give_up", reason=(f"{self._restart_policy.max_restarts} restarts in "
                                              f"{self._restart_policy.window_secs:g}s: the restart bound is spent "
                                              f"(last: {self._last_loss})"))
                return
            self.journal.record("restart_scheduled", in_secs=round(delay, 3), restarts=self._restarts + 1,
                                shutdown_pending=self._stop is not None)
            await asyncio.sleep(delay)
        self._restarts += 1
        await self._start_session()

    async def _built(self) -> None:
        """BUILT -> RUNNING: closing-only first when a stop or a pause is pending (or until the
        reconciliation report is read, where a mismatch is to hold the node closing-only)."""
        if await self._abandoned():
            return
        hold = self.config.supervisor.fail_on_reconciliation_mismatch
        try:
            await self._session.run_node(reducing=self._stop is not None or self._intended_trading_state != "ACTIVE" or hold)
        except LinkError as exc:
            await self._failed_start(str(exc))
        self._restart_policy.worker_up()
        self._node_ran = True
        if self._report_reconciliation() and hold:
            self.intend_paused(True)
            logger.warning("the node stays closing-only until an operator resumes it (fail_on_reconciliation_mismatch)")
        elif hold and self._stop is None and self._intended_trading_state == "ACTIVE":
            await self._session.insist(p.SetTradingState("ACTIVE"))
        self._fire("run")

    def _report_reconciliation(self) -> bool:
        """The node, reconciled, against what the last session ended with (supervisor/holdings.py):
        a mismatch is journaled with both views and shown in status. True if there is one."""
        found = Holdings.of(self._session.last_status)
        self._mismatch = differences(self._ended_with, found)
        if self._mismatch:
            ended = self._ended_with.as_record() if self._ended_with is not None else None
            self.journal.record(MISMATCH, ended_with=ended, found=found.as_record(), differences=self._mismatch,
                                held_closing_only=self.config.supervisor.fail_on_reconciliation_mismatch)
            logger.warning("reconciliation mismatch: {}", "; ".join(self._mismatch))
        return bool(self._mismatch)

    async def _running(self) -> None:
        if self._stop is not None:  # asked for while starting, or through a replacement
            self._fire("halt", actor=self._stop.actor)
            return
        if self._entered_by in ("resume", "not_flat"):  # back from a stop or a restart: trading as the operator left it
            await self._session.insist(p.SetTradingState(self._intended_trading_state))
        await self._session.while_alive(asyncio.get_running_loop().create_future())  # until the worker is lost

    async def _halting(self) -> None:
        """REDUCING, then bounded rounds: the strategies' market_exit, nsup's closer for what they
        leave (whoever owns it), a wait for flat. FLAT once verified; else STUCK, never a stop."""
        s = self.config.supervisor
        await self._session.insist(p.SetTradingState("REDUCING"))
        for round_no in range(1, s.flatten_rounds + 1):
            await self._session.attempt(p.MarketExit(), round=round_no)
            await self._closer_round()
            if await self._flat_within(s.flatten_round_wait_secs):
                return
            self.journal.record("flatten_round", round=round_no, of=s.flatten_rounds, flat=False, **self.counts())
        status = self._session.last_status
        reason = (f"not flat after {s.flatten_rounds} rounds of market_exit and nsup's closer: {describe_exposure(status)}. "
                  "nsup stays STUCK and will not stop or signal the worker; it goes on by itself once flat")
        self.journal.record("halt_stuck", reason=reason, positions=status.positions, orders=status.orders, **self.counts())
        self._fire("stuck", reason=reason)
        self.sd.status(status_text(STUCK, self.counts(), f"not flat after {s.flatten_rounds} rounds"))

    async def _stuck(self) -> None:
        """Still trying, a round at a time: nsup's closer, and a wait for flat. It goes on by itself once
        flat (e.g. positions closed by hand at the venue)."""
        s = self.config.supervisor
        reminded = time.monotonic()
        while not await self._flat_within(s.flatten_round_wait_secs):
            await self._closer_round()
            if time.monotonic() - reminded > STUCK_REMINDER_SECS:
                reminded = time.monotonic()
                logger.critical("still STUCK and not flat: {}", self._session.describe_exposure())

    async def _flat_within(self, budget_secs: float) -> bool:
        """Two flat reads within the budget, then HALTED, the venues asked and `flat` fired: True if
        the machine moved (the state's activity then ends)."""
        evidence = await self._session.wait_for_flat(budget_secs)
        return evidence is not None and await self._enter_flat(evidence)

    async def _restarting(self) -> None:
        """An operator's restart: closing-only while flat is verified, HALTED once it is; then the
        old worker goes (RECOVERING). Anything short of flat puts trading back as it was (not_flat)."""
        s = self.config.supervisor
        await self._session.insist(p.SetTradingState("REDUCING"))
        if await self._flat_within(2 * s.flat_confirm_secs + s.heartbeat_interval_secs):
            return
        self._fire("not_flat", reason=f"restart only when flat, at the venues too: {self._session.describe_exposure()}")

    async def _flat(self) -> None:
        await self._session.end_when_allowed(EndAction.STOP_COMMAND)
        code = await self._session.exit_code()
        if code is None:  # a re-attached worker is not our child: it acknowledged the stop, and is gone
            self.journal.record("worker_exit_unknown", reason="re-attached worker: its exit code is its old parent's")
            code = 0
        if not self._fire("stop", exit_code=code).ok:
            raise WorkerLost(code)

    async def _aborting(self) -> None:
        """The one path that ends a worker with exposure: an operator's approval on record. A worker
        that answers is asked to stop (it disposes its node); one that is silent, refuses or does not
        acknowledge the stop is killed at once, and one that acknowledged and has not exited within
        ABORT_KILL_AFTER_SECS is killed then, all under the same approval. ABORTED once it is gone."""
        approval, session = self._approval, self._session
        stopped = None
        if session.answering():
            stopped = await session.end(EndAction.STOP_COMMAND, actor=approval.operator, approval=approval)
        if stopped is None or not (stopped.allowed and stopped.acknowledged):
            await session.end(EndAction.SIGKILL, actor=approval.operator, approval=approval)
        code = await session.exit_code(approval, kill_after_secs=ABORT_KILL_AFTER_SECS)
        self._fire("ended", actor=approval.operator, reason=f"{approval.reason} (the worker exited: {code})")

    # Shared steps -----------------------------------------------------------------------------

    def _end_session(self) -> None:
        """The session's last holdings on record (`session_end`): what the next start compares its
        reconciliation with. Unknown if its node ran and was never heard."""
        session = self._session
        if session is None:
            return
        status = session.last_status
        held = Holdings.of(status) if status is not None else (None if session.ever_ran else Holdings())
        self.journal.record(SESSION_END, pid=session.pid, state=self.lifecycle.state,
                            **(held.as_record() if held is not None else {"positions": None, "orders": None}))
        self._ended_with = held
        session.close()
        self._session = None

    def _new_session(self, adopt: WorkerIdentity | None = None) -> WorkerSession:
        self._end_session()
        self._session = WorkerSession(self.config, self.journal, self._heard, self._node_asks_to_stop,
                                      self._expects_answers, adopt, *([self._lease.fence] if self._lease else []))
        self.persist()
        return self._session

    async def _start_session(self) -> None:
        """A new worker to BUILT, once the lease is held; ended through the gate and WorkerLost raised if
        it cannot get there."""
        await self._lease_held()
        try:
            session = self._new_session()
        except OSError as exc:  # e.g. no processes or memory left: a failed start, within the restart bound
            raise WorkerLost(None, f"the worker could not be spawned: {exc}") from None
        try:
            hello = await session.hello()
        except LinkError as exc:
            await self._failed_start(str(exc))
        self._trader_id = hello.trader_id
        self.persist()  # with its trader id
        self.journal.record("worker_hello", pid=hello.pid, trader_id=hello.trader_id)
        self._fire("build")

    async def _failed_start(self, reason: str) -> None:
        reason += self._session.cause()
        self.journal.record("fault", reason=f"start-up failed in {self.lifecycle.state}: {reason}")
        code = await self._end_unstarted_worker()
        raise WorkerLost(code, self._session.link.build_failure or reason)

    async def _end_unstarted_worker(self) -> int | None:
        """Ends a worker whose node is not (yet) RUNNING, through the gate: a node never run may be
        ended; one that ran must be flat."""
        session = self._session
        if session.link.build_failure is None and session.process.alive():
            await session.end_when_allowed(EndAction.STOP_COMMAND if session.link.hello.done() else EndAction.SIGKILL)
        return await session.exit_code()

    def _may_abandon(self) -> bool:
        return self._stop is not None and nothing_is_held(self._node_ran, self._ended_with)

    async def _abandoned(self) -> bool:
        """A stop asked for before any node of this nsup ran, the last session flat: the start is given
        up (its worker ended through the gate) and nsup is STOPPED. False, and nothing done, otherwise."""
        if not (self._may_abandon() and self.lifecycle.allows("abandon")):
            return False
        code = await self._end_unstarted_worker() if self._session is not None else None
        self._end_session()
        return self._fire("abandon", actor=self._stop.actor, node_ran=self._node_ran, ended_with=self._ended_with,
                          reason=f"stopped before the node ever ran (the worker exited: {code}); the last session ended flat").ok

    async def _carry_on(self, was: PersistedState) -> None:
        """After a supervisor crash: re-attach to the worker if it is still the one we spawned (pid,
        start time, command line), and go on from the state on record; if it died meanwhile, it is a
        lost worker and the restart policy applies. A stop goes on from its first round (STUCK too: a new
        nsup tries the flatten again before it calls the node stuck); an interrupted restart goes back to
        RUNNING, and an interrupted abort to HALTING: the operator asks again, under a new approval."""
        self.lifecycle.resume_at(carried_on_at(was.state))
        self._trader_id, self._paused, self._restarts = was.trader_id, was.paused, was.restarts
        self._stop = was.stop or self._stop  # a stop asked for while this nsup started (a signal, the schedule) stands
        if not was.vouches_for_a_live_worker(self.config.worker_lock_path):
            self.journal.record("reattach", result="the worker died while nsup was down", state=was.state)
            raise WorkerLost(None, "the worker died while nsup was down")
        await self._lease_held()
        session = self._new_session(adopt=was.worker)
        try:
            await session.hello()
        except LinkError as exc:  # a silent worker is not ended for its silence: the heartbeat watch alerts
            self.journal.record("fault", reason=f"the re-attached worker {session.pid} has not spoken yet ({exc})")
        self.journal.record("reattach", result="re-attached", pid=session.pid, state=was.state, **self.counts())
        if self._lease is not None and self.lifecycle.state == RUNNING and session.answering():
            # It went closing-only by itself when the lease it knew lapsed: trading as the operator left it.
            await session.insist(p.SetTradingState(self._intended_trading_state))
        self.sd.reattached(self.lifecycle.state, self.counts(), resumable=self._resumable)
        if self.lifecycle.state in (CREATED, RECOVERING):  # it never reached RUNNING: BUILT runs it
            self._fire("build")
        else:
            self._restart_policy.worker_up()

    async def _enter_flat(self, evidence: FlatReads) -> bool:
        """With two flat reads: HALTED, then the venues asked, and `flat` fired with their answer as
        the last read. Not flat after all: closing-only again, and False."""
        await self._session.insist(p.SetTradingState("HALTED"))
        venues = await self._session.ask_venues()
        if venues is not None and self._fire("flat", evidence=FlatReads((*evidence.reads, venues), evidence.span_secs)).ok:
            return True
        await self._session.insist(p.SetTradingState("REDUCING"))
        return False

    def _worker_lost(self, lost: WorkerLost) -> None:
        session = self._session
        self._last_loss = lost.reason or session.link.build_failure or (
            f"the worker exited with code {lost.exit_code} in {self.lifecycle.state}{session.cause()}")
        self.journal.record("fault", reason=self._last_loss, exit_code=lost.exit_code, **self.counts())
        if self.lifecycle.state == ABORTING:
            return  # the abort's own ending: its activity sees the exit too
        if self.lifecycle.allows("worker_lost"):
            self._fire("worker_lost", actor="worker", reason=self._last_loss)

    def _heard(self, status: p.NodeStatus, is_heartbeat: bool) -> None:
        for listener in self._status_listeners:
            listener(self.lifecycle.state, status, is_heartbeat)

    def _node_asks_to_stop(self, actor: str, reason: str) -> None:
        for listener in self._stop_askers:
            listener(actor, reason)

    def _expects_answers(self) -> bool:
        return self.lifecycle.state in ANSWERING

    @property
    def _intended_trading_state(self) -> str:
        """Closing-only while an operator has paused the node, or its lease is lost."""
        return "REDUCING" if self._paused or self._fenced is not None else "ACTIVE"

    # What operators (and signals) may ask of it: commands (control/commands/) do the rest ---------

    def allow(self, trigger: str, actor: str, **evidence) -> None:
        """Asks the table: the trigger is fired (an internal one changes no state), or Refused says why."""
        if not self.lifecycle.allows(trigger):
            raise Refused(self.lifecycle.why_not(trigger))
        outcome = self.lifecycle.fire(trigger, actor=actor, **evidence)
        if not outcome.ok:
            raise Refused(outcome.reason)

    def worker(self) -> WorkerSession:
        """The running worker's session, or Refused."""
        if self._session is None or not self._session.process.alive():
            raise Refused(f"no worker is running (nsup is {self.lifecycle.state})")
        return self._session

    def request_stop(self, actor: str, final: bool = False) -> str:
        """The graceful stop: flatten, verify flat, then stop. Repeats change nothing, but a signal
        makes a stop final (systemd expects nsup to exit: no resume)."""
        if self._stop is None:
            self._stop = StopRequest(actor, final)  # before anything else: a full disk must not lose a stop
            if self.lifecycle.allows("halt"):
                self._fire("halt", actor=actor)
            else:
                self.persist()
                if self._may_abandon() and self.lifecycle.allows("abandon"):
                    self._interrupt_activity()  # the state's work begins again, and gives the start up
                elif self.lifecycle.allows("abandon"):  # refused, and journaled with why: the stop waits for a node
                    self._fire("abandon", actor=actor, node_ran=self._node_ran, ended_with=self._ended_with)
            return "graceful stop requested"
        if final and not self._stop.final:
            self._stop = StopRequest(actor, final=True)
            self.persist()
            if self.lifecycle.state in STOPPING:  # an operator's stop, now final: tell systemd too
                self.sd.stopping()
        logger.warning("{} asked to stop again: nsup stops once flat", actor)
        return "already shutting down; nsup stops once flat"

    @property
    def stop(self) -> StopRequest | None:
        return self._stop

    def intend_paused(self, paused: bool) -> str:
        """The operator's pause outlives the worker: a replacement starts closing-only too. Returns the
        trading state it means."""
        self._paused = paused
        self.persist()
        return self._intended_trading_state

    async def close_all(self, actor: str) -> list[str]:
        """An operator's flatten: nsup's closer in the worker, which cancels and closes what the
        strategies leave, whoever owns it (node_worker/closer.py). Raises LinkError if the worker
        refuses it or does not answer."""
        reply = await self._session.command(p.CloseAll(), actor=actor, timeout=p.CloseAll.ANSWER_SECS)
        return self._closer_sent(reply, actor)

    async def _closer_round(self) -> None:
        """nsup's closer, once a round: a worker that refuses it or does not answer is on record, and
        the round goes on to its wait for flat, which is what ends it."""
        reply = await self._session.attempt(p.CloseAll(), timeout=p.CloseAll.ANSWER_SECS)
        if reply is not None:
            self._closer_sent(reply, "nsup")

    def _closer_sent(self, reply: p.Reply, actor: str) -> list[str]:
        """What the closer sent (a close or cancel per position and order it found) goes on record."""
        if reply.actions:
            self.journal.record("closer", actor=actor, actions=reply.actions, **self.counts())
        return reply.actions

    async def fresh_status(self) -> p.NodeStatus | None:
        """The worker's status now; from a worker found silent, the last one heard (no wait for it)."""
        if self._session is None:
            return None
        return await self._session.fresh_status() if self._session.answering() else self._session.last_status

    async def reached(self, states: set[str]) -> str:
        """Waits until the lifecycle has moved into one of `states`."""
        while True:
            waiter = asyncio.get_running_loop().create_future()
            self._moved.append(waiter)
            if await waiter in states:
                return self.lifecycle.state


ACTIVITIES = {
    CREATED: Supervisor._created,
    RECOVERING: Supervisor._recovering,
    BUILT: Supervisor._built,
    RUNNING: Supervisor._running,
    RESTARTING: Supervisor._restarting,
    HALTING: Supervisor._halting,
    STUCK: Supervisor._stuck,
    FLAT: Supervisor._flat,
    ABORTING: Supervisor._aborting,
}
