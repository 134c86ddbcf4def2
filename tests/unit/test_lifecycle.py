"""The lifecycle FSM: exactly the DESIGN.md table, its guards, and `fire` never raising."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from _statuses import (
    VENUES_FLAT,
    any_flat_reads,
    flat_reads,
    nearly_flat_reads,
    status,
    verified_flat_oracle,
    verified_flat_reads,
)
from supervisor import lifecycle as lc
from supervisor import protocol as p
from supervisor.holdings import Holdings
from supervisor.intent import StopRequest
from supervisor.lifecycle import Approval, FlatReads, Lifecycle, Outcome, nothing_is_held, verified_flat

INTERVAL = 0.5

# Written out from docs/design.md "The lifecycle", not derived from lifecycle.TRANSITIONS. An internal
# transition (a command that changes no state) has no destination.
WITH_WORKER = ["CREATED", "BUILT", "RUNNING", "RESTARTING", "HALTING", "STUCK", "FLAT"]
EXPECTED_TRANSITIONS = {
    ("build", "CREATED", "BUILT"),
    ("build", "RECOVERING", "BUILT"),
    ("run", "BUILT", "RUNNING"),
    ("pause", "RUNNING", None),
    ("unpause", "RUNNING", None),
    ("flatten", "RUNNING", None),
    ("flatten", "HALTING", None),
    ("flatten", "STUCK", None),
    ("restart", "RUNNING", "RESTARTING"),
    ("not_flat", "RESTARTING", "RUNNING"),
    ("halt", "RUNNING", "HALTING"),
    ("halt", "RESTARTING", "HALTING"),  # a stop wins over a restart under way
    ("stuck", "HALTING", "STUCK"),
    ("flat", "HALTING", "FLAT"),
    ("flat", "STUCK", "FLAT"),
    ("flat", "RESTARTING", "RECOVERING"),
    ("resume", "HALTING", "RUNNING"),
    ("resume", "STUCK", "RUNNING"),
    ("abort", "HALTING", "ABORTING"),
    ("abort", "STUCK", "ABORTING"),
    ("ended", "ABORTING", "ABORTED"),
    ("stop", "FLAT", "STOPPED"),
    *(("recover", s, None) for s in ["BUILT", "RUNNING", "RESTARTING", "HALTING", "STUCK"]),
    *(("worker_lost", s, "RECOVERING") for s in WITH_WORKER),
    ("give_up", "RECOVERING", "ABORTED"),
    *(("abandon", s, "STOPPED") for s in ["CREATED", "BUILT", "RECOVERING"]),  # a stop before any node ran
}
EXPECTED_GUARDS = {
    "flat": {"flat_is_verified"}, "abort": {"abort_is_approved"}, "stop": {"worker_exited_cleanly"},
    "resume": {"stop_is_resumable"}, "recover": {"worker_is_hung", "recover_is_approved"},
    "abandon": {"nothing_is_held"},
}
EXPECTED_STATES = ["CREATED", "BUILT", "RUNNING", "RESTARTING", "HALTING", "STUCK", "FLAT", "ABORTING", "STOPPED",
                   "ABORTED", "RECOVERING"]
TRIGGERS = sorted({t for t, _, _ in EXPECTED_TRANSITIONS})
HAPPY_NEXT = {"CREATED": "build", "BUILT": "run", "RUNNING": "halt", "HALTING": "flat", "STUCK": "flat", "FLAT": "stop",
              "RECOVERING": "build", "RESTARTING": "flat", "ABORTING": "ended"}
ABORT_OK = Approval(action="abort", operator="alice", reason="venue down, exposure accepted", approval_id="ap-1")
RECOVER_OK = Approval(action="recover", operator="alice", reason="hung with exposure", approval_id="ap-2")
RESUMABLE = StopRequest("alice@desk")


class Recorder:
    def __init__(self):
        self.calls: list[tuple[str, str, str, dict]] = []

    def __call__(self, trigger, source, dest, evidence):
        self.calls.append((trigger, source, dest, dict(evidence)))


def machine(state: str = "CREATED") -> tuple[Lifecycle, Recorder]:
    rec = Recorder()
    life = Lifecycle(INTERVAL, rec)
    if state != "CREATED":
        life._machine.set_state(state, model=life)
    assert life.state == state
    return life, rec


TERMINAL = {"STOPPED", "ABORTED"}


def full_evidence(trigger: str = "abort") -> dict:
    """Evidence that satisfies every guard of `trigger`, so only the table decides."""
    return {"actor": "test", "evidence": flat_reads(INTERVAL), "approval": RECOVER_OK if trigger == "recover" else ABORT_OK,
            "exit_code": 0, "stop": RESUMABLE, "hung": True, "node_ran": False, "ended_with": Holdings()}


def destinations(trigger: str) -> dict:
    """source -> where `trigger` leads from it (the source itself for an internal transition)."""
    return {s: d or s for t, s, d in EXPECTED_TRANSITIONS if t == trigger}


# The table ---------------------------------------------------------------------------------------


def test_machine_has_exactly_the_design_transitions():
    life, _ = machine()
    m = life._machine
    actual = set()
    for name, event in m.events.items():
        for source, transitions in event.transitions.items():
            for t in transitions:
                assert t.source == source
                actual.add((name, t.source, t.dest))
    assert actual == EXPECTED_TRANSITIONS
    # get_transitions() sees the same table
    via_api = {(t_name, t.source, t.dest) for t_name in m.events for t in m.get_transitions(trigger=t_name)}
    assert via_api == EXPECTED_TRANSITIONS


def test_guards_sit_on_exactly_the_guarded_triggers():
    life, _ = machine()
    guards = {}
    for name, event in life._machine.events.items():
        for transitions in event.transitions.values():
            for t in transitions:
                names = {c.func for c in t.conditions}
                assert all(c.target for c in t.conditions)  # conditions, not "unless"
                if names:
                    guards.setdefault(name, set()).update(names)
    assert guards == EXPECTED_GUARDS


def test_states_are_exactly_the_design_states():
    life, _ = machine()
    assert list(life._machine.states) == EXPECTED_STATES
    assert lc.STATES == EXPECTED_STATES
    assert life.state == "CREATED"


@pytest.mark.parametrize("state", EXPECTED_STATES)
@pytest.mark.parametrize("trigger", TRIGGERS)
def test_every_state_trigger_pair_behaves_as_the_table_says(state, trigger):
    """With evidence that satisfies every guard, a trigger moves iff the table has it."""
    life, rec = machine(state)
    expected = destinations(trigger)
    assert life.allows(trigger) == (state in expected)
    outcome = life.fire(trigger, **full_evidence(trigger))
    assert isinstance(outcome, Outcome)
    if state in expected:
        assert outcome == Outcome(True)
        assert life.state == expected[state]
        changed = [(trigger, state, expected[state])] if expected[state] != state else []  # an internal one: nothing
        assert [(c[0], c[1], c[2]) for c in rec.calls] == changed
    else:
        assert outcome.ok is False
        assert trigger in outcome.reason and state in outcome.reason
        assert life.state == state
        assert rec.calls == []


@pytest.mark.parametrize("state", sorted(TERMINAL))
def test_terminal_states_have_no_exits(state):
    life, rec = machine(state)
    for name, event in life._machine.events.items():
        assert state not in event.transitions, f"{name} leaves terminal {state}"
    for trigger in TRIGGERS:
        assert life.fire(trigger, **full_evidence(trigger)).ok is False
    assert life.state == state and rec.calls == []


def test_happy_path_and_callback_evidence():
    life, rec = machine()
    for trigger in ("build", "run", "halt"):
        assert life.fire(trigger, actor="nsup").ok
    assert life.fire("flat", actor="nsup", evidence=flat_reads(INTERVAL)).ok
    assert life.fire("stop", actor="nsup", exit_code=0).ok
    assert life.state == "STOPPED"
    assert [c[:3] for c in rec.calls] == [
        ("build", "CREATED", "BUILT"),
        ("run", "BUILT", "RUNNING"),
        ("halt", "RUNNING", "HALTING"),
        ("flat", "HALTING", "FLAT"),
        ("stop", "FLAT", "STOPPED"),
    ]
    assert all(c[3]["actor"] == "nsup" for c in rec.calls)
    assert rec.calls[4][3]["exit_code"] == 0


# fire never raises -------------------------------------------------------------------------------


@pytest.mark.parametrize("state", EXPECTED_STATES)
def test_fire_refuses_a_known_trigger_in_the_wrong_state(state):
    for trigger in TRIGGERS:
        if any(t == trigger and s == state for t, s, _ in EXPECTED_TRANSITIONS):
            continue
        life, rec = machine(state)
        outcome = life.fire(trigger, actor="x")
        assert outcome.ok is False and outcome.reason
        assert life.state == state and rec.calls == []


@pytest.mark.parametrize("trigger", ["bogus", "", "to_FLAT", "STOP"])
def test_fire_refuses_an_unknown_trigger_without_raising(trigger):
    life, rec = machine("HALTING")
    outcome = life.fire(trigger, actor="x")
    assert outcome.ok is False and outcome.reason
    assert life.state == "HALTING" and rec.calls == []


# Guards ------------------------------------------------------------------------------------------


def test_flat_allowed_with_two_flat_reads_interval_apart_last_halted():
    life, rec = machine("HALTING")
    assert life.fire("flat", evidence=flat_reads(INTERVAL)).ok
    assert life.state == "FLAT" and len(rec.calls) == 1
    assert rec.calls[0][3]["evidence"] == flat_reads(INTERVAL)  # the proof reaches the observer


def test_flat_allowed_with_the_daemons_three_reads():
    life, _ = machine("HALTING")
    assert life.fire("flat", evidence=flat_reads(INTERVAL + 0.01, n=3)).ok


def test_flat_span_is_nsups_not_the_workers_clock():
    """The worker's wall clock may step: its timestamps neither make nor break the interval."""
    stepped_back = FlatReads((status(ts=2_000_000_000.0), status(ts=1_000_000_000.0, venue_counts=VENUES_FLAT)), INTERVAL)
    life, _ = machine("HALTING")
    assert life.fire("flat", evidence=stepped_back).ok
    same_instant_but_far_on_worker_clock = FlatReads((status(ts=0.0), status(ts=1e9, venue_counts=VENUES_FLAT)), INTERVAL / 2)
    life, _ = machine("HALTING")
    assert not life.fire("flat", evidence=same_instant_but_far_on_worker_clock).ok


