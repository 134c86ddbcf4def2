"""One worker, from its spawn (or its adoption by a restarted nsup) to its end: the session.

A session owns everything that belongs to one worker process and dies with it: the process and its
pidfd, the link (a ROUTER on a socket of the session's own, so that nothing of one worker's
conversation can reach the next), the stop gate in front of them, the worker's identity, whether
its node ever ran, whether it is hung, and the heartbeat watch. Replacing the worker means a new
session; nothing is reset. The daemon decides when to start and end sessions; a session carries
out what one worker is asked, and says what it sees (statuses, notices, health, silence).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from pathlib import Path
from collections.abc import Callable

from loguru import logger

from supervisor import protocol as p
from supervisor.config import NsupConfig
from supervisor.journal import Journal, count_fields
from supervisor.intent import Approval
from supervisor.lifecycle import FlatReads
from supervisor.persisted_state import WorkerIdentity
from supervisor.schedule import in_session, wall_clock
from supervisor.stop_gate import Decision, EndAction, StopGate, describe_exposure
from supervisor.worker_link import LinkError, WorkerLink
from supervisor.worker_log import cause_of, log_size
from supervisor.worker_process import WorkerProcess

FLAT_POLL_SECS = 0.05
WORKER_EXIT_TIMEOUT_SECS = 30.0
MISSED_HEARTBEATS_ALERT = 3
REFUSAL_RETRY_HEARTBEATS = 10  # a refused end is asked for again this many heartbeats later

StatusListener = Callable[[p.NodeStatus, bool], None]  # every status the worker sends, and whether a heartbeat
StopListener = Callable[[str, str], None]  # the node asked to stop: (actor "node:<component>", reason)


class WorkerLost(Exception):
    """The worker is gone (or was ended because it could not start): recovery decides what next."""

    def __init__(self, exit_code: int | None, reason: str | None = None):
        super().__init__(reason or f"worker exited with code {exit_code}")
        self.exit_code = exit_code
        self.reason = reason


def _disagreement(status: p.NodeStatus) -> str | None:
    """What the venues and the node's cache disagree about, if they do, said the way an operator reads it."""
    venue, node = status.venue_counts, status.counts
    if status.is_flat() and not venue.all_zero():
        return ("the node's cache is flat but the venues hold open positions or orders: exposure the node does not "
                "know of; nsup's closer reconciles and closes it")
    if status.is_settled() and not status.is_flat() and status.venue_says_flat():
        return (f"the node's cache shows {node.positions_open} open position(s) that no venue holds, and no order is "
                "open: a disagreement, not exposure; nsup asks the node to reconcile, and goes by the venues")
    return None


