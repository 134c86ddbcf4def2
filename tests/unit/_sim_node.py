"""A simulated node and its venue, and the referee that watches nsup drive them (not a test module).

Only the worker is simulated. `World.patched()` replaces `WorkerProcess.spawn` so that, instead of
`python -m node_worker`, nsup gets a harmless real child process as the pid holder (`sh` waiting for
an exit code on its stdin: the pidfd exit watch and the gate's SIGKILL stay real) and, on nsup's own
event loop, a `SimNode`: a ZMQ DEALER on the link endpoint nsup passed, speaking supervisor.protocol
as node_worker/control_server.py does (Hello, heartbeats carrying the pid, one Reply with the status
per request, CheckVenues answered with the venue's own counts, StopNode(require_flat) checked by the
node itself).

The simulated node can do what a real one does to the counts, at any moment: open positions, send
orders that stay in flight and then rest, fill or are rejected, have a resting order fill late (after
HALTED too), and lose sight of what the venue holds (a trade by hand at the venue whose events never
arrive) or hold in its cache what the venue does not (a residual). Positions and orders live at the
`Venue`, so a crashed worker's exposure is still there for the next one, whose reconciliation (its
RunNode) learns everything the venue holds.

The `Referee` checks the guard the instant nsup acts, from the journal as nsup wrote it and from the
simulation's ground truth (see `Referee`), and records each violation with a category.
Timing knobs only (no logic) are turned down while patched: the answer timeout, the wait for a
stopped worker's exit before it is killed, and the supervisor's log output. And /proc shows every new
worker as the kernel can show a child whose exec is not finished when Popen returns (a quarter of
spawns on a loaded 2-core machine): no command line yet, until nsup's spawn has returned to the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import zmq
import zmq.asyncio
from loguru import logger

from supervisor import daemon, session
from supervisor import protocol as p
from supervisor.config import NsupConfig
from supervisor.control import protocol as c
from supervisor.control.server.operators import Operators
from supervisor.daemon import Supervisor, carried_on_at
from supervisor.journal import Journal, read_journal
from supervisor.lifecycle import ABORTED, ABORTING, CREATED, FLAT, RECOVERING, STARTING, STOPPED
from supervisor.persisted_state import PersistedState
from supervisor.persisted_state import load as load_state
from supervisor.worker_process import WorkerProcess

from _disk import Disk

CHILD_ARGV = ["sh", "-c", "read code; exit $code"]  # exits with whatever code the sim writes to it
EXIT_FILL_SECS = 0.03  # market_exit: the closing fills arrive this much later
STOP_EXIT_SECS = 0.01  # StopNode accepted: the worker exits this much later
ANSWER_TIMEOUT_SECS = 0.4  # instead of max(2 s, 2 heartbeats): a hung sim costs less wall time
WORKER_EXIT_TIMEOUT_SECS = 0.4  # instead of 30 s: a worker hanging in its stop is killed sooner
ORDER_TASK = "order"


@dataclass
class Venue:
    """The account at the venue: the truth every worker of this node trades against."""

    positions: int = 0  # open, and known to the node
    orders: int = 0  # resting, and known to the node
    hidden_positions: int = 0  # open at the venue, unknown to the node (a trade by hand, events lost)
    hidden_orders: int = 0  # resting at the venue, unknown to the node
    exits_fail: bool = False  # market_exit's closes do not fill (venue down, no liquidity)

    def counts(self) -> p.Counts:
        return p.Counts(self.positions + self.hidden_positions, 0, self.orders + self.hidden_orders)

    def learn_everything(self) -> None:
        """A node's reconciliation: what the venue holds, the node now knows."""
        self.positions += self.hidden_positions
        self.orders += self.hidden_orders
        self.hidden_positions = self.hidden_orders = 0


@dataclass
class Truth:
    """What was true at one moment, by the simulation's ground truth, not by what nsup was told."""

    cache_settled: bool  # no order open or in flight, no strategy exiting: nothing of the node's can trade
    venue_flat: bool  # the venue holds nothing of the node's (what the node knows of and what it does not)
    at: float = field(default_factory=time.monotonic)

    @property
    def flat(self) -> bool:
        """Flat as docs/design.md means it: a position the cache alone shows is not exposure."""
        return self.cache_settled and self.venue_flat