def _reads(*reads, span=1.0):
    """The daemon's evidence: the last read is the venues' answer, so it carries venue counts."""
    *before, last = reads
    if last.venue_counts is None:
        last = msgspec.structs.replace(last, venue_counts=VENUES_FLAT)
    return FlatReads((*before, last), span)


# Each case spoils verified-flat evidence in exactly one way, named; the same evidence without that
# one spoil is accepted (test_each_refused_case_is_accepted_without_its_spoil), so a case can only
# be refused for the reason it names.
VERIFIED = (status(trading_state="REDUCING"), status())
REFUSED_CASES = [
    # (evidence, why, the same evidence without the spoil)
    (None, "no evidence at all", _reads(*VERIFIED)),
    (FlatReads((), 1.0), "empty reads", _reads(*VERIFIED)),
    (_reads(status()), "one flat read", _reads(*VERIFIED)),
    (flat_reads(INTERVAL * 0.99), "two reads too close together", flat_reads(INTERVAL)),
    (flat_reads(0.0), "the same instant twice", flat_reads(INTERVAL)),
    (flat_reads(-1.0), "a negative span", flat_reads(INTERVAL)),
    (flat_reads(float("nan")), "a NaN span", flat_reads(INTERVAL)),
    (flat_reads(INTERVAL, last="REDUCING"), "last not HALTED", flat_reads(INTERVAL)),
    (flat_reads(INTERVAL, last="ACTIVE"), "last ACTIVE", flat_reads(INTERVAL)),
    (_reads(status(), status(exiting=True)), "a strategy still exiting (last read)", _reads(*VERIFIED)),
    (_reads(status(exiting=True), status()), "a strategy exiting (first read)", _reads(*VERIFIED)),
    (FlatReads((status(positions=1), status()), 1.0), "a position in the cache, the venues never asked", _reads(*VERIFIED)),
    (_reads(status(), msgspec.structs.replace(status(positions=1, venue_counts=VENUES_FLAT), venue_unavailable=["SIM: sandbox"])),
     "a position in the cache, and a venue that cannot say", _reads(*VERIFIED)),
    (_reads(status(), status(inflight=1)), "order in flight", _reads(*VERIFIED)),
    (_reads(status(), status(open_=1)), "order open", _reads(*VERIFIED)),
    (_reads(status(), status(open_=2), status()), "orders open between two flat reads", _reads(status(), status(), status())),
    (FlatReads(VERIFIED, 1.0), "the venues never asked", _reads(*VERIFIED)),
    (_reads(status(), status(venue_counts=p.Counts(1, 0, 0))), "a position open at the venue", _reads(*VERIFIED)),
    (_reads(status(), status(venue_counts=p.Counts(0, 0, 1))), "an order open at the venue", _reads(*VERIFIED)),
]