class WorkerSession:
    def __init__(self, config: NsupConfig, journal: Journal, on_status: StatusListener, on_stop_request: StopListener,
                 watching: Callable[[], bool], adopt: WorkerIdentity | None = None,
                 fence: Callable[[], tuple[int, float]] = lambda: (0, 0.0)):
        """Spawns a worker, or with `adopt` takes the worker of an nsup that crashed (its identity
        verified): that one reconnects to the link it was spawned with, and its first heartbeat
        (carrying its pid) stands for a hello. `watching()`: whether silence is a hang now (the
        lifecycle expects the worker to answer). `fence()`: the lease's token and deadline, on every command."""
        s = config.supervisor
        self._config = config
        self._journal = journal
        self._refused: dict[type, str] = {}  # per kind of command, the refusal last put on record
        self._on_status = on_status
        self._on_stop_request = on_stop_request
        self._watching = watching
        endpoint = adopt.link_endpoint if adopt else f"ipc://{s.run_path / f'worker-{secrets.token_hex(3)}.sock'}"
        self.link = WorkerLink(endpoint, self._said, self._heard, adopt_pid=adopt.pid if adopt else None, fence=fence)
        self._log_from = log_size(self.log_path)
        self.process = WorkerProcess.attach(adopt.pid) if adopt else self._spawn()
        self.identity = adopt or WorkerIdentity.of(self.process.pid, self.process.argv)
        self.gate = StopGate(self.process, self.link, journal, self.answer_timeout)
        self.started_at = time.monotonic()
        self.trader_id: str | None = None
        self.ever_ran = adopt is not None  # RunNode was sent: its node may hold what it reconciled
        self.hung = False  # silent past hang_after_missed_heartbeats, and not answering since
        self.health: str | None = None
        self._venues_unavailable: list[str] = []  # as last journaled: said once, not on every check
        self._watch = asyncio.ensure_future(self._watch_heartbeats())
        if adopt is None:
            journal.record("worker_spawned", pid=self.process.pid, log=str(self.log_path))

    def _spawn(self) -> WorkerProcess:
        s = self._config.supervisor
        return WorkerProcess.spawn(
            [
                "--link", self.link.endpoint,
                "--factory", self._config.node.factory,
                "--spec-file", "-",  # on stdin: it may hold secrets, and the disk may be full
                "--log", str(self.log_path),
                "--lock", str(self._config.worker_lock_path),
                "--heartbeat-secs", str(s.heartbeat_interval_secs),
                "--reduce-after-supervisor-lost-secs", str(s.reduce_after_supervisor_lost_secs),
            ],
            log_path=self.log_path,
            spec=json.dumps(self._config.worker_spec()).encode(),
        )

    @property
    def log_path(self) -> Path:
        return self._config.supervisor.state_path / "worker.log"

    def cause(self) -> str:
        """What the worker's node last logged as an error, for a fault's reason ('' if nothing)."""
        return cause_of(self.log_path, self._log_from)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def answer_timeout(self) -> float:
        return max(2.0, 2 * self._config.supervisor.heartbeat_interval_secs)

    @property
    def last_status(self) -> p.NodeStatus | None:
        return self.link.last_status

    def counts(self) -> dict:
        return count_fields(self.link.last_status)

    def answering(self) -> bool:
        """Alive and heard within the last few heartbeats: worth asking to stop rather than killed."""
        heard = self.link.last_heard
        silent_after = MISSED_HEARTBEATS_ALERT * self._config.supervisor.heartbeat_interval_secs
        return self.process.alive() and heard is not None and time.monotonic() - heard <= silent_after

    def close(self) -> None:
        self._watch.cancel()
        self.link.close()

    # Start-up -------------------------------------------------------------------------------

    async def hello(self) -> p.Hello:
        """The worker's hello (its node built), or a LinkError saying why not."""
        timeout = self._config.supervisor.startup_timeout_secs
        try:
            hello = await self.while_alive(asyncio.wait_for(asyncio.shield(self.link.hello), timeout))
        except TimeoutError:
            raise LinkError(f"no hello from the worker within {timeout:g}s") from None
        if hello.version != p.PROTOCOL_VERSION:
            raise LinkError(f"the worker speaks protocol {hello.version}, nsup speaks {p.PROTOCOL_VERSION}")
        self.trader_id = hello.trader_id or self.trader_id
        return hello

    async def run_node(self, reducing: bool) -> None:
        """RunNode; closing-only first when `reducing` (a stop or a pause pending), so that no strategy
        opens new risk. Raises LinkError."""
        timeout = self._config.supervisor.startup_timeout_secs
        if reducing:
            await self.while_alive(self.command(p.SetTradingState("REDUCING")))
        self.ever_ran = True
        await self.while_alive(self.command(p.RunNode(timeout), timeout=timeout + 5))

    # Commands -------------------------------------------------------------------------------

    async def command(self, command: p.Command, timeout: float | None = None, actor: str = "nsup", **details) -> p.Reply:
        self._put_on_record(command, actor, details)
        return await self.link.request(command, timeout or self.answer_timeout)

    async def insist(self, command: p.Command, timeout: float | None = None, actor: str = "nsup", **details) -> p.Reply:
        """A command that must get through. While the worker does not answer, the heartbeat watch
        alerts; while it refuses, the refusal is journaled once. Either way nsup tries again and never
        ends the worker for it. The command is on record once, however often it is sent: a worker that
        refuses it for hours must not grow the journal by a record a try. Raises WorkerLost if the
        worker exits meanwhile."""
        self._put_on_record(command, actor, details)
        while (reply := await self._send_once(command, timeout)) is None:
            await asyncio.sleep(self._config.supervisor.heartbeat_interval_secs)
        return reply

    async def attempt(self, command: p.Command, timeout: float | None = None, actor: str = "nsup", **details) -> p.Reply | None:
        """A command sent once, for a round that goes on without its answer (a flatten round still
        waits for flat): None if the worker refused it or did not answer, which is on record as for
        `insist`. Raises WorkerLost if the worker exits meanwhile."""
        self._put_on_record(command, actor, details)
        return await self._send_once(command, timeout)

    async def _send_once(self, command: p.Command, timeout: float | None) -> p.Reply | None:
        """The reply, or None; a refusal (or silence) is journaled once for as long as the same one
        repeats for this kind of command."""
        kind = type(command)
        try:
            reply = await self.while_alive(self.link.request(command, timeout or self.answer_timeout))
        except LinkError as exc:
            if self._refused.get(kind) != str(exc):
                self._refused[kind] = str(exc)
                self._journal.record("fault", reason=f"{exc}; trying again", **self.counts())
            return None
        self._refused.pop(kind, None)
        return reply

    def _put_on_record(self, command: p.Command, actor: str, details: dict) -> None:
        if not isinstance(command, p.GetStatus):  # on record before it is sent
            self._journal.record("worker_command", command=command, actor=actor, **details, **self.counts())

    async def fresh_status(self) -> p.NodeStatus | None:
        """The worker's status now, or the last one heard if it does not answer in time."""
        try:
            return (await self.link.request(p.GetStatus(), self.answer_timeout)).status
        except LinkError:
            return self.link.last_status

    async def wait_for_flat(self, budget_secs: float) -> FlatReads | None:
        """Two reads `flat_confirm_secs` apart within the budget that may be flat, or None. A read may
        be flat when nothing can trade any more (no order, no strategy exiting) and the node's cache
        holds no position, or holds only positions the venues, asked once here, do not hold: the node
        is then asked to reconcile (docs/design.md, disagreement). Raises WorkerLost."""
        confirm = self._config.supervisor.flat_confirm_secs
        deadline = time.monotonic() + budget_secs
        venues_asked, venues_flat = False, False
        while time.monotonic() < deadline:
            first = (await self.insist(p.GetStatus())).status
            if first.is_settled() and not first.is_flat() and not venues_asked:
                venues_asked = True
                venues = await self.ask_venues()
                venues_flat = venues is not None and venues.venue_says_flat()
                if venues_flat:
                    first = (await self.insist(p.Reconcile(), timeout=p.Reconcile.ANSWER_SECS)).status
            if first.is_flat() or (first.is_settled() and venues_flat):
                first_at = time.monotonic()
                self._journal.record("flat_seen", confirm_in_secs=confirm)
                await asyncio.sleep(confirm)
                second = (await self.insist(p.GetStatus())).status
                if second.is_flat() or (second.is_settled() and venues_flat):
                    return FlatReads((first, second), time.monotonic() - first_at)
            await asyncio.sleep(FLAT_POLL_SECS)
        return None

    async def ask_venues(self) -> p.NodeStatus | None:
        """The node's status with what the venues themselves hold; where they and the node's cache
        disagree, or a venue cannot say, it is journaled with both views. None if the venues could not
        be asked at all: unknown is never flat. Raises WorkerLost."""
        try:
            status = (await self.while_alive(self.command(p.CheckVenues()))).status
        except LinkError as exc:
            self._journal.record("fault", reason=f"the venues could not be asked what they hold: {exc}", **self.counts())
            return None
        disagreement = _disagreement(status)
        if disagreement:
            self._journal.record("venue_disagrees", node=status.counts, venue=status.venue_counts, positions=status.positions,
                                 reason=disagreement)
        if status.venue_unavailable and status.venue_unavailable != self._venues_unavailable:
            self._journal.record("venue_check_unavailable", venues=status.venue_unavailable, reason=(
                "these venues cannot say what they hold: flat there is the node's cache's word, which nsup takes "
                "only with venue_check = \"trust_cache\""))
        self._venues_unavailable = status.venue_unavailable
        return status

    # Endings: only through the gate ---------------------------------------------------------

    async def end(self, action: EndAction, actor: str = "nsup", approval: Approval | None = None) -> Decision:
        """Asks the gate once; it journals its answer."""
        return await self.gate.end_worker(action, actor, approval, self.ever_ran)

    async def end_when_allowed(self, action: EndAction, approval: Approval | None = None) -> None:
        """Asks the gate until it allows (each refusal is journaled by the gate), or the worker exits."""
        while not (await self.end(action, approval=approval)).allowed:
            wait = REFUSAL_RETRY_HEARTBEATS * self._config.supervisor.heartbeat_interval_secs
            await asyncio.wait([self.process.exited], timeout=wait)

    async def exit_code(self, approval: Approval | None = None, kill_after_secs: float | None = None) -> int | None:
        """The worker's exit code once it has ended (None: a re-attached worker's code is its old
        parent's). One that hangs in its stop is killed after `kill_after_secs`, through the gate:
        flat, or under the approval it was ended with."""
        try:
            code = await asyncio.wait_for(asyncio.shield(self.process.exited), kill_after_secs or WORKER_EXIT_TIMEOUT_SECS)
        except TimeoutError:
            logger.error("the worker did not exit {}s after it was ended", kill_after_secs or WORKER_EXIT_TIMEOUT_SECS)
            await self.end_when_allowed(EndAction.SIGKILL, approval)
            code = await self.process.exited
        self._journal.record("worker_exit", pid=self.pid, code=code)
        return code

    async def while_alive(self, awaitable):
        """Await, but raise WorkerLost the moment the worker exits (whatever the awaitable came to)."""
        task = asyncio.ensure_future(awaitable)
        try:
            await asyncio.wait([task, self.process.exited], return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not task.done():
                task.cancel()  # also when we ourselves are cancelled: no step runs on, orphaned
        if self.process.exited.done():
            if task.done() and not task.cancelled():
                task.exception()  # retrieved: the worker's exit is the news
            raise WorkerLost(self.process.exited.result())
        return task.result()

    # What the worker says, and its silence --------------------------------------------------

    def _said(self, message: p.Said) -> None:
        match message:
            case p.Notice(text=text):
                self._journal.record("worker_notice", text=text)
            case p.ComponentStateChange(component=component, component_type=component_type, source=source, dest=dest):
                # On record and alerted; nothing more: a FAULTED strategy's positions are the stop's to
                # close (its market_exit() cannot run, nsup's closer does), docs/design.md.
                self._journal.record("component_state", component=component, component_type=component_type,
                                     source=source, dest=dest)
            case p.StopRequested(component=component, reason=reason):
                self._on_stop_request(f"node:{component}", reason)

    def _heard(self, status: p.NodeStatus, is_heartbeat: bool) -> None:
        schedule = self._config.schedule
        health = status.health(self._config.supervisor.feed_silent_after_secs,
                               in_session=schedule is None or in_session(schedule, wall_clock()))
        if health != self.health:  # a silent feed is not a hang: it is on record and alerted, nothing more
            self._journal.record("health", health=health, was=self.health, data_age_secs=status.data_age_secs,
                                 clients=status.clients, components=status.components)
            self.health = health
        self._on_status(status, is_heartbeat)

    async def _watch_heartbeats(self) -> None:
        """The one owner of 'the worker is silent': alert after missed heartbeats, note the return, and
        past `hang_after_missed_heartbeats` call it hung: ended if it was flat, else the operator's."""
        s = self._config.supervisor
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
                self._journal.record(
                    "fault", reason=f"the worker has missed {MISSED_HEARTBEATS_ALERT} heartbeats ({silence:.1f}s "
                    "silent); nsup waits and will not end it without flat status or an approval", **self.counts())
            elif silent_since is not None and silence <= interval:
                self._journal.record("worker_answering", silent_secs=round(heard - silent_since, 3))
                silent_since, self.hung = None, False
            if silent_since is not None and not self.hung and silence > s.hang_after_missed_heartbeats * interval \
                    and self._watching():
                self.hung = True
                await self._on_hung(silence)

    async def _on_hung(self, silence: float) -> None:
        last = self.link.last_status
        if last is not None and last.is_flat():
            self._journal.record("hung", silent_secs=round(silence, 3), result="flat when last heard: killed, to be replaced",
                                 **self.counts())
            await self.end(EndAction.SIGKILL)
            return
        self._journal.record(
            "hung_with_exposure", silent_secs=round(silence, 3), positions=last.positions if last else [], **self.counts(),
            reason="the worker is hung with exposure: nsup will not kill it by itself. If it does not come back, "
                   "`nsupctl recover` shows the positions and, on a typed confirmation, kills it for a replacement",
        )

    def describe_exposure(self) -> str:
        return describe_exposure(self.link.last_status)
