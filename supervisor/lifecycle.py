"""The node's lifecycle as nsup owns it: states, triggers and guards, with no I/O.

The daemon fires triggers with the evidence a guard needs (flat reads, an approval); the machine
answers with the transition or a refusal and the reason. The observer it was built with (the
daemon, which journals) is told after each transition.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from transitions import Machine, MachineError

from supervisor.protocol import NodeStatus

CREATED, BUILT, RUNNING, HALTING, FLAT = "CREATED", "BUILT", "RUNNING", "HALTING", "FLAT"
STOPPED, ABORTED, RECOVERING = "STOPPED", "ABORTED", "RECOVERING"

STATES = [CREATED, BUILT, RUNNING, HALTING, FLAT, STOPPED, ABORTED, RECOVERING]
WORKER_STATES = [CREATED, BUILT, RUNNING, HALTING, FLAT]  # where a worker can be lost

# trigger        source                    dest         guard
TRANSITIONS = [
    ("build",       [CREATED, RECOVERING], BUILT,      None),  # worker spawned, handshake done, node built
    ("run",         BUILT,                 RUNNING,    None),  # node RUNNING, reconciliation succeeded
    ("halt",        RUNNING,               HALTING,    None),  # REDUCING, market_exit, count
    ("flat",        HALTING,               FLAT,       "flat_is_verified"),
    ("resume",      HALTING,               RUNNING,    None),  # an operator cancels the shutdown
    ("abort",       HALTING,               ABORTED,    "abort_is_approved"),
    ("stop",        FLAT,                  STOPPED,    "worker_exited_cleanly"),
    ("restart",     RUNNING,               RECOVERING, "flat_is_verified"),  # an operator's, when flat
    ("worker_lost", WORKER_STATES,         RECOVERING, None),  # exit, crash, missed heartbeats
    ("give_up",     RECOVERING,            ABORTED,    None),  # the restart bound is spent
]


@dataclass(frozen=True)
class Approval:
    """An operator's approval, on record in the journal, for exactly one action ("abort")."""

    action: str
    operator: str
    reason: str
    approval_id: str


@dataclass(frozen=True)
class FlatReads:
    """Status reads offered as proof of flat, and the time between the first and the last as nsup's
    own monotonic clock measured it (the worker's wall clock may step)."""

    reads: tuple[NodeStatus, ...]
    span_secs: float


@dataclass(frozen=True)
class Outcome:
    ok: bool
    reason: str = ""


def verified_flat(evidence: FlatReads | None, min_interval_secs: float) -> bool:
    """DESIGN.md: all three counts zero and no strategy exiting, in two reads some interval apart;
    HALTED set on the last read, so that nothing can open once nsup has called it flat; and on that
    last read the venues themselves asked and holding nothing (the node's cache can be wrong)."""
    if evidence is None or len(evidence.reads) < 2 or not all(r.is_flat() for r in evidence.reads):
        return False
    last = evidence.reads[-1]
    venues_flat = last.venue_counts is not None and last.venue_counts.all_zero()
    return evidence.span_secs >= min_interval_secs and last.trading_state == "HALTED" and venues_flat


class Lifecycle:
    def __init__(self, flat_interval_secs: float, on_transition: Callable[[str, str, str, dict], None]):
        self._flat_interval_secs = flat_interval_secs
        self._on_transition = on_transition
        self.state: str = CREATED
        self._machine = Machine(
            model=self,
            states=STATES,
            initial=CREATED,
            transitions=[
                {"trigger": t, "source": s, "dest": d, **({"conditions": g} if g else {})}
                for t, s, d, g in TRANSITIONS
            ],
            auto_transitions=False,
            send_event=True,
            after_state_change="_announce",
        )

    def resume_at(self, state: str) -> None:
        """Where a crashed supervisor left the node, as its persisted state says; no transition."""
        if state not in STATES:
            raise ValueError(f"unknown lifecycle state {state!r}")
        self._machine.set_state(state, model=self)

    def fire(self, trigger: str, **evidence) -> Outcome:
        """Try one trigger; never raises for a trigger that does not apply, says why instead."""
        source = self.state
        if trigger not in self._machine.events:
            return Outcome(False, f"{trigger!r} is not a trigger of this lifecycle")
        try:
            moved = self.trigger(trigger, **evidence)
        except MachineError:
            return Outcome(False, f"{trigger!r} is not allowed in {source}")
        if not moved:
            guard = next(g for t, s, d, g in TRANSITIONS if t == trigger and _matches(s, source))
            return Outcome(False, f"{trigger!r} refused in {source}: {guard} does not hold")
        return Outcome(True)

    # Guards: each reads only the evidence fired with the trigger.
    def flat_is_verified(self, event) -> bool:
        return verified_flat(event.kwargs.get("evidence"), self._flat_interval_secs)

    def abort_is_approved(self, event) -> bool:
        approval = event.kwargs.get("approval")
        return isinstance(approval, Approval) and approval.action == "abort"

    def worker_exited_cleanly(self, event) -> bool:
        return event.kwargs.get("exit_code") == 0

    def _announce(self, event) -> None:
        self._on_transition(event.event.name, event.transition.source, event.transition.dest, event.kwargs)


def _matches(source, state: str) -> bool:
    return state == source or (isinstance(source, list) and state in source)
