"""The one way to stop or kill the node worker, and the guard in front of it.

DESIGN.md: nothing that can end the worker (the stop command, a kill) is sent unless the last fresh
status says flat, or an operator's approval for exactly that action is on record, or the worker is
already gone. `decide` is that rule, pure; `StopGate.end_worker` is the only code in supervisor/
that sends StopNode or a signal, and it asks `decide` first and journals every answer.

(SIGTERM is not among the means: the worker ignores it by design, so only nsup ends the node.)
"""

from __future__ import annotations

import enum
import signal
from dataclasses import dataclass

from loguru import logger

from supervisor import protocol as p
from supervisor.journal import Journal, count_fields
from supervisor.intent import Approval
from supervisor.worker_link import NoAnswer, WorkerLink, WorkerRefused
from supervisor.worker_process import WorkerProcess

ENDING_APPROVALS = frozenset({"abort", "recover"})  # operator actions whose approval covers ending the worker


class EndAction(enum.StrEnum):
    STOP_COMMAND = "stop_command"  # the worker stops and disposes the node, then exits 0
    SIGKILL = "sigkill"  # for a worker that no longer answers


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str
    acknowledged: bool = True  # a stop command that was sent and not answered: the worker may be frozen


def decide(
    fresh_status: p.NodeStatus | None, approval: Approval | None, worker_alive: bool, node_ever_ran: bool,
    last_known: p.NodeStatus | None = None,
) -> Decision:
    """`last_known`: the last status heard before the worker fell silent (used only when no fresh
    one can be had): DESIGN.md, a hung worker that was flat is replaced; one with exposure is not."""
    if not worker_alive:
        return Decision(True, "the worker is already gone")
    if approval is not None and approval.action in ENDING_APPROVALS:
        return Decision(True, f"{approval.action} approved by {approval.operator} ({approval.approval_id}): {approval.reason}")
    # An approval for anything else covers nothing here: the other grounds still stand.
    if fresh_status is not None:
        if fresh_status.is_flat():
            return Decision(True, "the worker's fresh status is flat")
        if fresh_status.is_settled() and fresh_status.venue_says_flat():
            return Decision(True, "nothing is open and the venues hold nothing: the positions the node's cache "
                                  "shows are a disagreement, not exposure")
        return Decision(False, f"not flat: {describe_exposure(fresh_status)}")
    if not node_ever_ran:
        return Decision(True, "no status, but the node was never run by nsup, so it trades nothing")
    if last_known is not None and last_known.is_flat():
        return Decision(True, "the worker does not answer, and was flat when last heard")
    if last_known is not None:
        return Decision(False, f"the worker does not answer, and was not flat when last heard: {describe_exposure(last_known)}")
    return Decision(False, "no fresh status from the worker (hung or unreachable) and no approval on record")


def describe_exposure(status: p.NodeStatus) -> str:
    """The counts, and what keeps the node from flat by name: positions, orders (with their owners),
    strategies still exiting."""
    c, v = status.counts, status.venue_counts
    exiting = [s.strategy_id for s in status.strategies if s.is_exiting]
    text = f"positions_open={c.positions_open} orders_inflight={c.orders_inflight} orders_open={c.orders_open}"
    if v is not None:
        text += f" (at the venues: positions_open={v.positions_open} orders_open={v.orders_open})"
    named = [f"{p.instrument_id} {p.side} {p.quantity}" for p in status.positions]
    named += [f"order {o.client_order_id} {o.instrument_id} {o.side} {o.quantity} {o.order_type} {o.status} ({o.owner})"
              for o in status.orders]
    return text + (f" exiting={','.join(exiting)}" if exiting else "") + (f": {'; '.join(named)}" if named else "")


class StopGate:
    def __init__(self, process: WorkerProcess, link: WorkerLink, journal: Journal, status_timeout_secs: float):
        self._process = process
        self._link = link
        self._journal = journal
        self._status_timeout_secs = status_timeout_secs

    async def end_worker(
        self, action: EndAction, actor: str, approval: Approval | None = None, node_ever_ran: bool = True
    ) -> Decision:
        # Under an approval that covers the end the answer is yes whatever the counts: no wait for a
        # fresh status (a frozen worker would cost its timeout); the record carries the last one heard.
        covered = approval is not None and approval.action in ENDING_APPROVALS
        status = None if covered else await self._fresh_status()
        decision = decide(status, approval, self._process.alive(), node_ever_ran, self._link.last_status)
        counts = count_fields(self._link.last_status if covered else status)
        record = dict(action=str(action), pid=self._process.pid, actor=actor, reason=decision.reason, **counts)
        if not decision.allowed:
            logger.warning("refused to end the worker ({}): {}", action, decision.reason)
            self._journal.record("refusal", **record)
            return decision
        self._journal.record("worker_end", **record, approval_id=approval.approval_id if approval else None)
        if not self._process.alive():
            return decision
        if action == EndAction.SIGKILL:
            signal.pidfd_send_signal(self._process.pidfd, signal.SIGKILL)
            return decision
        # The worker sets HALTED and checks flat again on its own loop before it stops, unless an
        # approval stands: no fill can slip in between this read and the stop.
        try:
            await self._link.request(p.StopNode(require_flat=approval is None), self._status_timeout_secs)
        except WorkerRefused as exc:
            self._journal.record("refusal", **{**record, "actor": "worker", "reason": str(exc)})
            return Decision(False, str(exc))
        except NoAnswer as exc:
            self._journal.record("fault", reason=f"the stop command was not acknowledged ({exc})")
            return Decision(True, decision.reason, acknowledged=False)
        return decision

    async def _fresh_status(self) -> p.NodeStatus | None:
        """The worker's status now; where nothing can trade but its cache still shows positions, with
        what the venues hold (the judge, docs/design.md)."""
        if not self._process.alive():
            return None
        try:
            status = (await self._link.request(p.GetStatus(), self._status_timeout_secs)).status
            if status.is_settled() and not status.is_flat():
                status = (await self._link.request(p.CheckVenues(), self._status_timeout_secs)).status
            return status
        except (NoAnswer, WorkerRefused):
            return None
