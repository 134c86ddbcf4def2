"""The node's lifecycle as nsup owns it: states, triggers and guards, with no I/O.

The table is the one answer to "may this happen now?": nsup's own steps and every operator command
are triggers in it, and `Lifecycle.allows` reads it. Busy work is a state of its own, the way
NautilusTrader's ComponentState has STARTING and STOPPING: an operator's restart is RESTARTING
until the old worker is verified flat, an approved abort is ABORTING until the worker is gone, and a
stop that has spent its flatten rounds is STUCK (still trying, goes on by itself once flat). Commands
that change no state (pause, flatten, recover) are internal transitions, drawn as loops.

The daemon fires triggers with the evidence a guard needs (flat reads, an approval, the pending
stop); the machine answers with the transition or a refusal and the reason. The observer it was
built with (the daemon, which journals) is told after each change of state.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from transitions import Machine, MachineError

from supervisor.holdings import Holdings
from supervisor.intent import Approval, StopRequest
from supervisor.protocol import NodeStatus

CREATED, BUILT, RUNNING, RESTARTING, HALTING, STUCK = "CREATED", "BUILT", "RUNNING", "RESTARTING", "HALTING", "STUCK"
FLAT, ABORTING, STOPPED, ABORTED, RECOVERING = "FLAT", "ABORTING", "STOPPED", "ABORTED", "RECOVERING"

STATES = [CREATED, BUILT, RUNNING, RESTARTING, HALTING, STUCK, FLAT, ABORTING, STOPPED, ABORTED, RECOVERING]
TERMINAL = (STOPPED, ABORTED)
WITH_WORKER = [CREATED, BUILT, RUNNING, RESTARTING, HALTING, STUCK, FLAT]  # where a worker can be lost
ANSWERING = [BUILT, RUNNING, RESTARTING, HALTING, STUCK]  # a worker that should be answering: watched for hangs
STOPPING = (HALTING, STUCK, FLAT, ABORTING)  # a stop is under way
STARTING = (CREATED, BUILT, RECOVERING)  # no node running yet

# trigger        source                     dest         guard                                      what it is
TRANSITIONS = [
    ("build",      [CREATED, RECOVERING],   BUILT,       None),                                   # worker spawned, said hello, node built
    ("run",        BUILT,                   RUNNING,     None),                                   # node RUNNING, reconciled
    ("pause",      RUNNING,                 None,        None),                                   # closing orders only; stays RUNNING
    ("unpause",    RUNNING,                 None,        None),                                   # new entries again
    ("flatten",    [RUNNING, HALTING, STUCK], None,      None),                                   # market_exit now, without stopping
    ("restart",    RUNNING,                 RESTARTING,  None),                                   # an operator's: a new worker, once flat
    ("not_flat",   RESTARTING,              RUNNING,     None),                                   # ... refused: not flat
    ("halt",       [RUNNING, RESTARTING],   HALTING,     None),                                   # the graceful stop: REDUCING, market_exit rounds
    ("stuck",      HALTING,                 STUCK,       None),                                   # not flat after every round
    ("flat",       [HALTING, STUCK],        FLAT,        "flat_is_verified"),                     # HALTED; then the worker is stopped
    ("flat",       RESTARTING,              RECOVERING,  "flat_is_verified"),                     # the old worker goes, a new one comes
    ("resume",     [HALTING, STUCK],        RUNNING,     "stop_is_resumable"),                    # an operator cancels the stop
    ("abort",      [HALTING, STUCK],        ABORTING,    "abort_is_approved"),                    # stopped with exposure, under the approval
    ("ended",      ABORTING,                ABORTED,     None),                                   # ... and the worker is gone
    ("stop",       FLAT,                    STOPPED,     "worker_exited_cleanly"),
    ("recover",    ANSWERING,               None,        ["worker_is_hung", "recover_is_approved"]),  # a hung worker killed, to be replaced
    ("worker_lost", WITH_WORKER,            RECOVERING,  None),                                   # exit, crash, kill, failed start
    ("give_up",    RECOVERING,              ABORTED,     None),                                   # the restart bound is spent
    ("abandon",    list(STARTING),          STOPPED,     "nothing_is_held"),                      # a stop before the node ever ran
]


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


def verified_flat(evidence: FlatReads | None, min_interval_secs: float, trust_cache: bool = False) -> bool:
    """docs/design.md, "Verified flat": two or more reads some interval apart (on nsup's clock), none
    with an order open or in flight or a strategy exiting; HALTED on the last, so that nothing can open
    once nsup has called it flat; and on that last read the venues asked. If every venue answered and
    holds nothing, a position the node's cache still shows is a disagreement, not exposure (the venue
    is the judge). If a venue could not say, the cache must be flat too, and a venue that cannot say
    is taken on the cache's word only where the config trusts it (`trust_cache`)."""
    if evidence is None or len(evidence.reads) < 2 or not all(r.is_settled() for r in evidence.reads):
        return False
    last = evidence.reads[-1]
    if last.trading_state != "HALTED" or last.venue_counts is None or not last.venue_counts.all_zero():
        return False
    if last.venue_unavailable and not (trust_cache and all(r.is_flat() for r in evidence.reads)):
        return False
    return evidence.span_secs >= min_interval_secs