@pytest.mark.parametrize("evidence, why, unspoiled", REFUSED_CASES, ids=[case[1] for case in REFUSED_CASES])
def test_flat_refused_without_verified_flat_evidence(evidence, why, unspoiled):
    life, rec = machine("HALTING")
    kwargs = {} if evidence is None else {"evidence": evidence}
    outcome = life.fire("flat", actor="nsup", **kwargs)
    assert outcome.ok is False, why
    assert "flat_is_verified" in outcome.reason
    assert life.state == "HALTING" and rec.calls == []


@pytest.mark.parametrize("evidence, why, unspoiled", REFUSED_CASES, ids=[case[1] for case in REFUSED_CASES])
def test_each_refused_case_is_accepted_without_its_spoil(evidence, why, unspoiled):
    assert verified_flat(unspoiled, INTERVAL), f"{why}: the control case must be verified flat"


def test_a_position_only_the_cache_shows_is_a_disagreement_the_venues_settle():
    """docs/design.md: nothing open, nothing exiting, every venue answered and holds nothing: the
    cache's positions are not exposure (two strategies netting to zero on a NETTING venue, say)."""
    life, _ = machine("STUCK")
    assert life.fire("flat", evidence=_reads(status(positions=2), status(positions=2))).ok


@pytest.mark.parametrize("trust_cache, cache_positions, ok", [(False, 0, False), (True, 0, True), (True, 1, False)])
def test_a_venue_that_cannot_say_is_flat_only_on_a_flat_cache_and_only_where_trusted(trust_cache, cache_positions, ok):
    cannot_say = status(positions=cache_positions, venue_counts=p.Counts(0, 0, 0))
    cannot_say = msgspec.structs.replace(cannot_say, venue_unavailable=["SIM: its reports come from the node's own cache"])
    life = Lifecycle(INTERVAL, Recorder(), trust_cache=trust_cache)
    life.resume_at("HALTING")
    assert life.fire("flat", evidence=FlatReads((status(positions=cache_positions), cannot_say), 1.0)).ok is ok


