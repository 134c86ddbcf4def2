"""The stop gate: `decide` as a property, and `StopGate.end_worker` against a real child process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from _statuses import is_flat_oracle, is_settled_oracle, node_statuses, status
from supervisor import protocol as p
from supervisor.journal import Journal, read_journal
from supervisor.lifecycle import Approval
from supervisor.stop_gate import Decision, EndAction, StopGate, decide
from supervisor.worker_link import LinkError, NoAnswer, WorkerRefused
from supervisor.worker_process import WorkerProcess

ACTIONS = list(EndAction)
# The operator action whose approval covers ending the worker: DESIGN.md "abort ... the approval is
# journaled with who and why"; there is no separate kill approval in the operator surface.
ENDING_APPROVAL = "abort"
ENDING_APPROVALS = {"abort", "recover"}  # abort: stop with exposure; recover: kill a hung worker


def approval(action: str = ENDING_APPROVAL, approval_id: str = "ap-7") -> Approval:
    return Approval(action=action, operator="alice", reason="venue unreachable, exposure accepted", approval_id=approval_id)


def test_the_means_of_ending_a_worker():
    assert {a.value for a in EndAction} == {"stop_command", "sigkill"}


# decide ------------------------------------------------------------------------------------------

approvals = st.none() | st.builds(
    approval, action=st.sampled_from(["abort", "recover", "ABORT", "stop_command", "sigkill", "sigterm", "resume", ""])
)


def rule_allows(fresh_status, appr, worker_alive, node_ever_ran, last_known=None) -> bool:
    """docs/design.md: the last fresh status says flat (or nothing is open and every venue answered that
    it holds nothing), or an operator approval to end it is on record, or the worker is already gone;
    a hung worker (no fresh status) that was flat when last heard; and (nsup's own rule) a node nsup
    never ran, when it cannot say."""
    venues_flat = fresh_status is not None and fresh_status.venue_counts is not None and not fresh_status.venue_unavailable \
        and (fresh_status.venue_counts.positions_open, fresh_status.venue_counts.orders_open) == (0, 0) \
        and fresh_status.venue_counts.orders_inflight == 0
    return (
        not worker_alive
        or (appr is not None and appr.action in ENDING_APPROVALS)
        or (fresh_status is not None and is_flat_oracle(fresh_status))
        or (fresh_status is not None and is_settled_oracle(fresh_status) and venues_flat)
        or (fresh_status is None and not node_ever_ran)
        or (fresh_status is None and last_known is not None and is_flat_oracle(last_known))
    )


decide_args = dict(
    fresh=st.none() | node_statuses(), appr=approvals, alive=st.booleans(), ever_ran=st.booleans(),
    last=st.none() | node_statuses(),
)


@settings(max_examples=300, deadline=None)
@given(**decide_args)
def test_decide_never_allows_what_the_rule_forbids(fresh, appr, alive, ever_ran, last):
    d = decide(fresh, appr, alive, ever_ran, last)
    assert isinstance(d, Decision) and isinstance(d.allowed, bool)
    assert d.reason.strip()
    if d.allowed:
        assert rule_allows(fresh, appr, alive, ever_ran, last)


@settings(max_examples=300, deadline=None)
@example(fresh=status(), appr=approval("resume"), alive=True, ever_ran=True, last=None)
@example(fresh=None, appr=None, alive=True, ever_ran=True, last=status(positions=1))
@given(**decide_args)
def test_decide_is_exactly_the_design_rule(fresh, appr, alive, ever_ran, last):
    assert decide(fresh, appr, alive, ever_ran, last).allowed == rule_allows(fresh, appr, alive, ever_ran, last)


@pytest.mark.parametrize("ever_ran", [True, False])
def test_decide_examples(ever_ran):
    assert not decide(status(positions=1), None, True, ever_ran).allowed
    assert not decide(status(inflight=1), None, True, ever_ran).allowed
    assert not decide(status(open_=1), None, True, ever_ran).allowed
    assert not decide(status(exiting=True), None, True, ever_ran).allowed
    assert decide(status(), None, True, ever_ran).allowed
    assert decide(status(positions=3), approval(), True, ever_ran).allowed
    assert decide(None, approval(), True, ever_ran).allowed
    assert decide(None, None, False, ever_ran).allowed
    assert decide(status(positions=3), None, False, ever_ran).allowed
    assert not decide(status(positions=1), approval("sigkill"), True, ever_ran).allowed
    assert not decide(status(positions=1), approval("resume"), True, ever_ran).allowed
    assert "positions_open=1" in decide(status(positions=1), None, True, ever_ran).reason
    # a hung worker: only a node nsup never ran may be ended without an approval
    assert decide(None, None, True, ever_ran).allowed is (not ever_ran)


# end_worker against a real child process --------------------------------------------------------


class FakeLink:
    """Stands in for WorkerLink.request only: answers with a chosen status, hangs (NoAnswer), or
    refuses the stop command (WorkerRefused)."""

    def __init__(self, status: p.NodeStatus | None = None, hung: bool = False, refuse_stop: bool = False,
                 silent_stop: bool = False):
        self.status = status
        self.hung = hung
        self.refuse_stop = refuse_stop
        self.silent_stop = silent_stop
        self.sent: list[tuple[p.Command, float]] = []
        self.last_status = None  # what the link heard last before silence: nothing, in these tests

    async def request(self, command: p.Command, timeout: float) -> p.Reply:
        self.sent.append((command, timeout))
        await asyncio.sleep(0)
        tag = command.__struct_config__.tag
        if self.hung or (isinstance(command, p.StopNode) and self.silent_stop):
            raise NoAnswer(f"{tag}: no reply within {timeout:g}s (TimeoutError)")
        if isinstance(command, p.StopNode) and self.refuse_stop:
            raise WorkerRefused(f"{tag}: the worker refused: refused to stop: not flat and no operator approval")
        return p.Reply(request_id=len(self.sent), ok=True, status=self.status)

    def stops(self) -> list[p.StopNode]:
        return [c for c, _ in self.sent if isinstance(c, p.StopNode)]


SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]


@contextlib.asynccontextmanager
async def child(argv=SLEEPER):
    popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, start_new_session=True)
    proc = WorkerProcess(popen.pid, popen)
    try:
        yield proc
    finally:
        if popen.poll() is None:
            popen.kill()
        popen.wait(timeout=10)
        if not proc.exited.done():  # the loop never saw it: undo what WorkerProcess registered
            asyncio.get_running_loop().remove_reader(proc.pidfd)
            os.close(proc.pidfd)


async def still_alive_after(proc: WorkerProcess, secs: float = 0.2) -> bool:
    try:
        await asyncio.wait_for(asyncio.shield(proc.exited), secs)
    except TimeoutError:
        return proc.alive() and proc._popen.poll() is None
    return False


def records(journal_path, kind=None):
    return [r for r in read_journal(journal_path) if kind is None or r["kind"] == kind]


OPEN = status(positions=1, open_=2, trading_state="REDUCING")


@pytest.mark.parametrize("ever_ran", [True, False])
@pytest.mark.parametrize("action", ACTIONS)
def test_open_positions_without_approval_are_refused_and_the_worker_lives(tmp_path, action, ever_ran):
    journal = Journal(tmp_path / "journal.jsonl")
    link = FakeLink(OPEN)

    async def scenario():
        async with child() as proc:
            gate = StopGate(proc, link, journal, status_timeout_secs=1.5)
            decision = await gate.end_worker(action, actor="signal:SIGTERM", node_ever_ran=ever_ran)
            assert decision.allowed is False and decision.reason
            assert await still_alive_after(proc)

    asyncio.run(scenario())
    journal.close()
    assert link.stops() == []
    assert [type(c) for c, _ in link.sent] == [p.GetStatus]  # it asked for a fresh status, nothing else
    assert link.sent[0][1] == 1.5
    refusals = records(tmp_path / "journal.jsonl", "refusal")
    assert len(refusals) == 1
    r = refusals[0]
    assert r["action"] == action.value and r["actor"] == "signal:SIGTERM"
    assert "positions_open=1" in r["reason"]
    assert (r["positions_open"], r["orders_inflight"], r["orders_open"]) == (1, 0, 2)
    assert records(tmp_path / "journal.jsonl", "worker_end") == []


@pytest.mark.parametrize("action", ACTIONS)
def test_hung_worker_without_approval_is_refused(tmp_path, action):
    journal = Journal(tmp_path / "journal.jsonl")
    link = FakeLink(hung=True)

    async def scenario():
        async with child() as proc:
            decision = await StopGate(proc, link, journal, 1.0).end_worker(action, actor="nsup")
            assert decision.allowed is False
            assert await still_alive_after(proc)

    asyncio.run(scenario())
    journal.close()
    assert link.stops() == []
    refusals = records(tmp_path / "journal.jsonl", "refusal")
    assert len(refusals) == 1 and refusals[0]["reason"]
    assert refusals[0]["positions_open"] is None  # nothing known, nothing made up


def test_hung_worker_that_never_ran_a_node_may_be_killed(tmp_path):
    journal = Journal(tmp_path / "journal.jsonl")
    link = FakeLink(hung=True)

    async def scenario():
        async with child() as proc:
            decision = await StopGate(proc, link, journal, 1.0).end_worker(EndAction.SIGKILL, actor="nsup",
                                                                           node_ever_ran=False)
            assert decision.allowed and "never run" in decision.reason
            assert await asyncio.wait_for(proc.exited, 5) == -signal.SIGKILL

    asyncio.run(scenario())
    journal.close()
    assert len(records(tmp_path / "journal.jsonl", "worker_end")) == 1


@pytest.mark.parametrize("hung", [False, True])
def test_approved_abort_lets_sigkill_end_the_worker(tmp_path, hung):
    journal = Journal(tmp_path / "journal.jsonl")
    link = FakeLink(None if hung else OPEN, hung=hung)

    async def scenario():
        async with child() as proc:
            gate = StopGate(proc, link, journal, 1.0)
            decision = await gate.end_worker(EndAction.SIGKILL, actor="alice", approval=approval(approval_id="ap-42"))
            assert decision.allowed
            code = await asyncio.wait_for(proc.exited, 5)
            assert code == -signal.SIGKILL

    asyncio.run(scenario())
    journal.close()
    ends = records(tmp_path / "journal.jsonl", "worker_end")
    assert len(ends) == 1
    assert ends[0]["action"] == "sigkill" and ends[0]["approval_id"] == "ap-42" and ends[0]["actor"] == "alice"
    assert "alice" in ends[0]["reason"]
    assert records(tmp_path / "journal.jsonl", "refusal") == []
    assert link.stops() == []


@pytest.mark.parametrize("approved", ["sigkill", "stop_command", "resume", "ABORT"])
def test_approval_for_another_action_does_not_allow_sigkill(tmp_path, approved):
    journal = Journal(tmp_path / "journal.jsonl")
    link = FakeLink(OPEN)

    async def scenario():
        async with child() as proc:
            decision = await StopGate(proc, link, journal, 1.0).end_worker(
                EndAction.SIGKILL, actor="alice", approval=approval(approved)
            )
            assert not decision.allowed
            assert await still_alive_after(proc)

    asyncio.run(scenario())
    journal.close()
    assert len(records(tmp_path / "journal.jsonl", "refusal")) == 1


def test_flat_status_lets_sigkill_end_the_worker(tmp_path):
    journal = Journal(tmp_path / "journal.jsonl")
    link = FakeLink(status())

    async def scenario():
        async with child() as proc:
            decision = await StopGate(proc, link, journal, 1.0).end_worker(EndAction.SIGKILL, actor="nsup")
            assert decision.allowed
            assert await asyncio.wait_for(proc.exited, 5) == -signal.SIGKILL

    asyncio.run(scenario())
    journal.close()
    ends = records(tmp_path / "journal.jsonl", "worker_end")
    assert len(ends) == 1 and ends[0]["approval_id"] is None
    assert (ends[0]["positions_open"], ends[0]["orders_inflight"], ends[0]["orders_open"]) == (0, 0, 0)


def test_worker_already_gone_is_allowed_without_asking_it(tmp_path):
    journal = Journal(tmp_path / "journal.jsonl")
    link = FakeLink(OPEN)

    async def scenario():
        async with child([sys.executable, "-c", "pass"]) as proc:
            await asyncio.wait_for(proc.exited, 5)
            for action in ACTIONS:
                decision = await StopGate(proc, link, journal, 1.0).end_worker(action, actor="nsup")
                assert decision.allowed and "gone" in decision.reason

    asyncio.run(scenario())
    journal.close()
    assert link.sent == []  # nothing asked of, or sent to, a worker that is gone
    assert len(records(tmp_path / "journal.jsonl", "worker_end")) == len(ACTIONS)


def test_exited_but_not_yet_reaped_worker_does_not_make_the_gate_raise(tmp_path):
    """The worker exits, the loop has not run the pidfd callback yet: signalling the zombie is harmless."""
    journal = Journal(tmp_path / "journal.jsonl")
    link = FakeLink(status())

    async def scenario():
        async with child([sys.executable, "-c", "pass"]) as proc:
            time.sleep(0.5)  # block the loop: the child is a zombie, WorkerProcess has not noticed
            decision = await StopGate(proc, link, journal, 1.0).end_worker(EndAction.SIGKILL, actor="nsup")
            assert decision.allowed
            assert await asyncio.wait_for(proc.exited, 5) == 0

    asyncio.run(scenario())
    journal.close()


def test_stop_command_without_approval_requires_flat_on_the_worker(tmp_path):
    journal = Journal(tmp_path / "journal.jsonl")
    link = FakeLink(status())

    async def scenario():
        async with child() as proc:
            decision = await StopGate(proc, link, journal, 2.5).end_worker(EndAction.STOP_COMMAND, actor="nsup")
            assert decision.allowed
            assert await still_alive_after(proc, 0.1)  # a command, not a signal

    asyncio.run(scenario())
    journal.close()
    assert link.stops() == [p.StopNode(require_flat=True)]
    assert [type(c) for c, _ in link.sent] == [p.GetStatus, p.StopNode]
    assert link.sent[-1][1] == 2.5
    kinds = [r["kind"] for r in read_journal(tmp_path / "journal.jsonl")]
    assert kinds == ["worker_end"]  # on record before it was sent, and nothing else


def test_stop_command_with_approval_does_not_require_flat(tmp_path):
    journal = Journal(tmp_path / "journal.jsonl")
    link = FakeLink(OPEN)

    async def scenario():
        async with child() as proc:
            decision = await StopGate(proc, link, journal, 1.0).end_worker(
                EndAction.STOP_COMMAND, actor="alice", approval=approval()
            )
            assert decision.allowed

    asyncio.run(scenario())
    journal.close()
    assert link.stops() == [p.StopNode(require_flat=False)]


def test_stop_command_the_worker_refuses_is_a_journaled_refusal(tmp_path):
    journal = Journal(tmp_path / "journal.jsonl")
    link = FakeLink(status(), refuse_stop=True)  # flat when asked, not flat by the time it checks itself

    async def scenario():
        async with child() as proc:
            decision = await StopGate(proc, link, journal, 1.0).end_worker(EndAction.STOP_COMMAND, actor="nsup")
            assert not decision.allowed and "refused" in decision.reason
            assert await still_alive_after(proc)

    asyncio.run(scenario())
    journal.close()
    kinds = [(r["kind"], r.get("actor")) for r in read_journal(tmp_path / "journal.jsonl")]
    assert kinds == [("worker_end", "nsup"), ("refusal", "worker")]
    assert link.stops() == [p.StopNode(require_flat=True)]


def test_stop_command_without_an_answer_is_a_fault_not_a_signal(tmp_path):
    journal = Journal(tmp_path / "journal.jsonl")
    link = FakeLink(status(), silent_stop=True)

    async def scenario():
        async with child() as proc:
            decision = await StopGate(proc, link, journal, 1.0).end_worker(EndAction.STOP_COMMAND, actor="nsup")
            assert decision.allowed  # sent; the daemon waits for the exit
            assert await still_alive_after(proc)

    asyncio.run(scenario())
    journal.close()
    kinds = [r["kind"] for r in read_journal(tmp_path / "journal.jsonl")]
    assert kinds == ["worker_end", "fault"]


def test_link_errors_are_the_two_kinds():
    assert issubclass(NoAnswer, LinkError) and issubclass(WorkerRefused, LinkError)
