"""The daemon around the lifecycle: spawns the worker, drives the machine, does all the I/O.

One coroutine, `_drive`, walks the happy path CREATED -> BUILT -> RUNNING -> HALTING -> FLAT ->
STOPPED. Anything the worker does on its own (exit, crash) surfaces as WorkerLost wherever the walk
is waiting, so no step can miss it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time

from loguru import logger

from supervisor import protocol as p
from supervisor.config import NsupConfig
from supervisor.console import Console
from supervisor.journal import Journal
from supervisor.lifecycle import Lifecycle, Outcome
from supervisor.stop_gate import EndAction, StopGate, describe_exposure
from supervisor.worker_link import LinkError, WorkerLink
from supervisor.worker_process import WorkerProcess

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_ABORTED = 0, 1, 2, 3

FLAT_POLL_SECS = 0.05
STUCK_REMINDER_SECS = 60.0
WORKER_EXIT_TIMEOUT_SECS = 30.0


class WorkerLost(Exception):
    def __init__(self, exit_code: int):
        super().__init__(f"worker exited with code {exit_code}")
        self.exit_code = exit_code


class Supervisor:
    def __init__(self, config: NsupConfig, journal: Journal, console: Console):
        self.config = config
        self.journal = journal
        self.console = console
        self.lifecycle = Lifecycle(config.supervisor.flat_confirm_secs, self._on_transition)
        self._shutdown = asyncio.Event()
        self._shutdown_actor = ""
        self.link: WorkerLink | None = None
        self.process: WorkerProcess | None = None
        self.gate: StopGate | None = None

    # Entry point -------------------------------------------------------------------------------

    async def run(self) -> int:
        s = self.config.supervisor
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        self.link = WorkerLink(f"ipc://{s.run_path / 'worker.sock'}", self._on_notice, self._on_status)
        self.journal.record("supervisor_start", pid=os.getpid(), state=self.lifecycle.state, factory=self.config.node.factory)
        self.process = WorkerProcess.spawn(
            [
                "--link", self.link.endpoint,
                "--factory", self.config.node.factory,
                "--params", json.dumps(self.config.node.params),
                "--heartbeat-secs", str(s.heartbeat_interval_secs),
            ],
            log_path=s.state_path / "worker.log",
        )
        self.journal.record("worker_spawned", pid=self.process.pid, log=str(s.state_path / "worker.log"))
        self.gate = StopGate(self.process, self.link, self.journal, status_timeout_secs=max(2.0, 2 * s.heartbeat_interval_secs))
        try:
            code = await self._drive()
        finally:
            self.link.close()
        self.journal.record("supervisor_exit", code=code, state=self.lifecycle.state)
        return code

    def request_shutdown(self, actor: str) -> None:
        """The graceful stop: flatten, verify flat, then stop. Repeats change nothing."""
        if self._shutdown.is_set():
            self.journal.record("command", command="stop", actor=actor, result="already shutting down; nsup stops once flat")
            logger.warning("{} asked to stop again: already shutting down, nsup stops once flat", actor)
            return
        self.journal.record("command", command="stop", actor=actor, result="graceful stop requested")
        self._shutdown_actor = actor
        self._shutdown.set()

    # The walk ----------------------------------------------------------------------------------

    async def _drive(self) -> int:
        s = self.config.supervisor
        try:
            try:
                hello = await self._while_alive(asyncio.wait_for(self.link.wait_hello(), s.startup_timeout_secs))
                if hello.version != p.PROTOCOL_VERSION:
                    raise LinkError(f"worker speaks protocol {hello.version}, nsup speaks {p.PROTOCOL_VERSION}")
                self.journal.record("worker_hello", pid=hello.pid, trader_id=hello.trader_id)
                self._fire("build", actor="nsup")
                await self._while_alive(self._command(p.RunNode(s.startup_timeout_secs), timeout=s.startup_timeout_secs + 5))
                self._fire("run", actor="nsup")
            except (LinkError, TimeoutError) as exc:
                return await self._fail_startup(str(exc) or "no hello from the worker in time")
            await self._while_alive(self._shutdown.wait())
            self._fire("halt", actor=self._shutdown_actor)
            await self._halt_until_flat()
            return await self._stop_flat_worker()
        except WorkerLost as lost:
            return self._on_worker_lost(lost.exit_code)

    async def _halt_until_flat(self) -> None:
        """HALTING: REDUCING, market_exit in bounded rounds, then FLAT once verified. Never gives up
        into a stop: when the budget is spent it stays here, loudly, until flat or an operator acts."""
        s = self.config.supervisor
        await self._while_alive(self._insist(p.SetTradingState("REDUCING")))
        for round_no in range(1, s.flatten_rounds + 1):
            await self._while_alive(self._insist(p.MarketExit(), round=round_no))
            reads = await self._while_alive(self._wait_for_flat(s.flatten_round_wait_secs))
            if reads and await self._enter_flat(reads):
                return
            self.journal.record("flatten_round", round=round_no, of=s.flatten_rounds, flat=False, **self._counts())
        self._report_stuck()
        reminded = time.monotonic()
        while True:  # stuck: only flat (e.g. closed by hand at the venue), resume or abort move on
            reads = await self._while_alive(self._wait_for_flat(s.heartbeat_interval_secs))
            if reads and await self._enter_flat(reads):
                return
            if time.monotonic() - reminded > STUCK_REMINDER_SECS:
                reminded = time.monotonic()
                logger.critical("still HALTING and not flat: {}", describe_exposure(self.link.last_status))

    async def _enter_flat(self, reads: list[p.NodeStatus]) -> bool:
        halted = await self._while_alive(self._insist(p.SetTradingState("HALTED")))
        if self._fire("flat", actor="nsup", reads=[*reads, halted.status]).ok:
            return True
        await self._while_alive(self._insist(p.SetTradingState("REDUCING")))  # not flat after all
        return False

    async def _stop_flat_worker(self) -> int:
        await self._end_worker(EndAction.STOP_COMMAND)
        try:
            code = await asyncio.wait_for(asyncio.shield(self.process.exited), WORKER_EXIT_TIMEOUT_SECS)
        except TimeoutError:
            logger.error("the flat worker did not exit {}s after the stop command", WORKER_EXIT_TIMEOUT_SECS)
            await self._end_worker(EndAction.SIGKILL)
            code = await self.process.exited
        self.journal.record("worker_exit", pid=self.process.pid, code=code)
        if self._fire("stop", actor="nsup", exit_code=code).ok:
            return EXIT_OK
        return self._on_worker_lost(code)

    async def _fail_startup(self, reason: str) -> int:
        self.journal.record("fault", reason=f"start-up failed in {self.lifecycle.state}: {reason}")
        if self.process.alive():
            await self._end_worker(EndAction.STOP_COMMAND)
        code = await self.process.exited
        return self._on_worker_lost(code, reason)

    def _on_worker_lost(self, exit_code: int, reason: str | None = None) -> int:
        reason = reason or self.link.build_failure or f"the worker exited with code {exit_code} in {self.lifecycle.state}"
        self.journal.record("fault", reason=reason, exit_code=exit_code, **self._counts())
        self._fire("worker_lost", actor="worker", reason=reason)
        self._fire("give_up", actor="nsup", reason="no restart policy is configured, so recovery is exhausted at once")
        return EXIT_ABORTED

    # Helpers -----------------------------------------------------------------------------------

    async def _end_worker(self, action: EndAction) -> None:
        """Ask the gate until it allows; a refusal is journaled by the gate, and we wait and retry."""
        while not (await self.gate.end_worker(action, actor="nsup")).allowed:
            await asyncio.sleep(self.config.supervisor.heartbeat_interval_secs)

    async def _wait_for_flat(self, budget_secs: float) -> list[p.NodeStatus] | None:
        """Two flat reads `flat_confirm_secs` apart within the budget, or None."""
        confirm = self.config.supervisor.flat_confirm_secs
        deadline = time.monotonic() + budget_secs
        while time.monotonic() < deadline:
            first = (await self._insist(p.GetStatus())).status
            if first.is_flat():
                self.journal.record("flat_seen", confirm_in_secs=confirm)
                await asyncio.sleep(confirm)
                second = (await self._insist(p.GetStatus())).status
                if second.is_flat():
                    return [first, second]
            await asyncio.sleep(FLAT_POLL_SECS)
        return None

    async def _command(self, command: p.Command, timeout: float | None = None, **details) -> p.Reply:
        timeout = timeout or max(2.0, 2 * self.config.supervisor.heartbeat_interval_secs)
        reply = await self.link.request(command, timeout)
        if not isinstance(command, p.GetStatus):
            self.journal.record("worker_command", command=command, actor="nsup", **details, **self._counts())
        return reply

    async def _insist(self, command: p.Command, **details) -> p.Reply:
        """A command that must get through: while the worker does not answer (hung, busy), it is
        not killed; the silence is journaled once as a fault, and the command is tried again."""
        silent_since = None
        while True:
            try:
                reply = await self._command(command, **details)
            except LinkError as exc:
                if silent_since is None:
                    silent_since = time.monotonic()
                    self.journal.record("fault", reason=f"the worker does not answer: {exc}; nsup keeps trying and "
                                        "will not stop or signal it without flat status or an approval", **self._counts())
                await asyncio.sleep(self.config.supervisor.heartbeat_interval_secs)
                continue
            if silent_since is not None:
                self.journal.record("worker_answering", silent_secs=round(time.monotonic() - silent_since, 3))
            return reply

    async def _while_alive(self, awaitable):
        """Await, but raise WorkerLost the moment the worker exits."""
        task = asyncio.ensure_future(awaitable)
        await asyncio.wait([task, self.process.exited], return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        task.cancel()
        raise WorkerLost(self.process.exited.result())

    def _fire(self, trigger: str, actor: str, **evidence) -> Outcome:
        outcome = self.lifecycle.fire(trigger, actor=actor, **evidence)
        if not outcome.ok:
            self.journal.record("refusal", trigger=trigger, actor=actor, reason=outcome.reason, **self._counts())
        return outcome

    def _counts(self) -> dict:
        status = self.link.last_status if self.link else None
        if status is None:
            return {"positions_open": None, "orders_inflight": None, "orders_open": None}
        return {f: getattr(status.counts, f) for f in ("positions_open", "orders_inflight", "orders_open")}

    def _report_stuck(self) -> None:
        status = self.link.last_status
        reason = (
            f"not flat after {self.config.supervisor.flatten_rounds} market_exit rounds: {describe_exposure(status)}. "
            "nsup stays HALTING and will not stop or signal the worker; it goes on once flat, "
            "or on an operator's resume or approved abort"
        )
        self.journal.record("halt_stuck", reason=reason, positions=status.positions, **self._counts())

    # Callbacks ---------------------------------------------------------------------------------

    def _on_transition(self, trigger: str, source: str, dest: str, evidence: dict) -> None:
        self.journal.record(
            "transition", trigger=trigger, source=source, dest=dest, actor=evidence.get("actor"),
            reason=evidence.get("reason"), **self._counts(),
        )

    def _on_signal(self, sig: signal.Signals) -> None:
        self.journal.record("signal", signal=sig.name, state=self.lifecycle.state)
        self.request_shutdown(actor=f"signal:{sig.name}")

    def _on_notice(self, text: str) -> None:
        self.journal.record("worker_notice", text=text)

    def _on_status(self, status: p.NodeStatus) -> None:
        self.console.on_status(self.lifecycle.state, status)