def test_flat_ignores_evidence_under_another_name():
    life, _ = machine("HALTING")
    assert not life.fire("flat", reads=flat_reads(INTERVAL).reads).ok


@pytest.mark.parametrize(
    "approval",
    [
        None,
        Approval("sigkill", "alice", "r", "ap-2"),
        Approval("stop_command", "alice", "r", "ap-3"),
        Approval("ABORT", "alice", "r", "ap-4"),
        {"action": "abort", "operator": "alice", "reason": "r", "approval_id": "ap-5"},  # not on record as an Approval
        "abort",
    ],
)
def test_abort_refused_without_an_abort_approval(approval):
    life, rec = machine("HALTING")
    evidence = {} if approval is None else {"approval": approval}
    outcome = life.fire("abort", actor="op", **evidence)
    assert outcome.ok is False and "abort_is_approved" in outcome.reason
    assert life.state == "HALTING" and rec.calls == []


def test_abort_allowed_with_an_abort_approval():
    life, rec = machine("HALTING")
    assert life.fire("abort", actor="alice", approval=ABORT_OK).ok
    assert life.state == "ABORTING"
    assert rec.calls[0][:3] == ("abort", "HALTING", "ABORTING") and rec.calls[0][3]["approval"] is ABORT_OK


@pytest.mark.parametrize("stop", [None, StopRequest("signal:SIGTERM", final=True), "alice@desk"])
def test_resume_refused_without_a_stop_an_operator_may_cancel(stop):
    life, rec = machine("STUCK")
    outcome = life.fire("resume", actor="op", **({} if stop is None else {"stop": stop}))
    assert outcome.ok is False and "stop_is_resumable" in outcome.reason
    assert life.state == "STUCK" and rec.calls == []


def test_resume_allowed_for_an_operators_stop():
    life, _ = machine("HALTING")
    assert life.fire("resume", actor="op", stop=RESUMABLE).ok and life.state == "RUNNING"


