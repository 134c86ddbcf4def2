"""A simulated node worker and a harness that runs the real Supervisor against it (not a test module).

Only the worker is fake. `Harness.patched()` replaces `WorkerProcess.spawn` so that, instead of
`python -m node_worker`, it starts a harmless real child process as the pid holder (`sh` waiting
for an exit code on its stdin: pidfd exit watching and the gate's SIGKILL stay real) and, on the
same event loop, a `SimWorker`: a ZMQ DEALER on the link endpoint nsup passed, speaking
supervisor.protocol like node_worker/control_server.py does (Hello, Heartbeats carrying the pid,
one Reply with the status per Request, StopNode(require_flat) checked by the worker itself).

Positions live at the venue (`Venue`), not in the worker: a crashed worker's positions are still
there, and the next worker reports them once it has run (reconciled). The harness is the referee:
it records every StopNode and every signal nsup sends, with the simulated counts at that moment,
and notes a violation of the guard the instant it happens.

Timing knobs only (no logic) are turned down while patched: the answer timeout, the wait for a
stopped worker's exit before it is killed, and the supervisor's log output.
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

import zmq
import zmq.asyncio
from loguru import logger

from supervisor import daemon
from supervisor import protocol as p
from supervisor.config import NsupConfig
from supervisor.daemon import Supervisor
from supervisor.journal import Journal
from supervisor.lifecycle import ABORTED, STOPPED, Approval
from supervisor.persisted_state import PersistedState
from supervisor.persisted_state import load as load_state
from supervisor.worker_process import WorkerProcess

CHILD_ARGV = ["sh", "-c", "read code; exit $code"]  # exits with whatever code the sim writes to it
EXIT_FILL_SECS = 0.03  # market_exit: the closing fills arrive this much later
STOP_EXIT_SECS = 0.01  # StopNode accepted: the worker exits this much later
ANSWER_TIMEOUT_SECS = 0.4  # instead of max(2 s, 2 heartbeats): a hung sim costs less wall time
WORKER_EXIT_TIMEOUT_SECS = 0.4  # instead of 30 s: a worker hanging in its stop is killed sooner
CHECK_VENUES = getattr(p, "CheckVenues", None)  # the venues' own account, where the protocol has it


@dataclass
class Venue:
    """The account at the venue: what every worker of this node reports once it has run."""

    positions: int = 0
    orders_open: int = 0
    exits_fail: bool = False  # market_exit's closes do not fill (venue down, no liquidity)


@dataclass
class EndRecord:
    """One StopNode or one signal that reached a simulated worker, and what was true at that moment."""

    what: str  # "StopNode(require_flat=...)" or "signal 9"
    pid: int
    counts: tuple[int, int, int]
    flat: bool
    approved: bool
    gone: bool
    hung: bool
    heard_flat: bool  # the last status it sent (in a reply, or in any message) said flat: nsup's knowledge
    at: float = field(default_factory=time.monotonic)


class SimWorker:
    """One simulated worker process: a real child (the pid) and a DEALER on nsup's loop."""

    def __init__(self, harness: Harness, endpoint: str, popen: subprocess.Popen, heartbeat_secs: float,
                 hello_delay: float, stop_hangs: bool, must_start_reducing: bool):
        self.h = harness
        self.popen = popen
        self.pid = popen.pid
        self.heartbeat_secs = heartbeat_secs
        self.hello_delay = hello_delay
        self.stop_hangs = stop_hangs  # acknowledges StopNode but never exits (a stop that hangs)
        self.must_start_reducing = must_start_reducing  # spawned while a stop (or a pause) was pending
        self.adopted_before_run = False  # re-attached by a new nsup before it had run
        self.adopted_silent = False  # ... and hung before it had said anything
        self.node_state = "BUILT"
        self.trading_state = "ACTIVE"
        self.ran = False
        self.said_hello = False
        self.stopping = False
        self.approved_end = False  # received StopNode(require_flat=False): an operator's abort
        self.recover_approved = False  # an operator approved killing it while it was hung ("recover")
        self.last_sent: p.NodeStatus | None = None  # the status nsup last heard from it (any message)
        self.last_reply: p.NodeStatus | None = None  # ... in a reply to a request
        self.heard_at_receipt: tuple = (None, None)  # (last_sent, last_reply) when the current request arrived
        self.exits_running = 0
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
        v = self.h.venue
        counts = p.Counts(v.positions, 0, v.orders_open) if self.ran else p.Counts(0, 0, 0)  # reconciled on run
        venues = {"venue_counts": p.Counts(v.positions, 0, v.orders_open)} if with_venues else {}
        return p.NodeStatus(
            node_state=self.node_state,
            trading_state=self.trading_state,
            counts=counts,
            strategies=[p.StrategyView("Sim-001", "RUNNING", self.exits_running > 0)],
            positions=[p.PositionView("EURUSD.SIM", "LONG", "1000", "0 USD")] * counts.positions_open,
            ts=time.time(),
            **venues,
        )

    @property
    def gone(self) -> bool:
        return self.exited_itself or self.killed_by_gate

    @property
    def hung(self) -> bool:
        return not self._unhung.is_set()

    def can_trade(self) -> bool:
        """New risk only from a live, answering, running node in ACTIVE (the risk engine's rule)."""
        return not self.gone and not self.hung and self.ran and not self.stopping and self.trading_state == "ACTIVE"

    def describe(self) -> str:
        return (f"pid {self.pid}: {self.node_state} {self.trading_state} hung={self.hung} stopping={self.stopping} "
                f"gone={self.gone} commands={self.commands}")

    # The test's hands --------------------------------------------------------------------------

    def hang(self) -> None:
        self._unhung.clear()

    def unhang(self) -> None:
        self._unhung.set()

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

    def _die(self) -> None:
        for task in self._tasks:
            task.cancel()
        asyncio.ensure_future(self._close_after(list(self._tasks)))

    async def _close_after(self, tasks) -> None:
        await asyncio.gather(*tasks, return_exceptions=True)
        self._socket.close(linger=0)

    def _spawn(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:  # the sim itself broke: say so, loudly
            self.h.violation("harness", f"simulated worker {self.pid} failed: {task.exception()!r}")

    # The worker's side of the protocol --------------------------------------------------------

    async def _send(self, message) -> None:
        await self._socket.send(p.encode(message))
        if getattr(message, "status", None) is not None:
            self.last_sent = message.status
            if isinstance(message, p.Reply):
                self.last_reply = message.status

    async def _serve(self) -> None:
        if self.hello_delay:
            await asyncio.sleep(self.hello_delay)  # building the node takes a while
        await self._unhung.wait()
        await self._send(p.Hello(p.PROTOCOL_VERSION, self.pid, "SIM-001", self.status()))
        self.said_hello = True
        self._spawn(self._heartbeat())
        while True:
            frame = await self._socket.recv()
            heard = (self.last_sent, self.last_reply)  # what nsup had heard when it sent this
            await self._unhung.wait()  # a hung worker's loop is blocked: requests wait, then are answered late
            if self.gone:
                return
            try:
                request = p.decode_from_supervisor(frame)
            except p.ProtocolError as exc:
                self.h.violation("protocol", f"pid {self.pid} got a frame it cannot read: {exc}")
                continue
            if not isinstance(request, p.Request):
                continue  # nsup's own heartbeat (Ping) and the like: nothing to answer
            self.heard_at_receipt = heard
            error = self._execute(request.command)
            status = self.status(with_venues=CHECK_VENUES is not None and isinstance(request.command, CHECK_VENUES))
            if error is None:
                await self._send(p.Reply(request.request_id, ok=True, status=status))
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
            case p.GetStatus():
                return None
            case _ if CHECK_VENUES is not None and isinstance(command, CHECK_VENUES):
                return None  # the reply carries venue_counts
            case p.RunNode():
                self.h.on_run(self)
                self.node_state, self.ran = ("STOPPING" if self.stopping else "RUNNING"), True
                return None
            case p.SetTradingState(trading_state=name):
                if name not in ("ACTIVE", "REDUCING", "HALTED"):
                    return f"unknown trading state {name!r}"
                self.trading_state = name
                return None
            case p.MarketExit():
                if self.ran:
                    self._spawn(self._market_exit(denied=self.trading_state == "HALTED"))
                return None
            case p.StopNode(require_flat=require_flat):
                self.h.on_stop_node(self, require_flat)
                if self.stopping:
                    return None
                if require_flat and not self.status().is_flat():  # the worker's own check, as control_server does
                    return "refused to stop: not flat, and no operator approval"
                self.approved_end = self.approved_end or not require_flat
                self.trading_state, self.stopping, self.node_state = "HALTED", True, "STOPPING"
                if not self.stop_hangs:
                    asyncio.get_running_loop().call_later(STOP_EXIT_SECS, self.clean_exit)
                return None
        return f"unknown command {command!r}"

    async def _market_exit(self, denied: bool) -> None:
        """market_exit(): closing orders (denied under HALTED, DESIGN.md), filled a little later."""
        self.exits_running += 1
        try:
            await asyncio.sleep(EXIT_FILL_SECS)
            await self._unhung.wait()
            if not denied and not self.h.venue.exits_fail and not self.gone:
                self.h.venue.positions = self.h.venue.orders_open = 0
        finally:
            self.exits_running -= 1


class Harness:
    """Owns the venue, the sims, the supervisor (and its successors after a crash), and the referee."""

    def __init__(self, config: NsupConfig):
        self.config = config
        self.venue = Venue()
        self.sims: list[SimWorker] = []
        self.processes: list[WorkerProcess] = []
        self.approvals: list[Approval] = []
        self.stops: list[EndRecord] = []
        self.signals: list[EndRecord] = []
        self.violations: list[tuple[str, str]] = []  # (category, what happened)
        self.hello_delay = 0.0
        self.stop_hangs = False
        self.journal_path = config.supervisor.state_path / "journal.jsonl"
        self.state_path = config.supervisor.state_path / "state.json"
        self.journal: Journal | None = None
        self.sup: Supervisor | None = None
        self.sup_task: asyncio.Task | None = None
        self.session_starts: list[str] = []  # the state each nsup session began in
        self.session_ends: list[str] = []  # and the state it ended in
        self.sampled: list[list[str]] = []  # states seen by polling, per session
        self.ended_by_crash_in_terminal_state = False
        self.op_tasks: set[asyncio.Task] = set()
        self.op_errors: list[BaseException] = []
        self.records: list[dict] = []  # the journal, once the run is over
        self.pending_at_last_stop: list[str] = []  # operator calls still unanswered when the last stop was asked

    # Patching ----------------------------------------------------------------------------------

    @contextlib.contextmanager
    def patched(self):
        harness = self
        real_spawn = WorkerProcess.__dict__["spawn"]
        real_attach = WorkerProcess.__dict__["attach"]
        real_signal = signal.pidfd_send_signal
        real_timeout = daemon.WORKER_EXIT_TIMEOUT_SECS
        real_answer = Supervisor.__dict__["_answer_timeout"]

        def spawn(cls, args: list[str], log_path: Path) -> WorkerProcess:
            return harness._spawn_sim(cls, args)

        def attach(cls, pid: int) -> WorkerProcess:
            process = real_attach.__func__(cls, pid)
            harness.processes.append(process)
            return process

        def pidfd_send_signal(pidfd, sig, *args):
            harness._on_signal(_pid_of_pidfd(pidfd), sig)
            return real_signal(pidfd, sig, *args)

        WorkerProcess.spawn = classmethod(spawn)
        WorkerProcess.attach = classmethod(attach)
        signal.pidfd_send_signal = pidfd_send_signal
        daemon.WORKER_EXIT_TIMEOUT_SECS = WORKER_EXIT_TIMEOUT_SECS
        Supervisor._answer_timeout = property(lambda self: ANSWER_TIMEOUT_SECS)
        logger.disable("supervisor")
        try:
            yield
        finally:
            logger.enable("supervisor")
            Supervisor._answer_timeout = real_answer
            daemon.WORKER_EXIT_TIMEOUT_SECS = real_timeout
            signal.pidfd_send_signal = real_signal
            WorkerProcess.attach = real_attach
            WorkerProcess.spawn = real_spawn

    def _spawn_sim(self, cls, args: list[str]) -> WorkerProcess:
        endpoint = args[args.index("--link") + 1]
        heartbeat = float(args[args.index("--heartbeat-secs") + 1])
        popen = subprocess.Popen([*CHILD_ARGV, "sim-worker", *args], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, start_new_session=True)
        process = cls(popen.pid, popen)
        self.processes.append(process)
        sup = self.sup
        pending = sup.shutdown_requested or sup.paused
        self.sims.append(SimWorker(self, endpoint, popen, heartbeat, self.hello_delay, self.stop_hangs, pending))
        return process

    # The referee -------------------------------------------------------------------------------

    def violation(self, category: str, text: str) -> None:
        self.violations.append((category, text))

    def _record(self, what: str, sim: SimWorker, heard: tuple | None = None) -> EndRecord:
        s = sim.status()
        heard = heard or (sim.last_sent, sim.last_reply)
        c = s.counts
        return EndRecord(what, sim.pid, (c.positions_open, c.orders_inflight, c.orders_open), s.is_flat(),
                         sim.approved_end or sim.recover_approved, sim.gone, sim.hung,
                         any(st is not None and st.is_flat() for st in heard))

    def on_stop_node(self, sim: SimWorker, require_flat: bool) -> None:
        """StopNode, as the worker takes it off its socket (a hung one: once it answers again)."""
        record = self._record(f"StopNode(require_flat={require_flat})", sim, sim.heard_at_receipt)
        self.stops.append(record)
        aborts = [a for a in self.approvals if a.action == "abort"]
        if not require_flat and not aborts:
            self.violation("guard", f"{record.what} to pid {sim.pid} without an operator's abort approval")
        # Not flat now is allowed only where nsup could not know: what it last heard said flat (a
        # fill after the last read, or a hung worker), and the worker's own check refuses the stop.
        if not (record.flat or record.heard_flat or (not require_flat and aborts)):
            self.violation("guard", f"{record.what} to pid {sim.pid} while not flat {record.counts} "
                                    f"(trading_state={sim.trading_state}), nor heard flat, and without approval")

    def _on_signal(self, pid: int | None, sig: int) -> None:
        sim = next((s for s in self.sims if s.pid == pid), None)
        if sim is None:
            self.violation("guard", f"signal {sig} to pid {pid}, which is no worker of this node")
            return
        record = self._record(f"signal {sig}", sim)
        self.signals.append(record)
        # DESIGN.md: "a hung ... worker that was flat is restarted": for a worker that cannot answer,
        # what it said last is the freshest status there is.
        if not (record.gone or record.flat or record.approved or record.heard_flat):
            self.violation("guard", f"signal {sig} to pid {pid} while not flat {record.counts}, alive, "
                                    f"hung={sim.hung}, not heard flat, and without approval")
        if not sim.gone:
            sim.killed_by_gate = True
            sim._die()

    def on_run(self, sim: SimWorker) -> None:
        twins = [s.describe() for s in self.sims if s is not sim and s.ran and not s.gone]
        if twins:
            self.violation("twin", f"RunNode to pid {sim.pid} while other worker(s) still run: {twins}")
        if sim.must_start_reducing and sim.trading_state != "REDUCING" and not sim.ran:
            category = "start_not_reducing_after_reattach" if sim.adopted_before_run else "start_not_reducing"
            self.violation(category, f"pid {sim.pid} was started {sim.trading_state} although a stop or a "
                                     f"pause was pending when it was {'adopted' if sim.adopted_before_run else 'spawned'} "
                                     f"(commands so far: {sim.commands})")

    def check_children(self) -> None:
        """A worker that died, and neither died by itself nor was signalled by the gate, was ended by
        something else: that is a way around the gate."""
        for sim in self.sims:
            if sim.gone or sim.popen.returncode is None and not _exited(sim.pid):
                continue
            self.violation("guard", f"pid {sim.pid} died ({sim.popen.returncode}) without the sim or the gate ending it")
            sim.exited_itself = True  # report once

    # The supervisor, and its successors --------------------------------------------------------

    def start(self) -> None:
        self.journal = Journal(self.journal_path)
        self.sup = Supervisor(self.config, self.journal)
        self.session_starts.append("CREATED")
        self.sampled.append([])
        self.sup_task = asyncio.ensure_future(self.sup.run())

    def pending_ops(self) -> list[str]:
        return sorted(task.get_name() for task in self.op_tasks if not task.done())

    def sample(self) -> None:
        if self.sup is not None:
            self.sampled[-1].append(self.sup.lifecycle.state)

    @property
    def running(self) -> bool:
        return self.sup_task is not None and not self.sup_task.done()

    def current_sim(self) -> SimWorker | None:
        live = [s for s in self.sims if not s.gone]
        return live[-1] if live else None

    async def crash_supervisor(self, already_dead: bool = False) -> None:
        """nsup dies (the task is cancelled) and a new one carries on from the persisted state, as
        `nsup run` does after a crash: unless that state is terminal (then the session is over).
        `already_dead`: nsup has died by itself (raised), and is started again the same way."""
        if not self.running and not already_dead:
            return
        self.sup_task.cancel()
        await asyncio.gather(self.sup_task, return_exceptions=True)
        await self.cancel_ops()
        was: PersistedState | None = load_state(self.state_path)
        if was is None:
            self.violation("journal", "no persisted state after a supervisor ran")
            return
        if was.state != self.sup.lifecycle.state:
            self.violation("journal", f"persisted state {was.state} != the machine's {self.sup.lifecycle.state}")
        self.session_ends.append(self.sup.lifecycle.state)
        self.journal.close()
        self.journal = None
        if was.state in (STOPPED, ABORTED):
            self.ended_by_crash_in_terminal_state = True
            self.sup_task = None
            return
        for sim in self.sims:
            if was.worker is not None and sim.pid == was.worker.pid and not sim.ran:
                sim.adopted_before_run = True
                sim.adopted_silent = sim.hung and not sim.said_hello
                sim.must_start_reducing = sim.must_start_reducing or was.shutdown_requested or was.paused
        self.journal = Journal(self.journal_path)
        self.sup = Supervisor(self.config, self.journal, carry_on_from=was)
        self.session_starts.append(was.state)
        self.sampled.append([])
        self.sup_task = asyncio.ensure_future(self.sup.run())
        await asyncio.sleep(0.005)  # as in `nsup run`, nothing reaches the new nsup before its carry-on has begun

    def op(self, coro, name: str) -> None:
        """An operator's call that may wait (set_trading_state, walk): runs beside the scenario."""

        async def guarded():
            try:
                await coro
            except (daemon.Refused, daemon.LinkError):
                pass  # refused or not answered: both are normal answers to an operator
            except asyncio.CancelledError:
                raise
            except BaseException as exc:
                self.op_errors.append(exc)

        task = asyncio.get_running_loop().create_task(guarded(), name=name)
        self.op_tasks.add(task)
        task.add_done_callback(self.op_tasks.discard)

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
            if not sim.gone:
                sim.exited_itself = True
                sim._die()
            with contextlib.suppress(ProcessLookupError):
                os.kill(sim.pid, signal.SIGKILL)
        pending = [p.exited for p in self.processes if not p.exited.done()]
        if pending:
            await asyncio.wait(pending, timeout=5)
        await asyncio.sleep(0)
        for sim in self.sims:
            with contextlib.suppress(OSError):
                sim.popen.stdin.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                sim.popen.wait(timeout=5)
        if self.journal is not None:
            self.journal.close()
            self.journal = None


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
