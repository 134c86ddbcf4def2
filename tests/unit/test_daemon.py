"""The daemon's shape: every state but the two ends has one activity, and the ends have none."""

from supervisor import lifecycle as lc
from supervisor.daemon import ACTIVITIES


def test_every_state_but_the_ends_has_one_activity():
    assert set(ACTIVITIES) == set(lc.STATES) - set(lc.TERMINAL)
    assert len(set(ACTIVITIES.values())) == len(ACTIVITIES), "one activity per state, none shared"


# Commands that cannot apply now are refused by the table, and say why; a record that cannot be put on
# file refuses an approval, never a stop. The real Supervisor and operator handler, no worker.

import asyncio
import errno

import pytest

from _disk import Disk
from supervisor.config import parse_config
from supervisor.control import protocol as c
from supervisor.control.server.operators import Operators
from supervisor.daemon import Supervisor
from supervisor.journal import Journal, read_journal
from supervisor.metrics import Metrics


def nsup(tmp_path, state: str) -> tuple[Supervisor, Operators]:
    config = parse_config({"node": {"factory": "node_worker.demo.node:demo_node"},
                           "supervisor": {"state_dir": str(tmp_path)}})
    supervisor = Supervisor(config, Journal(config.journal_path))
    supervisor.lifecycle.resume_at(state)
    return supervisor, Operators(supervisor, [])


def ask(operators: Operators, command: str, **fields) -> c.Reply:
    request = c.decode_request(c.encode({"v": c.CONTROL_VERSION, "id": "r1", "command": command,
                                         "actor": {"user": "alice", "host": "desk"}, **fields}))
    return asyncio.run(operators.handle(request))


@pytest.mark.parametrize("command", ["recover", "abort", "resume", "pause", "flatten", "restart"])
def test_nothing_applies_in_aborted(tmp_path, command):
    supervisor, operators = nsup(tmp_path, lc.ABORTED)
    reply = ask(operators, command)
    assert reply.status == "error" and reply.errno == c.Errno.REFUSED
    assert "nsup is ABORTED" in reply.reason, reply.reason
    refusal = read_journal(supervisor.journal.path)[-1]
    assert refusal["kind"] == "refusal" and refusal["reason"] == reply.reason


def test_resume_does_not_undo_a_signals_stop_asked_for_while_starting(tmp_path):
    """SIGTERM while the worker was starting: RUNNING for a moment before the stop's HALTING. An unpause
    then must not be taken for a resume of the stop (it was, answered ok)."""
    supervisor, operators = nsup(tmp_path, lc.BUILT)
    operators.on_signal(__import__("signal").SIGTERM)
    supervisor.lifecycle.resume_at(lc.RUNNING)
    reply = ask(operators, "resume")
    assert reply.status == "error" and "resume only in HALTING or STUCK" in reply.reason
    assert "signal:SIGTERM" in reply.reason and supervisor.stop.final
    assert supervisor.lifecycle.fire("halt", actor="nsup").ok
    reply = ask(operators, "resume")
    assert reply.status == "error" and "stop_is_resumable does not hold" in reply.reason
    assert supervisor.lifecycle.state == lc.HALTING


def test_an_approval_is_refused_while_the_journal_is_not_durable_and_a_stop_is_not(tmp_path):
    supervisor, operators = nsup(tmp_path, lc.RUNNING)
    with Disk(tmp_path).installed() as disk:
        disk.error = errno.ENOSPC
        assert ask(operators, "stop").status == "ok" and supervisor.lifecycle.state == lc.HALTING
        reply = ask(operators, "abort")
        assert reply.status == "error" and "not durable (ENOSPC" in reply.reason and "a stop still flattens" in reply.reason
        status = supervisor.snapshot().status()
        assert status["degraded"].startswith("degraded: journal not durable (ENOSPC: No space left on device;")
        assert "state.json not durable (ENOSPC" in status["degraded"] and status["records_held"] > 0
        metrics = Metrics()
        metrics.watch(supervisor.snapshot)
        assert {m.name: m.samples[0].value for m in metrics.collect() if m.name.startswith("nsup_journal")} == {
            "nsup_journal_degraded": 1.0, "nsup_journal_records_held": float(status["records_held"])}
        disk.error = None
        assert supervisor.journal.make_durable() is None
        supervisor.persist()
    assert supervisor.snapshot().status()["degraded"] is None
    kinds = [r["kind"] for r in read_journal(supervisor.journal.path)]
    assert kinds.index("journal_degraded") < kinds.index("refusal") < kinds.index("journal_restored")
    assert "state_not_durable" in kinds and kinds[-1] == "state_durable"