@pytest.mark.parametrize("hung, approval", [(False, RECOVER_OK), (True, None), (True, ABORT_OK), (None, RECOVER_OK)])
def test_recover_refused_unless_hung_and_approved_for_recover(hung, approval):
    life, rec = machine("RUNNING")
    evidence = {k: v for k, v in (("hung", hung), ("approval", approval)) if v is not None}
    outcome = life.fire("recover", actor="op", **evidence)
    assert outcome.ok is False and "recover" in outcome.reason
    assert life.state == "RUNNING" and rec.calls == []


def test_allows_reads_the_table_and_why_not_says_where():
    life, _ = machine("RUNNING")
    assert life.allows("pause") and life.allows("restart") and not life.allows("abort")
    assert life.why_not("abort") == "abort only in HALTING or STUCK; nsup is RUNNING"
    with pytest.raises(ValueError):
        life.allows("bogus")


@pytest.mark.parametrize("exit_code", [None, 1, -9, -15, 2, 3])
def test_stop_refused_unless_the_worker_exited_with_zero(exit_code):
    life, rec = machine("FLAT")
    evidence = {} if exit_code is None else {"exit_code": exit_code}
    outcome = life.fire("stop", actor="nsup", **evidence)
    assert outcome.ok is False and "worker_exited_cleanly" in outcome.reason
    assert life.state == "FLAT" and rec.calls == []


def test_stop_allowed_with_exit_code_zero():
    life, _ = machine("FLAT")
    assert life.fire("stop", exit_code=0).ok and life.state == "STOPPED"


# verified_flat against an independent oracle -----------------------------------------------------

intervals = st.sampled_from([0.001, 0.1, 0.5, 1.0, 2.5]) | st.floats(min_value=0.001, max_value=5)


@settings(max_examples=300, deadline=None)
@given(evidence=st.none() | any_flat_reads(), interval=intervals)
def test_verified_flat_matches_the_oracle_on_random_evidence(evidence, interval):
    assert verified_flat(evidence, interval) == verified_flat_oracle(evidence, interval)


@settings(max_examples=200, deadline=None)
@given(data=st.data(), interval=intervals)
def test_verified_flat_accepts_every_verified_sequence(data, interval):
    evidence = data.draw(verified_flat_reads(interval))
    assert verified_flat_oracle(evidence, interval)
    assert verified_flat(evidence, interval)


@settings(max_examples=200, deadline=None)
@given(data=st.data(), interval=intervals)
def test_verified_flat_refuses_nearly_flat_reads(data, interval):
    evidence = data.draw(nearly_flat_reads(interval))
    assert not verified_flat_oracle(evidence, interval)
    assert not verified_flat(evidence, interval)


# Stateful: random triggers with random evidence ---------------------------------------------------

approvals = st.one_of(
    st.none(),
    st.builds(Approval, action=st.sampled_from(["abort", "sigkill", "sigterm", "stop_command", "resume"]),
              operator=st.just("alice"), reason=st.just("r"), approval_id=st.just("ap")),
)
exit_codes = st.sampled_from([None, 0, 0, 1, -9, -15, 3])


class LifecycleMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.rec = Recorder()
        self.life = Lifecycle(INTERVAL, self.rec)
        self.seen_terminal: str | None = None

    def _fire(self, trigger, evidence):
        before = self.life.state
        n_calls = len(self.rec.calls)
        outcome = self.life.fire(trigger, **evidence)
        after = self.life.state
        new_calls = self.rec.calls[n_calls:]
        table = destinations(trigger)
        if outcome.ok:
            assert before in table and after == table[before]
            if after == before:  # an internal transition: nothing to tell
                assert new_calls == []
                return
            assert len(new_calls) == 1
            assert new_calls[0][:3] == (trigger, before, after)
            assert new_calls[0][3] == evidence  # the observer gets the evidence the trigger was fired with
            if after in ("FLAT", "RECOVERING") and trigger == "flat":
                assert verified_flat_oracle(evidence.get("evidence"), INTERVAL)
            if after == "ABORTING":
                approval = evidence.get("approval")
                assert isinstance(approval, Approval) and approval.action == "abort"
            if after == "STOPPED":
                assert evidence.get("exit_code") == 0
        else:
            assert outcome.reason
            assert after == before
            assert new_calls == []
        if self.seen_terminal is not None:
            assert outcome.ok is False and after == self.seen_terminal
        if after in TERMINAL:
            self.seen_terminal = after
        if outcome.ok:
            event(f"{before} -> {after}")

    @rule(trigger=st.sampled_from(TRIGGERS), approval=approvals, exit_code=exit_codes,
          reads=st.none() | any_flat_reads(max_size=3))
    def fire_random(self, trigger, approval, exit_code, reads):
        evidence = {"actor": "random"}
        if approval is not None:
            evidence["approval"] = approval
        if exit_code is not None:
            evidence["exit_code"] = exit_code
        if reads is not None:
            evidence["evidence"] = reads
        self._fire(trigger, evidence)

    @rule(data=st.data())
    def advance(self, data):
        """The happy-path trigger for the current state, with evidence that is often, not always, good."""
        state = self.life.state
        trigger = HAPPY_NEXT.get(state, data.draw(st.sampled_from(TRIGGERS)))
        evidence = {"actor": "nsup"}
        if trigger == "flat":
            evidence["evidence"] = data.draw(
                st.one_of(verified_flat_reads(INTERVAL), nearly_flat_reads(INTERVAL), any_flat_reads(max_size=3))
            )
        elif trigger == "stop":
            evidence["exit_code"] = data.draw(exit_codes)
        self._fire(trigger, evidence)

    @precondition(lambda self: self.life.state in ("HALTING", "STUCK", "RESTARTING"))
    @rule(data=st.data())
    def try_flat(self, data):
        evidence = data.draw(st.one_of(verified_flat_reads(INTERVAL), nearly_flat_reads(INTERVAL)))
        self._fire("flat", {"actor": "nsup", "evidence": evidence})

    @precondition(lambda self: self.life.state in ("HALTING", "STUCK"))
    @rule(approval=approvals)
    def operator_abort(self, approval):
        self._fire("abort", {"actor": "alice"} if approval is None else {"actor": "alice", "approval": approval})

    @rule(trigger=st.sampled_from(TRIGGERS))
    def fire_without_evidence(self, trigger):
        self._fire(trigger, {})

    @invariant()
    def state_is_known_and_callbacks_chain(self):
        assert self.life.state in EXPECTED_STATES
        state = "CREATED"
        for trigger, source, dest, _ in self.rec.calls:
            assert source == state
            state = dest
        assert state == self.life.state


TestLifecycleStateful = LifecycleMachine.TestCase
TestLifecycleStateful.settings = settings(
    max_examples=100, stateful_step_count=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def _position(side: str, quantity: str, instrument: str = "EUR/USD.SIM") -> p.PositionView:
    return p.PositionView(instrument_id=instrument, side=side, quantity=quantity, unrealized_pnl="0 USD")


_RESTING = p.OrderView(client_order_id="O-1", instrument_id="EUR/USD.SIM", side="BUY", quantity="1", order_type="LIMIT",
                       status="ACCEPTED", owner="EXTERNAL")
ABANDON_REFUSED = [
    # (node_ran, ended_with, why): a start is given up without a flatten only with nothing possibly held
    (True, Holdings(), "a node of this nsup ran"),
    (None, Holdings(), "whether a node ran is unknown"),
    (False, None, "the last session's end is not on record"),
    (False, Holdings(positions=[_position("LONG", "100000")]), "the last session ended with a position"),
    (False, Holdings(orders=[_RESTING]), "the last session ended with an order open"),
]


@pytest.mark.parametrize("state", ["CREATED", "BUILT", "RECOVERING"])
@pytest.mark.parametrize("node_ran, ended_with, why", ABANDON_REFUSED, ids=[case[2] for case in ABANDON_REFUSED])
def test_a_start_is_given_up_only_when_nothing_can_be_held(state, node_ran, ended_with, why):
    life, rec = machine(state)
    outcome = life.fire("abandon", actor="signal:SIGTERM", node_ran=node_ran, ended_with=ended_with)
    assert not outcome.ok and "nothing_is_held" in outcome.reason and "flatten and verify" in outcome.reason, why
    assert life.state == state and rec.calls == []
    assert life.fire("abandon", actor="signal:SIGTERM", node_ran=False, ended_with=Holdings()).ok  # the unspoiled twin
    assert life.state == "STOPPED"


def test_two_strategies_netted_to_nothing_ended_flat():
    """Flat is the net per instrument, as the venue keeps it, with no order open."""
    netted = Holdings(positions=[_position("LONG", "100000"), _position("SHORT", "100000")])
    assert netted.is_flat() and nothing_is_held(False, netted)
    assert not Holdings(positions=[_position("LONG", "100000"), _position("SHORT", "50000")]).is_flat()