def nothing_is_held(node_ran, ended_with) -> bool:
    """A start may be given up without a flatten only if no node of this nsup ever ran and the last
    session ended flat: then nothing nsup opened can be open. Where exposure may exist (the last
    session ended with positions, or its end is unknown; a node that ran and was lost), the stop
    waits for a node that can flatten and verify."""
    return node_ran is False and isinstance(ended_with, Holdings) and ended_with.is_flat()


def sources(trigger: str) -> list[str]:
    """The states `trigger` may be fired in, read off the table."""
    found = [s for t, source, _, _ in TRANSITIONS if t == trigger for s in (source if isinstance(source, list) else [source])]
    if not found:
        raise ValueError(f"{trigger!r} is not a trigger of the lifecycle")
    return found


class Lifecycle:
    def __init__(self, flat_interval_secs: float, on_transition: Callable[[str, str, str, dict], None],
                 trust_cache: bool = False):
        """`trust_cache`: a venue that cannot say what it holds is taken on the node's cache's word
        (config: venue_check = "trust_cache"); never by default."""
        self._flat_interval_secs = flat_interval_secs
        self._trust_cache = trust_cache
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

    def allows(self, trigger: str) -> bool:
        """Whether the table has `trigger` in the current state (its guard is judged when it is fired)."""
        return self.state in sources(trigger)

    def why_not(self, trigger: str) -> str:
        return f"{trigger} only in {' or '.join(sources(trigger))}; nsup is {self.state}"

    def fire(self, trigger: str, **evidence) -> Outcome:
        """Try one trigger; never raises for a trigger that does not apply, says why instead."""
        source = self.state
        if trigger not in self._machine.events:
            return Outcome(False, f"{trigger!r} is not a trigger of this lifecycle")
        try:
            moved = self.trigger(trigger, **evidence)
        except MachineError:
            return Outcome(False, self.why_not(trigger))
        if not moved:
            guard = next(g for t, s, d, g in TRANSITIONS if t == trigger and _matches(s, source))
            named = " and ".join(guard) if isinstance(guard, list) else guard
            return Outcome(False, f"{trigger!r} refused in {source}: {named} does not hold{_explained(guard, evidence)}")
        return Outcome(True)

    # Guards: each reads only the evidence fired with the trigger.
    def flat_is_verified(self, event) -> bool:
        return verified_flat(event.kwargs.get("evidence"), self._flat_interval_secs, self._trust_cache)

    def abort_is_approved(self, event) -> bool:
        return _approved(event, "abort")

    def recover_is_approved(self, event) -> bool:
        return _approved(event, "recover")

    def worker_is_hung(self, event) -> bool:
        return event.kwargs.get("hung") is True

    def stop_is_resumable(self, event) -> bool:
        stop = event.kwargs.get("stop")
        return isinstance(stop, StopRequest) and not stop.final

    def nothing_is_held(self, event) -> bool:
        return nothing_is_held(event.kwargs.get("node_ran"), event.kwargs.get("ended_with"))

    def worker_exited_cleanly(self, event) -> bool:
        return event.kwargs.get("exit_code") == 0

    def _announce(self, event) -> None:
        if event.transition.dest is None:
            return  # an internal transition: the state is unchanged, the command journals itself
        self._on_transition(event.event.name, event.transition.source, event.transition.dest, event.kwargs)


def _explained(guard, evidence: dict) -> str:
    """Why, where a guard's name alone would leave an operator guessing."""
    stop = evidence.get("stop")
    if guard == "nothing_is_held":
        return (": a node of this nsup ran, or the last session did not end flat; the stop waits for a node that "
                "can flatten and verify")
    if guard == "stop_is_resumable" and isinstance(stop, StopRequest):
        return (f": this stop came from {stop.actor} (the service manager or a terminal), which expects nsup to exit; "
                "only a stop asked for with nsupctl can be resumed")
    return ""


def _approved(event, action: str) -> bool:
    approval = event.kwargs.get("approval")
    return isinstance(approval, Approval) and approval.action == action


def _matches(source, state: str) -> bool:
    return state == source or (isinstance(source, list) and state in source)