class SimNode:
    """One simulated worker process: a real child (the pid) and a DEALER on nsup's loop."""

    def __init__(self, world: World, endpoint: str, popen: subprocess.Popen, heartbeat_secs: float,
                 hello_delay: float, stop_hangs: bool, run_fails: bool, must_start_reducing: bool, first_record: int):
        self.world = world
        self.venue = world.venue
        self.popen = popen
        self.pid = popen.pid
        self.heartbeat_secs = heartbeat_secs
        self.hello_delay = hello_delay
        self.stop_hangs = stop_hangs  # acknowledges StopNode but never exits (a stop that hangs)
        self.run_fails = run_fails  # RunNode reconciles, then fails (engines not connected): HALTED, an error
        self.must_start_reducing = must_start_reducing  # spawned while a stop (or a pause) was pending
        self.first_record = first_record  # index of the first journal record of this worker's life
        self.adopted_before_run = False  # re-attached by a new nsup before it had run
        self.adopted_silent = False  # ... and hung before it had said anything
        self.node_state = "BUILT"
        self.trading_state = "ACTIVE"
        self.ran = False
        self.said_hello = False
        self.stopping = False
        self.residual = 0  # positions in this node's cache that the venue does not hold
        self.inflight = 0  # orders sent to the venue and not yet answered
        self.exits_running = 0
        self.strategy_state = "RUNNING"  # NautilusTrader's state of the one strategy: DEGRADED, FAULTED (for good)
        self.flat_reads: list[float] = []  # times of the flat reads (docs/design.md) since the last one that was not
        self.venue_check: Truth | None = None  # the truth when it last answered CheckVenues
        self.last_sent: p.NodeStatus | None = None  # the status nsup last heard from it (any message)
        self.heard_at_receipt: p.NodeStatus | None = None  # ... when the request being handled arrived
        self.exited_itself = False  # the sim ended its own process (a crash, or the exit after StopNode)
        self.killed_by_gate = False
        self.commands: list[str] = []
        self._unhung = asyncio.Event()
        self._unhung.set()
        self._socket = zmq.asyncio.Context.instance().socket(zmq.DEALER)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.connect(endpoint)
        self._tasks: set[asyncio.Task] = set()
        self._spawn(self._serve())

    # What the node reports ---------------------------------------------------------------------

    def status(self, with_venues: bool = False) -> p.NodeStatus:
        v = self.venue
        counts = p.Counts(v.positions + self.residual, self.inflight, v.orders) if self.ran else p.Counts(0, 0, 0)
        return p.NodeStatus(
            node_state=self.node_state,
            trading_state=self.trading_state,
            counts=counts,
            # An exit runs only while its strategy does (node_worker/closer.py, exiting()).
            strategies=[p.StrategyView("Sim-001", self.strategy_state, self.exits_running > 0 and self.strategy_state == "RUNNING")],
            positions=[p.PositionView("EURUSD.SIM", "LONG", "1000", "0 USD")] * counts.positions_open,
            ts=time.time(),
            venue_counts=v.counts() if with_venues else None,
            components={"Sim-001": self.strategy_state} if self.strategy_state != "RUNNING" else {},
            components_heard=3,
        )

    def truth(self) -> Truth:
        return Truth(self.status().is_settled(), self.venue.counts().all_zero())

    def truth_as_the_worker_checks(self) -> bool:
        """node_worker/control_server.py's StopNode check: flat, or nothing open and the venue flat."""
        status = self.status()
        return status.is_flat() or (status.is_settled() and self.venue.counts().all_zero())

    @property
    def gone(self) -> bool:
        return self.exited_itself or self.killed_by_gate

    @property
    def hung(self) -> bool:
        return not self._unhung.is_set()

    @property
    def alive_and_answering(self) -> bool:
        return not self.gone and not self.hung

    def can_trade(self) -> bool:
        """New risk only from a live, answering, running node in ACTIVE (the risk engine and the entry gate)."""
        return self.alive_and_answering and self.ran and not self.stopping and self.trading_state == "ACTIVE"

    def describe(self) -> str:
        return (f"pid {self.pid}: {self.node_state} {self.trading_state} hung={self.hung} stopping={self.stopping} "
                f"gone={self.gone} commands={self.commands[-12:]}")

    # The test's hands --------------------------------------------------------------------------

    def open_position(self) -> None:
        if self.can_trade():
            self.venue.positions += 1

    def send_order(self, outcome: str, delay: float) -> None:
        """An order in flight for `delay`, then resting, filled or rejected at the venue."""
        if not self.can_trade():
            return
        self.inflight += 1
        self._spawn(self._answer_order(outcome, delay), name=ORDER_TASK)

    async def _answer_order(self, outcome: str, delay: float) -> None:
        """The venue answers whatever became of the node meanwhile; a node that runs learns of it."""
        await asyncio.sleep(delay)
        self.inflight -= 1
        if outcome == "rests":
            self.venue.orders += 1
        elif outcome == "fills":
            self.venue.positions += 1

    def add_residual(self) -> None:
        if self.alive_and_answering and self.ran:
            self.residual += 1

    def reconcile(self) -> None:
        """The node's own periodic reconciliation corrects its cache from the venue."""
        if self.alive_and_answering and self.ran:
            self.residual = 0
            self.venue.learn_everything()

    def hang(self) -> None:
        self._unhung.clear()

    def unhang(self) -> None:
        self._unhung.set()

    def ask_to_stop(self, component: str, reason: str) -> None:
        """A component calls shutdown_system() (or an engine does, on an exception): the worker's
        shutdown guard asks nsup instead of stopping the node (node_worker/shutdown_guard.py)."""
        if not self.gone and self.said_hello:
            self._spawn(self._send(p.StopRequested(component=component, reason=reason)))

    def strategy_goes(self, state: str) -> None:
        """The strategy degrades, resumes or faults (NautilusTrader's own degrade(), resume(), fault()):
        the worker tells nsup (node_worker/component_watch.py). FAULTED is for good."""
        if self.gone or not self.said_hello or self.strategy_state in ("FAULTED", state):
            return
        source, self.strategy_state = self.strategy_state, state
        self._spawn(self._send(p.ComponentStateChange("Sim-001", "SimStrategy", source, state)))

    def crash(self, how: str) -> None:
        """The worker dies on its own: kill -9, or an exit with code 1."""
        if self.gone:
            return
        self.exited_itself = True
        if how == "kill":
            os.kill(self.pid, signal.SIGKILL)
        else:
            self._exit_code(1)
        self._die()

    def clean_exit(self) -> None:
        if self.gone:
            return
        self.exited_itself = True
        self._exit_code(0)
        self._die()

    def _exit_code(self, code: int) -> None:
        with contextlib.suppress(OSError):
            self.popen.stdin.write(f"{code}\n".encode())
            self.popen.stdin.flush()

    def _die(self, orders_too: bool = False) -> None:
        """The process is gone: its loop stops. An order already sent is the venue's to answer."""
        tasks = [t for t in self._tasks if orders_too or t.get_name() != ORDER_TASK]
        for task in tasks:
            task.cancel()
        self.world.loop.create_task(self._close_after(tasks))

    async def _close_after(self, tasks) -> None:
        await asyncio.gather(*tasks, return_exceptions=True)
        self._socket.close(linger=0)

    def _spawn(self, coro, name: str | None = None) -> None:
        task = self.world.loop.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:  # the sim itself broke: say so, loudly
            self.world.referee.violation("harness", f"simulated worker {self.pid} failed: {task.exception()!r}")

    # The worker's side of the protocol --------------------------------------------------------

    async def _send(self, message) -> None:
        await self._socket.send(p.encode(message))
        if getattr(message, "status", None) is not None:
            self.last_sent = message.status

    async def _serve(self) -> None:
        if self.hello_delay:
            await asyncio.sleep(self.hello_delay)  # building the node takes a while
        await self._unhung.wait()
        await self._send(p.Hello(p.PROTOCOL_VERSION, self.pid, "SIM-001", self.status()))
        self.said_hello = True
        self._spawn(self._heartbeat())
        while True:
            frame = await self._socket.recv()
            heard = self.last_sent  # what nsup had heard when it sent this
            await self._unhung.wait()  # a hung worker's loop is blocked: requests wait, then are answered late
            if self.gone:
                return
            try:
                request = p.decode_from_supervisor(frame)
            except p.ProtocolError as exc:
                self.world.referee.violation("protocol", f"pid {self.pid} got a frame it cannot read: {exc}")
                continue
            if not isinstance(request, p.Request):
                continue  # nsup's own heartbeat (Ping): nothing to answer
            self.heard_at_receipt = heard
            held = self.venue.counts()
            error = self._execute(request.command)
            # What the closer sent, as the worker names it: one action per position and order it found.
            actions = [f"close or cancel ({held})"] if isinstance(request.command, p.CloseAll) and not held.all_zero() else []
            status = self.status(with_venues=isinstance(request.command, p.CheckVenues))
            if isinstance(request.command, p.CheckVenues):
                self.venue_check = self.truth()
            if isinstance(request.command, p.GetStatus | p.Reconcile):  # the reads nsup takes flat from
                self.flat_reads = [*self.flat_reads, time.monotonic()] if self.truth_as_the_worker_checks() else []
            if error is None:
                await self._send(p.Reply(request.request_id, ok=True, status=status, actions=actions))
            else:
                await self._send(p.Reply(request.request_id, ok=False, status=status, error=error,
                                         code=p.ErrorCode.NODE_ERROR))

    async def _heartbeat(self) -> None:
        while True:
            await self._unhung.wait()
            await self._send(p.Heartbeat(self.status(), self.pid))
            await asyncio.sleep(self.heartbeat_secs)

    def _execute(self, command: p.Command) -> str | None:
        detail = f"({command.trading_state})" if isinstance(command, p.SetTradingState) else ""
        self.commands.append(type(command).__name__ + detail)
        match command:
            case p.GetStatus() | p.CheckVenues():
                return None
            case p.Reconcile():
                self.venue.learn_everything()  # a residual is the kind reconciliation does not clear (split netting)
                return None
            case p.CloseAll():
                if self.world.closer_fails:  # a bug in the closer, a cache it cannot read: an error, every time
                    return "nsup's closer failed: the cache could not be read"
                if self.ran:
                    if not self.inflight:  # as node_worker/closer.py: it reconciles only with nothing in flight
                        self.venue.learn_everything()
                    self._spawn(self._market_exit(denied=self.trading_state == "HALTED", closer=True))
                return None
            case p.RunNode():
                self.world.referee.on_run(self)
                self.venue.learn_everything()  # reconciliation
                self.ran = True
                if self.run_fails:  # as control_server does when the node does not come up
                    self.trading_state = "HALTED"
                    return "the node did not start (engines not connected); trading state set to HALTED"
                self.node_state = "STOPPING" if self.stopping else "RUNNING"
                return None
            case p.SetTradingState(trading_state=name):
                if name not in ("ACTIVE", "REDUCING", "HALTED"):
                    return f"unknown trading state {name!r}"
                if name == "HALTED":
                    self.world.referee.on_halted(self)
                self.trading_state = name
                return None
            case p.MarketExit():
                if self.ran:
                    self._spawn(self._market_exit(denied=self.trading_state == "HALTED"))
                return None
            case p.StopNode(require_flat=require_flat):
                self.world.referee.on_stop_node(self, require_flat)
                if self.stopping:
                    return None
                if require_flat and not self.truth_as_the_worker_checks():  # the worker's own check, as control_server does
                    return "refused to stop: not flat, and no operator approval"
                self.trading_state, self.stopping, self.node_state = "HALTED", True, "STOPPING"
                if not self.stop_hangs:
                    asyncio.get_running_loop().call_later(STOP_EXIT_SECS, self.clean_exit)
                return None
        return f"unknown command {command!r}"

    async def _market_exit(self, denied: bool, closer: bool = False) -> None:
        """market_exit() (or nsup's closer): the strategy cancels its orders and closes its positions
        (denied under HALTED, DESIGN.md); what it does not know of (hidden at the venue) and what the venue
        will not close (a residual in the cache) stays. A strategy that is not RUNNING does nothing of
        its exit (NautilusTrader checks it only while RUNNING); the closer acts whatever its state."""
        self.exits_running += 1
        try:
            await asyncio.sleep(EXIT_FILL_SECS)
            await self._unhung.wait()
            acts = closer or self.strategy_state == "RUNNING"
            if acts and not denied and not self.venue.exits_fail and not self.gone:
                self.venue.positions = self.venue.orders = 0
        finally:
            self.exits_running -= 1


