"""The schedule acted on (supervisor/scheduler.py): through the operators' own request path with actor
`schedule`, refused with the table's reason, once only, across a restart of nsup. The real Supervisor,
operator handler and state.json, no worker, and a clock the test moves."""

from __future__ import annotations

import asyncio
import datetime as dt
from types import SimpleNamespace

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from supervisor import lifecycle as lc
from supervisor import schedule as sched
from supervisor.control import protocol as c
from supervisor.config import parse_config
from supervisor.control.commands.status import StatusCommand
from supervisor.control.server.operators import Operators
from supervisor.daemon import Supervisor
from supervisor.journal import Journal, read_journal
from supervisor.metrics import Metrics
from supervisor.persisted_state import PersistedState, load
from supervisor.protocol import Counts, NodeStatus
from supervisor.scheduler import Scheduler
from supervisor.session import WorkerLost

DAY = dt.date(2026, 12, 1)  # a Tuesday


class Clock:
    def __init__(self, hh: int, mm: int, ss: int = 0):
        self.now = dt.datetime.combine(DAY, dt.time(hh, mm, ss), tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now

    def at(self, hh: int, mm: int, ss: int = 0) -> None:
        self.now = dt.datetime.combine(DAY, dt.time(hh, mm, ss), tzinfo=dt.UTC)


def nsup(tmp_path, state: str, clock: Clock, **schedule) -> tuple[Supervisor, Operators, Scheduler]:
    """A Supervisor in `state` with a schedule; what it acted on comes from state.json, as after a restart."""
    config = parse_config({"node": {"factory": "node_worker.demo.node:demo_node"},
                           "supervisor": {"state_dir": str(tmp_path)},
                           "schedule": {"timezone": "UTC", "open": "09:30:00", **schedule}})
    was = load(tmp_path / "state.json")
    scheduler = Scheduler(config.schedule, was.schedule_done if was else [], clock)
    supervisor = Supervisor(config, Journal(config.journal_path), scheduler=scheduler)
    supervisor.lifecycle.resume_at(state)
    return supervisor, Operators(supervisor, []), scheduler


def act(supervisor, operators, scheduler) -> list[tuple[str, str]]:
    acted = asyncio.run(scheduler.act_on_due(supervisor, operators.perform))
    return [(action.kind, reply.status) for action, reply in acted]


def records(supervisor, kind: str) -> list[dict]:
    return [r for r in read_journal(supervisor.journal.path) if r["kind"] == kind]


def test_a_stop_time_stops_through_the_operators_path_with_actor_schedule(tmp_path):
    clock = Clock(15, 59)
    supervisor, operators, scheduler = nsup(tmp_path, lc.RUNNING, clock, stop="16:00:00")
    assert act(supervisor, operators, scheduler) == []
    assert supervisor.snapshot().schedule.next_kind == "stop"
    clock.at(16, 0, 1)
    assert act(supervisor, operators, scheduler) == [("stop", "ok")]
    assert supervisor.lifecycle.state == lc.HALTING and supervisor.stop.actor == "schedule"
    (scheduled,) = records(supervisor, "scheduled")
    assert scheduled["action"] == "stop" and scheduled["at"] == "2026-12-01T16:00:00+00:00" and scheduled["late_secs"] == 1.0
    (command,) = records(supervisor, "command")
    assert command["command"] == "stop" and command["actor"] == "schedule"
    assert records(supervisor, "transition")[-1]["actor"] == "schedule"
    assert act(supervisor, operators, scheduler) == []  # once


def test_a_refusal_is_journaled_with_the_tables_reason_and_not_tried_again(tmp_path):
    clock = Clock(15, 46)
    supervisor, operators, scheduler = nsup(tmp_path, lc.HALTING, clock, closing_only="15:45:00")
    assert act(supervisor, operators, scheduler) == [("closing_only", "error")]
    (refusal,) = records(supervisor, "refusal")
    assert refusal["actor"] == "schedule" and refusal["command"] == "pause"
    assert refusal["reason"] == "pause only in RUNNING; nsup is HALTING"
    clock.at(15, 50)
    assert act(supervisor, operators, scheduler) == []


def test_acted_on_survives_a_restart_and_a_missed_time_is_acted_on_at_once_once(tmp_path):
    clock = Clock(15, 56)  # nsup was down at 15:55: the flatten was missed, and is due at once
    supervisor, operators, scheduler = nsup(tmp_path, lc.HALTING, clock, flatten="15:55:00", stop="16:00:00")
    assert act(supervisor, operators, scheduler) == [("flatten", "error")]  # no worker here: refused, with why
    assert "no worker is running" in records(supervisor, "refusal")[0]["reason"]
    assert [d.kind for d in load(tmp_path / "state.json").schedule_done] == ["flatten"]  # on file before it was asked
    supervisor.journal.close()

    clock.at(16, 30)  # a new nsup, after the stop time too: the stop is due, the flatten is not again
    supervisor, operators, scheduler = nsup(tmp_path, lc.RUNNING, clock, flatten="15:55:00", stop="16:00:00")
    assert act(supervisor, operators, scheduler) == [("stop", "ok")]
    assert [d.kind for d in load(tmp_path / "state.json").schedule_done] == ["flatten", "stop"]
    supervisor.journal.close()

    supervisor, operators, scheduler = nsup(tmp_path, lc.RUNNING, clock, flatten="15:55:00", stop="16:00:00")
    assert act(supervisor, operators, scheduler) == []  # never twice
    assert supervisor.snapshot().schedule.next_at == "2026-12-02T15:55:00+00:00"


def test_while_no_node_runs_a_pause_waits_and_a_stop_does_not(tmp_path):
    clock = Clock(16, 1)
    supervisor, operators, scheduler = nsup(tmp_path, lc.CREATED, clock, closing_only="15:45:00", stop="16:00:00")
    assert act(supervisor, operators, scheduler) == [("stop", "ok")]
    assert supervisor.stop.actor == "schedule" and supervisor.lifecycle.state == lc.CREATED  # pending until it runs
    assert supervisor.snapshot().schedule.next_kind == "closing_only"  # still due, once a node runs
    supervisor.lifecycle.resume_at(lc.RUNNING)
    assert act(supervisor, operators, scheduler) == [("closing_only", "error")]  # no worker in this test


def test_status_shows_the_next_action_in_the_schedules_zone_and_metrics_the_session(tmp_path):
    clock = Clock(22, 0)  # 07:00 on Wednesday in Tokyo
    config = {"closing_only": "15:45:00", "flatten": "15:55:00"}
    supervisor, _, scheduler = nsup(tmp_path, lc.RUNNING, clock, **config)
    scheduler.section = parse_config({"node": {"factory": "a.b:c"}, "supervisor": {"state_dir": str(tmp_path)},
                                      "schedule": {"timezone": "Asia/Tokyo", "open": "09:00:00", **config}}).schedule
    status = supervisor.snapshot().status()
    text = StatusCommand().render(msgspec.json.decode(msgspec.json.encode(status)))  # as nsupctl reads it
    assert "schedule       out of session; next closing_only at 2026-12-02T15:45:00+09:00 (Asia/Tokyo)" in text
    metrics = Metrics()
    metrics.watch(supervisor.snapshot)
    assert {m.name: m.samples[0].value for m in metrics.collect() if m.name == "nsup_in_session"} == {"nsup_in_session": 0.0}
    clock.at(1, 0)  # 10:00 on Tuesday in Tokyo
    assert {m.name: m.samples[0].value for m in metrics.collect() if m.name == "nsup_in_session"} == {"nsup_in_session": 1.0}


def test_a_silent_feed_outside_the_session_is_the_market_closed():
    def fed(age: float) -> NodeStatus:
        return NodeStatus("RUNNING", "ACTIVE", Counts(0, 0, 0), [], [], ts=0.0, data_age_secs=age)

    assert fed(60.0).health(10.0) == "feed_silent"
    assert fed(60.0).health(10.0, in_session=False) == "idle_market_closed"
    assert fed(1.0).health(10.0, in_session=False) == "ok"


def test_a_stop_asked_while_nsup_starts_survives_carrying_on(tmp_path):
    """The schedule (or a signal) can ask for a stop before a restarted nsup has read what the last one
    left: carrying on must not drop it for the persisted state's 'no stop'."""
    clock = Clock(16, 1)
    supervisor, operators, scheduler = nsup(tmp_path, lc.CREATED, clock, stop="16:00:00")
    assert act(supervisor, operators, scheduler) == [("stop", "ok")]
    with pytest.raises(WorkerLost):  # no worker to re-attach to here: a lost worker, with the stop pending
        asyncio.run(supervisor._carry_on(PersistedState(state=lc.RUNNING)))
    assert supervisor.stop is not None and supervisor.stop.actor == "schedule"


class FakeNsup:
    """The Supervisor as the scheduler sees it: a lifecycle state, persist (state.json) and a journal."""

    def __init__(self, store: list):
        self.lifecycle = SimpleNamespace(state=lc.RUNNING)
        self.journal = SimpleNamespace(record=lambda *a, **k: None)
        self.scheduler: Scheduler | None = None
        self._store = store

    def persist(self) -> None:
        self._store[:] = self.scheduler.view().done


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.floats(min_value=1, max_value=30 * 3600), st.booleans()), min_size=1, max_size=40))
def test_never_twice_across_restarts(steps):
    """nsup looks at the schedule now and then and is restarted at random (what it acted on read back
    from the persisted state each time): every time of every trading day is asked for at most once."""
    section = parse_config({"node": {"factory": "a.b:c"}, "supervisor": {"state_dir": "/nonexistent"},
                            "schedule": {"timezone": "America/New_York", "closing_only": "15:45:00",
                                         "flatten": "15:55:00", "stop": "16:00:00"}}).schedule
    clock, store, asked = Clock(12, 0), [], []
    fake = FakeNsup(store)

    async def perform(request, actor):
        asked.append((sched.local_day(section, clock()), request.__struct_config__.tag))
        return c.ok(request.id)

    for gap, restart in steps:
        if restart or fake.scheduler is None:
            fake.scheduler = Scheduler(section, list(store), clock)
        clock.now += dt.timedelta(seconds=gap)
        asyncio.run(fake.scheduler.act_on_due(fake, perform))
    assert len(asked) == len(set(asked))
    assert all(sched.is_trading_day(section, day) for day, _ in asked)
