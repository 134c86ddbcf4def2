"""The guard as an invariant: the real Supervisor, a simulated worker, random interleavings.

DESIGN.md: nothing that can end the worker (StopNode, SIGKILL) is sent unless the last fresh status
says flat, or an operator approval for it is on record, or the worker is already gone. Hypothesis
draws a list of actions (positions and orders opening, fills, closes by hand, market exits that fail,
graceful stops, pauses, resumes, approved aborts and recovers, operator restarts, worker crashes and
hangs, stops that hang, slow starts, supervisor crashes with a carry-on from the persisted state,
time passing)
and runs them against the real `Supervisor` on one event loop, with only the worker simulated
(tests/unit/_fake_worker.py). After every step and at the end:

- every StopNode and every signal the simulated workers received found them flat, or flat as nsup
  last heard them (a fill since, or a hung worker: DESIGN.md replaces a hung worker that was flat),
  or came under an operator's approval (abort; recover for a hung one), or found the worker already
  gone; StopNode(require_flat=False) only after an abort approval; no worker died any other way;
- a worker spawned (or re-attached before it ran) while a stop or a pause was pending was REDUCING
  before RunNode; no second node was ever run beside a live one;
- the journal holds a transition for every state change: per nsup session the transitions chain
  from the state it began in (CREATED, or the persisted one it carried on from) to the state it
  ended in, each one in the lifecycle's table, and every state seen by polling lies on that chain;
- every `worker_end` record is at zero positions or names an approval; ABORTED is reached only by
  an approved abort or by `give_up` after the restart bound was spent;
- at the end, with the worker answering and the venue flat, a graceful stop ends nsup in STOPPED
  (exit 0) or ABORTED (exit 3, after an approval or a spent bound), and no worker is left running.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from _fake_worker import Harness
from supervisor.config import parse_config
from supervisor.daemon import EXIT_ABORTED, EXIT_OK
from supervisor.journal import read_journal
from supervisor.worker_link import LinkError
from supervisor.lifecycle import ABORTED, CREATED, RUNNING, STOPPED, TRANSITIONS, Approval

MAX_RESTARTS = 3
START_TIMEOUT_SECS = 5.0  # generous: these are waits, never timed assertions
END_TIMEOUT_SECS = 15.0

# Categories of violation that a known, not yet fixed bug produces: the random test leaves them to
# that bug's own xfail(strict=True) test, so that it neither fails nor flakes on them. The three this
# test found (see the regression tests at the end) are fixed, so there are none.
KNOWN_BUG_CATEGORIES: set[str] = set()


def make_config(state_dir: str):
    return parse_config({
        "node": {"factory": "node_worker.demo.node:demo_node"},  # never imported: the worker is simulated
        "supervisor": {
            "state_dir": state_dir,
            "heartbeat_interval_secs": 0.05,
            "flat_confirm_secs": 0.05,
            "flatten_rounds": 2,
            "flatten_round_wait_secs": 0.2,
            "startup_timeout_secs": 1.0,
            "max_restarts": MAX_RESTARTS,
            "restart_backoff_secs": 0.01,
            "restart_backoff_max_secs": 0.05,
            "hang_after_missed_heartbeats": 3,
        },
    })


# The actions -------------------------------------------------------------------------------------

# Weighted by repetition; "sleep" first so that a failing script shrinks towards doing nothing.
KINDS = (
    ["sleep"] * 3 + ["open"] * 3 + ["order", "fill", "close_by_hand"] + ["exits_fail"] * 2 + ["shutdown"] * 4
    + ["pause", "unpause", "market_exit"] + ["resume"] * 2 + ["abort"] * 3 + ["restart"] + ["crash_worker"] * 2
    + ["hang"] * 2 + ["unhang", "stop_hangs", "recover"] + ["crash_supervisor"] * 2 + ["slow_start"]
)
ARGS = {
    "sleep": st.sampled_from([0.05, 0.15, 0.3]),
    "exits_fail": st.sampled_from([True, True, False]),
    "crash_worker": st.sampled_from(["kill", "exit1"]),
    "stop_hangs": st.booleans(),
    "slow_start": st.sampled_from([0.0, 0.3]),
}
PAUSES = st.sampled_from([0.0, 0.02, 0.08, 0.2])  # time for nsup to act between two steps


@st.composite
def actions(draw) -> tuple:
    kind = draw(st.sampled_from(KINDS))
    return (kind, draw(ARGS[kind])) if kind in ARGS else (kind,)


steps = st.lists(st.tuples(actions(), PAUSES).map(lambda a: (*a[0], ("then", a[1]))), min_size=2, max_size=14)


@st.composite
def scenarios(draw) -> list[tuple]:
    """Often with exposure from the start, and market exits that do not work: where the guard matters."""
    setup = [("open",)] * draw(st.sampled_from([0, 1, 1, 2])) + [("order",)] * draw(st.sampled_from([0, 0, 1]))
    if draw(st.booleans()):
        setup.append(("exits_fail", True))
    return setup + draw(steps)


async def step(h: Harness, action: tuple) -> None:
    kind, *args = action
    pause = 0.0
    if args and isinstance(args[-1], tuple):  # ("then", secs): the pause after the action
        pause = args.pop()[1]
    sim = h.current_sim()
    sup = h.sup
    if kind == "sleep":
        await asyncio.sleep(args[0])
    elif kind == "open":
        if sim is not None and sim.can_trade():
            h.venue.positions += 1
    elif kind == "order":
        if sim is not None and sim.can_trade():
            h.venue.orders_open += 1
    elif kind == "fill":
        if sim is not None and not sim.gone and not sim.hung and sim.ran and h.venue.orders_open:
            h.venue.orders_open -= 1
            h.venue.positions += 1
    elif kind == "close_by_hand":
        h.venue.positions = h.venue.orders_open = 0
    elif kind == "exits_fail":
        h.venue.exits_fail = args[0]
    elif kind == "crash_worker":
        if sim is not None:
            sim.crash(args[0])
    elif kind == "hang":
        if sim is not None:
            sim.hang()
    elif kind == "unhang":
        for s in h.sims:
            s.unhang()
    elif kind == "stop_hangs":
        h.stop_hangs = args[0]
        if sim is not None:
            sim.stop_hangs = args[0]
    elif kind == "slow_start":
        h.hello_delay = args[0]
    elif kind == "crash_supervisor":
        await h.crash_supervisor()
    elif not h.running:
        pass  # nsup has ended: no one to ask
    elif kind == "shutdown":
        sup.request_shutdown("op:alice")
    elif kind == "pause":
        h.op(sup.set_trading_state("REDUCING", "op:alice"), "pause")
    elif kind == "unpause":
        h.op(sup.set_trading_state("ACTIVE", "op:alice"), "unpause")
    elif kind == "market_exit":
        h.op(sup.market_exit("op:alice"), "market_exit")
    elif kind == "resume":
        h.op(sup.walk("resume", "op:alice"), "resume")
    elif kind == "restart":
        h.op(sup.walk("restart", "op:alice"), "restart")
    elif kind == "abort":
        n = len(h.approvals) + 1
        approval = Approval("abort", "alice", f"exposure accepted #{n}", f"ap-{n}")
        h.approvals.append(approval)  # on record before nsup may act on it
        h.op(sup.walk("abort", "op:alice", approval=approval), "abort")
    elif kind == "recover":  # an operator's approved kill of a hung worker (where nsup offers it)
        if hasattr(sup, "recover") and getattr(sup, "hung", False) and sim is not None:
            n = len(h.approvals) + 1
            approval = Approval("recover", "alice", f"hung with exposure #{n}", f"ap-{n}")
            h.approvals.append(approval)
            sim.recover_approved = True
            h.op(sup.recover(approval, "op:alice"), "recover")
    else:
        raise AssertionError(f"unknown action {action}")
    await asyncio.sleep(max(pause, 0.005))


# The invariants ----------------------------------------------------------------------------------


def assert_no_violations(h: Harness, ignore: set[str]) -> None:
    h.check_children()
    found = [f"[{c}] {t}" for c, t in h.violations if c not in ignore]
    assert not found, "\n".join([*found, "journal tail:", *journal_tail(h)])
    assert not h.op_errors, f"an operator call failed unexpectedly: {h.op_errors!r}"


def journal_tail(h: Harness, n: int = 30) -> list[str]:
    records = read_journal(h.journal_path) if h.journal_path.exists() else []
    return [" ".join(f"{k}={v}" for k, v in r.items() if k not in ("ts", "evidence"))[:240] for r in records[-n:]]


def is_subsequence(seen: list[str], chain: list[str]) -> bool:
    i = 0
    for state in seen:
        while i < len(chain) and chain[i] != state:
            i += 1
        if i == len(chain):
            return False
    return True


ALLOWED = {(t, src, d) for t, s, d, _ in TRANSITIONS for src in (s if isinstance(s, list) else [s])}


def check_journal(h: Harness) -> None:
    records = read_journal(h.journal_path)
    sessions: list[list[dict]] = []
    for r in records:
        if r["kind"] == "supervisor_start":
            sessions.append([])
        elif sessions:
            sessions[-1].append(r)
    assert len(sessions) == len(h.session_starts), "one supervisor_start per nsup session"
    approvals = {a.approval_id: a for a in h.approvals}
    reasons = {a.reason for a in h.approvals if a.action == "abort"}
    for i, session in enumerate(sessions):
        state, chain, scheduled = h.session_starts[i], [h.session_starts[i]], 0
        if i > 0:
            chain.insert(0, CREATED)  # a new Supervisor is CREATED until its carry-on resumes the state on record
        for r in session:
            kind = r["kind"]
            if kind == "restart_scheduled":
                scheduled += 1
            elif kind == "transition":
                assert r["source"] == state, f"session {i}: {r['trigger']} from {r['source']}, but the journal has {state}"
                assert (r["trigger"], r["source"], r["dest"]) in ALLOWED, f"not in the lifecycle table: {r}"
                if r["dest"] == ABORTED:
                    if r["trigger"] == "abort":
                        assert r["reason"] in reasons and r["actor"] == "op:alice", f"abort without an approval: {r}"
                    else:
                        assert r["trigger"] == "give_up" and scheduled >= MAX_RESTARTS, f"gave up early: {r}"
                state = r["dest"]
                chain.append(state)
            elif kind == "worker_end":
                assert r["positions_open"] in (0, None) or r["approval_id"] in approvals, f"ended with exposure: {r}"
                assert r["approval_id"] is None or r["approval_id"] in approvals, r
        assert state == h.session_ends[i], f"session {i} ended in {h.session_ends[i]}, its journal says {state}"
        assert is_subsequence(h.sampled[i], chain), f"session {i}: states seen {h.sampled[i]} not all journaled {chain}"
    # nsup's own account matches what the workers received
    ends = [r for r in records if r["kind"] == "worker_end"]
    assert len(h.stops) <= sum(r["action"] == "stop_command" for r in ends), "a StopNode that no worker_end records"
    assert len(h.signals) <= sum(r["action"] == "sigkill" for r in ends), "a signal that no worker_end records"


async def restart_if_it_died_of_a_silent_worker(h: Harness) -> bool:
    """nsup.run() raised a LinkError (see test_a_silent_reattached_worker_does_not_crash_nsup): noted,
    and nsup started again as systemd would. Any other exception fails the test where it surfaces."""
    task = h.sup_task
    if task is None or not task.done() or task.cancelled() or not isinstance(task.exception(), LinkError):
        return False
    h.violation("reattach_crash", f"nsup died in {h.sup.lifecycle.state}: {task.exception()!r}")
    await h.crash_supervisor(already_dead=True)
    return h.running


async def wind_down(h: Harness, end_timeout: float, stop_by: str) -> int | None:
    """The worker answers again, exits work, the venue is flattened by hand, and a stop is asked for:
    nsup must then come to an end by itself."""
    if h.sup_task is None:
        return None
    await restart_if_it_died_of_a_silent_worker(h)
    if h.running:
        h.venue.exits_fail = False
        h.stop_hangs = False
        h.hello_delay = 0.0
        for sim in h.sims:
            sim.unhang()
        h.venue.positions = h.venue.orders_open = 0
        h.pending_at_last_stop = h.pending_ops()
        h.sup.request_shutdown(stop_by)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + end_timeout
        while h.running and loop.time() < deadline:
            await asyncio.wait([h.sup_task], timeout=0.05)
            if await restart_if_it_died_of_a_silent_worker(h):
                h.sup.request_shutdown(stop_by)
            if h.running and h.sup.lifecycle.state == RUNNING and not h.sup.shutdown_requested:
                # The stop just asked for is gone: a resume asked for earlier, still queued, was
                # carried out after it (see test_a_stop_is_not_lost_behind_a_queued_resume).
                h.violation("stop_lost", f"the stop asked for last was dropped: nsup is RUNNING, no stop pending; "
                                         f"journal tail: {journal_tail(h, 6)}")
                h.sup.request_shutdown(stop_by)
        assert not h.running, (f"nsup did not end within {end_timeout}s of a stop with the worker answering and the "
                               f"venue flat; it is {h.sup.lifecycle.state}; journal tail: {journal_tail(h)}")
    code = h.sup_task.result()  # an exception out of nsup.run() fails the test here
    h.session_ends.append(h.sup.lifecycle.state)
    return code


async def scenario(h: Harness, script: list[tuple], ignore: set[str], end_timeout: float, last_stop_by: str) -> None:
    h.start()
    deadline = asyncio.get_running_loop().time() + START_TIMEOUT_SECS
    while h.sup.lifecycle.state != RUNNING and h.running and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.01)
    assert h.sup.lifecycle.state == RUNNING, f"nsup did not start: {h.sup.lifecycle.state}"
    for action in script:
        await step(h, action)
        h.sample()
        assert_no_violations(h, ignore)
    code = await wind_down(h, end_timeout, last_stop_by)
    await h.cancel_ops()
    assert_no_violations(h, ignore)
    if code is not None:
        final = h.sup.lifecycle.state
        assert (code, final) in ((EXIT_OK, STOPPED), (EXIT_ABORTED, ABORTED)), f"nsup exited {code} in {final}"
        alive = [s.pid for s in h.sims if not s.gone]
        assert not alive, f"nsup ended {final} and left worker(s) {alive} running"
    check_journal(h)


def run(script: list[tuple], ignore: set[str] = KNOWN_BUG_CATEGORIES, end_timeout: float = END_TIMEOUT_SECS,
        last_stop_by: str = "op:alice") -> Harness:
    state_dir = tempfile.mkdtemp(prefix="sg-")  # short: ipc socket paths must stay under ~100 chars
    h = Harness(make_config(state_dir))

    async def main():
        try:
            await scenario(h, script, ignore, end_timeout, last_stop_by)
        finally:
            await h.close()

    try:
        with h.patched():
            asyncio.run(main())
        h.records = read_journal(h.journal_path)  # kept for the caller: the state dir goes now
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)
    return h


# The tests ---------------------------------------------------------------------------------------

OPEN_AND_STUCK = [("open",), ("order",), ("exits_fail", True)]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@example([])
@example([("open",), ("shutdown",), ("sleep", 0.3)])  # the plain graceful stop
@example([*OPEN_AND_STUCK, ("shutdown",), ("sleep", 0.3), ("hang",), ("sleep", 0.15), ("abort",), ("sleep", 0.3)])
@example([*OPEN_AND_STUCK, ("shutdown",), ("sleep", 0.15), ("stop_hangs", True), ("abort",), ("sleep", 0.3),
          ("sleep", 0.3)])  # an approved abort whose stop hangs: killed under the approval
@example([("open",), ("shutdown",), ("stop_hangs", True), ("sleep", 0.3), ("sleep", 0.3)])  # flat, stop hangs: killed
@example([*OPEN_AND_STUCK, ("shutdown",), ("sleep", 0.15), ("crash_worker", "kill"), ("sleep", 0.3), ("sleep", 0.15)])
@example([("open",), ("hang",), ("shutdown",), ("sleep", 0.3), ("sleep", 0.3), ("unhang",), ("sleep", 0.15)])
@example([("open",), ("pause",), ("sleep", 0.05), ("crash_worker", "exit1"), ("sleep", 0.15), ("restart",),
          ("sleep", 0.15), ("close_by_hand",), ("restart",), ("sleep", 0.3)])
@example([*OPEN_AND_STUCK, ("shutdown",), ("sleep", 0.15), ("crash_supervisor",), ("sleep", 0.15), ("resume",),
          ("sleep", 0.05), ("crash_supervisor",), ("sleep", 0.15)])
@example([("crash_worker", "kill"), ("sleep", 0.05), ("crash_worker", "kill"), ("sleep", 0.1), ("crash_worker", "kill"),
          ("sleep", 0.1), ("crash_worker", "kill"), ("sleep", 0.1), ("crash_worker", "kill"), ("sleep", 0.15)])
@given(script=scenarios())
def test_the_guard_holds_under_random_interleavings(script):
    run(script)


# Regression tests for what the random test found (each failed before its fix) -------------------

# nsup crashes while it is replacing a worker, a stop pending: the new worker has said nothing yet
# (its node takes 0.3 s to build), so the persisted state is RECOVERING with that worker alive.
# The next nsup re-attaches to it and runs it: it must set REDUCING first, as _start does.
# (Found: Supervisor._carry_on sent RunNode without SetTradingState("REDUCING"); the node started ACTIVE.)
REATTACH_BEFORE_RUN = [
    *OPEN_AND_STUCK, ("shutdown",), ("sleep", 0.15), ("slow_start", 0.3), ("crash_worker", "kill"),
    ("sleep", 0.1), ("crash_supervisor",), ("slow_start", 0.0), ("sleep", 0.3), ("sleep", 0.3),
]


def test_a_worker_reattached_before_it_ran_starts_reducing_when_a_stop_is_pending():
    h = run(REATTACH_BEFORE_RUN)  # the violation "start_not_reducing_after_reattach" fails it
    adopted = [s for s in h.sims if s.adopted_before_run]
    assert adopted and adopted[0].must_start_reducing and adopted[0].ran, "the scenario missed its window"
    commands = adopted[0].commands
    assert "SetTradingState(REDUCING)" in commands[:commands.index("RunNode")]
    assert h.session_ends[-1] == STOPPED


# nsup crashes in HALTING while the worker is hung; the next nsup waits for it to speak before it
# reads its walk queue. An operator's resume is queued meanwhile (check_walk passes: HALTING), then
# a stop is asked for (nsupctl stop, or systemd's SIGTERM): "already shutting down; nsup stops once
# flat". The worker answers and the walk takes the resume: the stop asked for after it must stand.
# (Found: the resume was carried out, cleared the pending stop, and nsup traded on, ACTIVE.)
STOP_BEHIND_RESUME = [
    ("open",), ("exits_fail", True), ("shutdown",), ("sleep", 0.15), ("hang",), ("crash_supervisor",),
    ("resume",), ("sleep", 0.05),
]


@pytest.mark.parametrize("last_stop_by", ["op:alice", "signal:SIGTERM"])
def test_a_stop_is_not_lost_behind_a_queued_resume(last_stop_by):
    h = run(STOP_BEHIND_RESUME, end_timeout=5.0, last_stop_by=last_stop_by)  # "stop_lost" fails it
    assert "resume" in h.pending_at_last_stop, "the scenario missed its window: the resume was not queued"
    assert h.session_ends[-1] == STOPPED


# A worker is being replaced (its node takes 0.3 s to build) when nsup crashes; the new worker hangs
# before it has said anything. The next nsup re-attaches and waits startup_timeout_secs for it to
# speak; it must not die of the silence. (Found: _carry_on fired build and sent RunNode anyway, and
# the NoAnswer escaped Supervisor.run(): nsup exited 1.)
SILENT_REATTACH = [
    ("slow_start", 0.3), ("crash_worker", "kill"), ("sleep", 0.1), ("hang",), ("crash_supervisor",),
    ("slow_start", 0.0), ("sleep", 0.3), ("sleep", 0.3), ("sleep", 0.3), ("sleep", 0.3), ("sleep", 0.15),
]


def test_a_silent_reattached_worker_does_not_crash_nsup():
    h = run(SILENT_REATTACH)  # the violation "reattach_crash" fails it
    assert len(h.session_starts) == 2 and h.session_starts[1] in ("CREATED", "BUILT", "RECOVERING"), h.session_starts
    assert any(s.adopted_silent for s in h.sims), "the scenario missed its window"
    assert h.session_ends[-1] == STOPPED