class Referee:
    """The guard, checked the instant nsup acts, against the journal as nsup wrote it (records are
    heard as they are written) and the simulation's ground truth:

    - StopNode(require_flat) reaches a worker only in FLAT after a journaled flat transition of that
      worker, or in RECOVERING after its journaled restart transition (both verified flat: the worker's
      last CheckVenues found cache and venue flat, by the ground truth), or while it is starting up
      (the gate may end a worker that failed to start; the worker re-checks flat itself);
    - StopNode(require_flat=False) only in ABORTING, under an abort approval journaled for that worker;
    - SIGKILL only to a worker that is gone, never ran, was flat as nsup last heard it (a fresh status,
      or the last one before it went silent: DESIGN.md replaces a hung worker that was flat), is hanging
      in a stop it was rightly sent, or under an approval (abort, recover) on record; every end has its
      `worker_end` record (with the pid) before it is sent;
    - HALTED is set only after two flat GetStatus reads at least flat_confirm_secs apart, with no
      read between them that was not flat (HALTED denies the exits: it must not come early);
    - no second node runs beside a live one; a worker spawned while a stop or a pause is pending
      runs REDUCING from its first RunNode.
    """

    def __init__(self, world: World, flat_confirm_secs: float):
        self.world = world
        self.flat_confirm_secs = flat_confirm_secs
        self.violations: list[tuple[str, str]] = []  # (category, what happened)
        self.stops: list[tuple[int, bool]] = []
        self.kills: list[int] = []

    def violation(self, category: str, text: str) -> None:
        self.violations.append((category, f"{text}; nsup {self.world.state}; journal tail: {self.world.tail(8)}"))

    def _since(self, sim: SimNode) -> list[dict]:
        return self.world.records[sim.first_record:]

    def _end_record(self, sim: SimNode, action: str) -> dict | None:
        ends = [r for r in self._since(sim) if r["kind"] == "worker_end" and r.get("pid") == sim.pid
                and r["action"] == action]
        return ends[-1] if ends else None

    def _approved(self, sim: SimNode, record: dict | None, actions: tuple[str, ...]) -> bool:
        """An approval for one of `actions` on record, and on file (not held in memory: its guard reads
        the journal, and a full disk must not let an approval count that a crash would lose)."""
        nonce = record.get("approval_id") if record else None
        approvals = [r for r in self._since(sim) if r["kind"] == "approval" and r.get("nonce") == nonce
                     and r["action"] in actions] if nonce is not None else []
        on_file = self.world.file_ids()
        if approvals and not any(a["id"] in on_file for a in approvals):
            self.violation("not_durable", f"pid {sim.pid} ended under approval {nonce}, which is not on file")
        return bool(approvals)

    def _verified_flat(self, sim: SimNode, trigger: str) -> bool:
        moved = any(r["kind"] == "transition" and r["trigger"] == trigger for r in self._since(sim))
        return moved and sim.venue_check is not None and sim.venue_check.flat

    def on_stop_node(self, sim: SimNode, require_flat: bool) -> None:
        state = self.world.state
        self.stops.append((sim.pid, require_flat))
        record = self._end_record(sim, "stop_command")
        if record is None:
            self.violation("guard", f"StopNode to pid {sim.pid} with no worker_end on record")
        elif not require_flat:
            if not (state == ABORTING and self._approved(sim, record, ("abort",))):
                self.violation("guard", f"StopNode(require_flat=False) to pid {sim.pid} without an abort approval")
        elif state == FLAT:
            if not self._verified_flat(sim, "flat"):
                self.violation("guard", f"StopNode to pid {sim.pid} in FLAT, but not verified flat (venue check "
                                        f"{sim.venue_check}, truth now {sim.truth()})")
        elif state == RECOVERING and self._verified_flat(sim, "restart"):
            pass
        elif state in STARTING:  # a start-up failure: the gate may end it if it never ran, or on a fresh flat status
            if sim.ran and not (sim.heard_at_receipt is not None and heard_as_flat(sim.heard_at_receipt)):
                self.violation("guard", f"StopNode to pid {sim.pid}, which failed to start after reconciling, "
                                        f"without a fresh flat status (last heard {sim.heard_at_receipt and sim.heard_at_receipt.counts})")
        else:
            self.violation("guard", f"StopNode to pid {sim.pid} in {state}, without a verified flat or an approval")

    def on_signal(self, sim: SimNode | None, pid: int | None, sig: int) -> None:
        if sim is None:
            self.violation("guard", f"signal {sig} to pid {pid}, which is no worker of this node")
            return
        self.kills.append(sim.pid)
        record = self._end_record(sim, "sigkill")
        if record is None:
            self.violation("guard", f"signal {sig} to pid {sim.pid} with no worker_end on record")
        heard_flat = sim.last_sent is not None and heard_as_flat(sim.last_sent)
        stop_rightly_sent = sim.stopping and any(pid == sim.pid for pid, _ in self.stops)
        if not (sim.gone or not sim.ran or heard_flat or stop_rightly_sent
                or self._approved(sim, record, ("abort", "recover"))):
            self.violation("guard", f"signal {sig} to pid {sim.pid}: ran, alive, hung={sim.hung}, heard flat="
                                    f"{heard_flat}, not stopping, no approval; truth {sim.truth()}")

    def on_halted(self, sim: SimNode) -> None:
        reads = sim.flat_reads
        if len(reads) < 2 or reads[-1] - reads[0] < self.flat_confirm_secs:
            self.violation("early_halted", f"HALTED to pid {sim.pid} after {len(reads)} flat read(s) spanning "
                                           f"{(reads[-1] - reads[0]) if reads else 0:.3f}s (need 2, "
                                           f"{self.flat_confirm_secs}s apart)")

    def on_run(self, sim: SimNode) -> None:
        twins = [s.describe() for s in self.world.sims if s is not sim and s.ran and not s.gone]
        if twins:
            self.violation("twin", f"RunNode to pid {sim.pid} while other worker(s) still run: {twins}")
        if sim.must_start_reducing and sim.trading_state != "REDUCING" and not sim.ran:
            category = "start_not_reducing_after_reattach" if sim.adopted_before_run else "start_not_reducing"
            self.violation(category, f"pid {sim.pid} was started {sim.trading_state} although a stop or a pause "
                                     f"was pending (commands so far: {sim.commands})")

    def check_children(self) -> None:
        """A worker that died, and neither died by itself nor was signalled by the gate, was ended by
        something else: that is a way around the gate."""
        for sim in self.world.sims:
            if sim.gone or sim.popen.returncode is None and not _exited(sim.pid):
                continue
            self.violation("guard", f"pid {sim.pid} died ({sim.popen.returncode}) without the sim or the gate ending it")
            sim.exited_itself = True  # report once

    def check_one_end_each(self) -> None:
        """Per nsup session: a new nsup cannot know whether its crashed predecessor's stop reached the
        worker, so it may send it again; one nsup sends each ending once."""
        session, ends = 0, []
        for r in self.world.records:
            session += r["kind"] == "supervisor_start"
            if r["kind"] == "worker_end":
                ends.append((r.get("pid"), r["action"], session))
        twice = {end[:2] for end in ends if ends.count(end) > 1}
        if twice:
            self.violation("journal", f"a worker ended twice the same way: {sorted(twice)}")


