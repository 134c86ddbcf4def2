"""The one way to stop or signal the node worker, and the guard in front of it.

DESIGN.md: nothing that can end the worker (the stop command, SIGTERM, SIGKILL) is sent unless the
last fresh status says flat, or an operator's approval for exactly that action is on record, or the
worker is already gone. `decide` is that rule, pure; `StopGate.end_worker` is the only code in
supervisor/ that sends StopNode or a signal, and it asks `decide` first and journals every answer.
"""

from __future__ import annotations

import enum
import signal
from dataclasses import dataclass

from loguru import logger

from supervisor import protocol as p
from supervisor.journal import Journal
from supervisor.lifecycle import Approval
from supervisor.worker_link import LinkError, WorkerLink
from supervisor.worker_process import WorkerProcess


class EndAction(enum.StrEnum):
    STOP_COMMAND = "stop_command"  # ask the worker to stop and dispose the node and exit 0
    SIGTERM = "sigterm"
    SIGKILL = "sigkill"


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str


def decide(action: EndAction, fresh_status: p.NodeStatus | None, approval: Approval | None, worker_alive: bool) -> Decision:
    if not worker_alive:
        return Decision(True, "the worker is already gone")
    if approval is not None:
        if approval.action == action:
            return Decision(True, f"approved by {approval.operator} ({approval.approval_id}): {approval.reason}")
        return Decision(False, f"the approval on record is for {approval.action}, not {action}")
    if fresh_status is None:
        return Decision(False, "no fresh status from the worker (hung or unreachable) and no approval on record")
    if not fresh_status.is_flat():
        return Decision(False, f"not flat: {describe_exposure(fresh_status)}")
    return Decision(True, "the worker's fresh status is flat")


def describe_exposure(status: p.NodeStatus) -> str:
    c = status.counts
    exiting = [s.strategy_id for s in status.strategies if s.is_exiting]
    text = f"positions_open={c.positions_open} orders_inflight={c.orders_inflight} orders_open={c.orders_open}"
    return text + (f" exiting={','.join(exiting)}" if exiting else "")


class StopGate:
    def __init__(self, process: WorkerProcess, link: WorkerLink, journal: Journal, status_timeout_secs: float):
        self._process = process
        self._link = link
        self._journal = journal
        self._status_timeout_secs = status_timeout_secs

    async def end_worker(self, action: EndAction, actor: str, approval: Approval | None = None) -> Decision:
        status = await self._fresh_status() if self._process.alive() else None
        decision = decide(action, status, approval, self._process.alive())
        counts = status.counts if status is not None else None
        if not decision.allowed:
            logger.warning("refused to {} the worker: {}", action, decision.reason)
            self._journal.record("refusal", action=str(action), actor=actor, reason=decision.reason, counts=counts)
            return decision
        self._journal.record(
            "worker_end", action=str(action), actor=actor, reason=decision.reason, counts=counts,
            approval_id=approval.approval_id if approval else None,
        )
        if not self._process.alive():
            return decision
        if action == EndAction.STOP_COMMAND:
            # The worker checks flat again on its own loop before it stops, unless an approval stands:
            # no fill can slip in between this read and the stop.
            stop = p.StopNode(require_flat=approval is None)
            try:
                await self._link.request(stop, self._status_timeout_secs)
            except LinkError as exc:
                self._journal.record("refusal", action=str(action), actor="worker", reason=str(exc), counts=counts)
                return Decision(False, str(exc))
        else:
            signal.pidfd_send_signal(self._process.pidfd, signal.SIGTERM if action == EndAction.SIGTERM else signal.SIGKILL)
        return decision

    async def _fresh_status(self) -> p.NodeStatus | None:
        try:
            return (await self._link.request(p.GetStatus(), self._status_timeout_secs)).status
        except LinkError:
            return None