@dataclass
class OperatorCall:
    """One request an operator sent through nsup's control handler, and what came of it."""

    actor: str
    command: str
    reply: c.Reply | None = None


class World:
    """Owns the venue, the sims, nsup (and its successors after a crash), the operators and the referee."""

    def __init__(self, config: NsupConfig, loop: asyncio.AbstractEventLoop):
        self.config = config
        self.loop = loop  # nsup's and the sims': the test's hands run between its turns
        self.venue = Venue()
        self.sims: list[SimNode] = []
        self.processes: list[WorkerProcess] = []
        self.referee = Referee(self, config.supervisor.flat_confirm_secs)
        self.hello_delay = 0.0
        self.stop_hangs = False
        self.run_fails = False
        self.closer_fails = False  # every CloseAll is answered with an error
        self.journal_path = config.supervisor.state_path / "journal.jsonl"
        self.state_path = config.supervisor.state_path / "state.json"
        self.disk = Disk(config.supervisor.state_path)  # the state dir's disk: it may fill up or fail
        self.rotated: list = []  # journal files renamed away, oldest first
        self.unwritten: list[dict] = []  # records a closing journal handed back: never on file (nsup logs them)
        self.kept: list[dict] = []  # the records on file at the end, read before the state dir goes
        self.journal: Journal | None = None
        self.records: list[dict] = []  # every record, as it is written, across nsup sessions
        self.sup: Supervisor | None = None
        self.operators: Operators | None = None
        self.sup_task: asyncio.Task | None = None
        self.session_starts: list[str] = []  # the state each nsup session began in
        self.session_ends: list[str] = []  # and the state it ended in
        self.sampled: list[list[str]] = []  # states seen by polling, per session
        self.calls: list[OperatorCall] = []
        self.op_tasks: set[asyncio.Task] = set()
        self.op_errors: list[BaseException] = []
        self._call_ids = 0
        self.mid_exec: set[int] = set()  # pids whose /proc/<pid>/cmdline still reads empty

    # Patching ----------------------------------------------------------------------------------

    @contextlib.contextmanager
    def patched(self):
        world = self
        real_spawn = WorkerProcess.__dict__["spawn"]
        real_attach = WorkerProcess.__dict__["attach"]
        real_signal = signal.pidfd_send_signal
        real_timeout, real_abort_kill = session.WORKER_EXIT_TIMEOUT_SECS, daemon.ABORT_KILL_AFTER_SECS
        real_answer = session.WorkerSession.__dict__["answer_timeout"]
        real_read_bytes = Path.read_bytes

        def spawn(cls, args: list[str], log_path: Path, spec: bytes = b"") -> WorkerProcess:
            return world._spawn_sim(cls, args)

        def attach(cls, pid: int) -> WorkerProcess:
            process = real_attach.__func__(cls, pid)
            world.processes.append(process)
            return process

        def read_bytes(path: Path) -> bytes:
            if path.name == "cmdline" and path.parent.name.isdigit() and int(path.parent.name) in world.mid_exec:
                return b""  # the exec is past its point of no return, the new program's argv not yet in place
            return real_read_bytes(path)

        def pidfd_send_signal(pidfd, sig, *args):
            pid = _pid_of_pidfd(pidfd)
            world._on_signal(pid, sig)
            return real_signal(pidfd, sig, *args)

        WorkerProcess.spawn = classmethod(spawn)
        WorkerProcess.attach = classmethod(attach)
        signal.pidfd_send_signal = pidfd_send_signal
        session.WORKER_EXIT_TIMEOUT_SECS = daemon.ABORT_KILL_AFTER_SECS = WORKER_EXIT_TIMEOUT_SECS
        session.WorkerSession.answer_timeout = property(lambda self: ANSWER_TIMEOUT_SECS)
        Path.read_bytes = read_bytes
        logger.disable("supervisor")
        try:
            with self.disk.installed():
                yield
        finally:
            logger.enable("supervisor")
            Path.read_bytes = real_read_bytes
            session.WorkerSession.answer_timeout = real_answer
            session.WORKER_EXIT_TIMEOUT_SECS, daemon.ABORT_KILL_AFTER_SECS = real_timeout, real_abort_kill
            signal.pidfd_send_signal = real_signal
            WorkerProcess.attach = real_attach
            WorkerProcess.spawn = real_spawn

    def _spawn_sim(self, cls, args: list[str]) -> WorkerProcess:
        endpoint = args[args.index("--link") + 1]
        heartbeat = float(args[args.index("--heartbeat-secs") + 1])
        popen = subprocess.Popen([*CHILD_ARGV, "sim-worker", *args], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, start_new_session=True)
        self.mid_exec.add(popen.pid)
        self.loop.call_soon(self.mid_exec.discard, popen.pid)  # its exec finishes while nsup goes on
        process = cls(popen.pid, popen)
        self.processes.append(process)
        now = self.sup.snapshot()
        pending = now.stop is not None or now.paused
        self.sims.append(SimNode(self, endpoint, popen, heartbeat, self.hello_delay, self.stop_hangs, self.run_fails,
                                 pending, first_record=len(self.records)))
        return process

    def _on_signal(self, pid: int | None, sig: int) -> None:
        sim = next((s for s in self.sims if s.pid == pid), None)
        self.referee.on_signal(sim, pid, sig)
        if sim is not None and not sim.gone:
            sim.killed_by_gate = True
            sim._die()

    # The supervisor, and its successors --------------------------------------------------------

    @property
    def state(self) -> str | None:
        return self.sup.lifecycle.state if self.sup else None

    def tail(self, n: int = 30) -> list[str]:
        return [" ".join(f"{k}={v}" for k, v in r.items() if k not in ("ts", "id", "evidence"))[:200]
                for r in self.records[-n:]]

    def _open_journal(self) -> None:
        self.journal = Journal(self.journal_path)
        self.journal.listen(self.records.append)

    def close_journal(self) -> None:
        self.unwritten += [msgspec.json.decode(line) for line in self.journal.close()]
        self.journal = None

    def rotate_journal(self) -> None:
        """logrotate renames the journal away (nsup opens a new one at its next record)."""
        if self.journal_path.exists():
            rotated = self.journal_path.with_name(f"journal.jsonl.{len(self.rotated) + 1}")
            self.journal_path.rename(rotated)
            self.rotated.append(rotated)

    def on_file(self) -> list[dict]:
        """Every record on file, oldest first: the rotated files, then the journal."""
        return [r for path in [*self.rotated, self.journal_path] if path.exists() for r in read_journal(path)]

    def file_ids(self) -> set[str]:
        return {r["id"] for r in self.on_file()}

    def _start_supervisor(self, carry_on_from: PersistedState | None) -> None:
        self.sup = Supervisor(self.config, self.journal, carry_on_from)
        self.operators = Operators(self.sup, [])
        self.sampled.append([])
        self.sup_task = asyncio.ensure_future(self.sup.run())

    async def start(self) -> None:
        self._open_journal()
        self.session_starts.append(CREATED)
        self._start_supervisor(None)
        deadline = asyncio.get_running_loop().time() + 5.0
        while self.state != "RUNNING" and self.running and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        assert self.state == "RUNNING", f"nsup did not start: {self.state}"

    def sample(self) -> None:
        if self.sup is not None and self.sampled:
            self.sampled[-1].append(self.sup.lifecycle.state)

    @property
    def running(self) -> bool:
        return self.sup_task is not None and not self.sup_task.done()

    def current_sim(self) -> SimNode | None:
        live = [s for s in self.sims if not s.gone]
        return live[-1] if live else None

    async def crash_supervisor(self) -> None:
        """nsup dies (the task is cancelled) and a new one carries on from the persisted state, as
        `nsup run` does after a crash: unless that state is terminal (then the session is over). Not
        while state.json is behind (a full disk): a new nsup would find an older worker on record than
        the one running and refuse to start beside it (tests/e2e/test_startup.py), which ends the story."""
        if not self.running or "state.json" in (self.sup.snapshot().degraded or ""):
            return
        self.sup_task.cancel()
        await asyncio.gather(self.sup_task, return_exceptions=True)
        await self.cancel_ops()
        was = load_state(self.state_path)
        if was is None:
            self.referee.violation("journal", "no persisted state after a supervisor ran")
            return
        if was.state != self.sup.lifecycle.state:
            self.referee.violation("journal", f"persisted state {was.state} != the machine's {self.sup.lifecycle.state}")
        self.session_ends.append(self.sup.lifecycle.state)
        self.close_journal()
        if was.state in (STOPPED, ABORTED):
            self.sup_task = None
            return
        for sim in self.sims:
            if was.worker is not None and sim.pid == was.worker.pid and not sim.ran:
                sim.adopted_before_run = True
                sim.adopted_silent = sim.hung and not sim.said_hello
                sim.must_start_reducing = sim.must_start_reducing or was.stop is not None or was.paused
        self._open_journal()
        self.session_starts.append(carried_on_at(was.state))
        self._start_supervisor(was)
        await asyncio.sleep(0.005)  # as in `nsup run`, nothing reaches the new nsup before its carry-on has begun

    # Operators ---------------------------------------------------------------------------------

    def signal(self, sig: signal.Signals) -> None:
        """A signal to nsup, as its loop's signal handler delivers it (systemd's SIGTERM, a Ctrl-C)."""
        if self.running:
            self.loop.call_soon(self.operators.on_signal, sig)

    def operator(self, command: str, **fields) -> None:
        """One operator's request through nsup's control handler (journaled there), beside the scenario.
        abort and recover are the challenge and its answer: the trader id typed, a reason given."""
        if not self.running:
            return
        self._call_ids += 1
        user = f"op{self._call_ids}"
        call = OperatorCall(f"{user}@sim", command)
        self.calls.append(call)
        handler = self.operators

        def request(tag: str, **extra):
            return c.decode_request(c.encode({"v": c.CONTROL_VERSION, "id": f"r{self._call_ids}", "command": tag,
                                              "actor": {"user": user, "host": "sim"}, **extra}))

        async def carry_out():
            try:
                call.reply = await handler.handle(request(command))
                if command in ("abort", "recover") and call.reply.status == "ok":
                    challenge = call.reply.data
                    answer = {"nonce": challenge["nonce"], "confirmation": challenge["trader_id"],
                              "reason": f"{command} approved by {user}"} | fields
                    call.reply = await handler.handle(request(f"{command}_confirm", **answer))
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # noqa: BLE001 (the control handler must answer, never raise)
                self.op_errors.append(exc)

        task = self.loop.create_task(carry_out(), name=command)
        self.op_tasks.add(task)
        task.add_done_callback(self.op_tasks.discard)

    def pending_ops(self) -> list[str]:
        return sorted(task.get_name() for task in self.op_tasks if not task.done())

    async def cancel_ops(self) -> None:
        tasks = list(self.op_tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def close(self) -> None:
        """Everything down: the supervisor, the operators, the sims, every child; nothing left behind."""
        if self.running:
            self.sup_task.cancel()
            await asyncio.gather(self.sup_task, return_exceptions=True)
        await self.cancel_ops()
        for sim in self.sims:
            sim.exited_itself = True
            sim._die(orders_too=True)
            with contextlib.suppress(ProcessLookupError):
                os.kill(sim.pid, signal.SIGKILL)
        pending = [proc.exited for proc in self.processes if not proc.exited.done()]
        if pending:
            await asyncio.wait(pending, timeout=5)
        await asyncio.sleep(0)
        for sim in self.sims:
            with contextlib.suppress(OSError):
                sim.popen.stdin.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                sim.popen.wait(timeout=5)
        if self.journal is not None:
            self.close_journal()


def heard_as_flat(status: p.NodeStatus) -> bool:
    """The gate's rule for a fresh status: flat, or nothing open and the venues (asked) holding nothing."""
    return status.is_flat() or (status.is_settled() and status.venue_says_flat())


def _pid_of_pidfd(fd: int) -> int | None:
    try:
        with open(f"/proc/self/fdinfo/{fd}") as f:
            for line in f:
                if line.startswith("Pid:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _exited(pid: int) -> bool:
    """Has our child `pid` exited (zombie or reaped)? Without reaping it: that is nsup's to do."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True
