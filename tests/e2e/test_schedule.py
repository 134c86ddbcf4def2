"""The trading-session schedule against a real nsup and demo node: closing-only, flatten and the stop
at their times, with actor `schedule`; and a time missed while nsup was down acted on once after it."""

from __future__ import annotations

import datetime as dt
import signal
import subprocess
import sys
import time
from zoneinfo import ZoneInfo

import pytest

from tests.e2e.conftest import REPO

pytestmark = pytest.mark.e2e

ALWAYS_IN = {"hold_secs": 3600.0, "flat_secs": 0.0}  # a position is open from the first quote on


def session_in_seconds(**offsets: float) -> dict:
    """A [schedule] whose times are `offsets` seconds from now, every day a trading day, in a zone where
    that is not near midnight (a time past midnight would belong to the next day)."""
    now = dt.datetime.now(dt.UTC)
    for zone in ("UTC", "Asia/Tokyo", "America/New_York"):
        local = now.astimezone(ZoneInfo(zone))
        if 1 <= local.hour <= 22:
            break
    times = {kind: (local + dt.timedelta(seconds=secs)).strftime("%H:%M:%S") for kind, secs in offsets.items()}
    return {"timezone": zone, "days": ["mon..sun"], **times}


def by_schedule(run, kind: str) -> list[dict]:
    return [r for r in run.records(kind) if r.get("actor") == "schedule"]


def test_the_schedule_goes_closing_only_flattens_and_stops_flat(nsup_run):
    schedule = session_in_seconds(closing_only=14, flatten=18, stop=22)
    run = nsup_run(ALWAYS_IN, schedule=schedule)
    running = run.wait_for_state("RUNNING")
    assert [r for r in run.records("scheduled")] == [], "the node must run before the first scheduled time"
    run.wait_for_positions(1)

    assert run.exit_code(timeout=90) == 0
    assert [r["action"] for r in run.records("scheduled")] == ["closing_only", "flatten", "stop"]
    assert [r["command"] for r in by_schedule(run, "command")] == ["pause", "flatten", "stop"]
    assert by_schedule(run, "refusal") == []
    pause = by_schedule(run, "command")[0]
    assert pause["result"] == "done" and pause["state"] == "RUNNING"
    halting = next(r for r in run.records("transition") if r["dest"] == "HALTING")
    assert halting["actor"] == "schedule"
    stopped = run.records("transition")[-1]
    assert stopped["dest"] == "STOPPED"
    assert (stopped["positions_open"], stopped["orders_inflight"], stopped["orders_open"]) == (0, 0, 0)
    assert running["ts"] < run.records("scheduled")[0]["ts"]


def test_a_stop_time_missed_while_nsup_was_down_is_acted_on_once_after_it(nsup_run):
    schedule = session_in_seconds(stop=12)
    run = nsup_run(ALWAYS_IN, schedule=schedule)
    run.wait_for_state("RUNNING")
    worker = run.worker_pid
    run.process.kill()  # nsup dies; the worker (its own session) trades on unsupervised
    run.process.wait()
    stop_at = dt.datetime.strptime(schedule["stop"], "%H:%M:%S").time()
    while dt.datetime.now(ZoneInfo(schedule["timezone"])).time() < stop_at:
        time.sleep(0.2)
    time.sleep(1.0)

    run.start()  # a new nsup after the stop time: it re-attaches and stops at once
    assert run.exit_code(timeout=90) == 0
    (scheduled,) = run.records("scheduled")
    assert scheduled["action"] == "stop" and scheduled["late_secs"] >= 1.0
    assert [r["result"] for r in run.records("reattach")] == ["re-attached"]
    assert run.records("worker_spawned")[0]["pid"] == worker  # the same worker, stopped flat
    assert run.records("transition")[-1]["dest"] == "STOPPED"

    run.start()  # and once only: the same day, a new session is not stopped again
    run.wait_for(lambda: len([r for r in run.records("transition") if r["dest"] == "RUNNING"]) == 2,
                 what="the second session RUNNING")
    time.sleep(1.5)  # several of the scheduler's looks
    assert len(run.records("scheduled")) == 1
    shown = subprocess.run([sys.executable, "-m", "supervisor.control.client.nsupctl", "--state-dir", str(run.state_dir),
                            "status"], cwd=REPO, capture_output=True, text=True, timeout=30)
    tomorrow = dt.datetime.now(ZoneInfo(schedule["timezone"])).date() + dt.timedelta(days=1)
    assert f"next stop at {tomorrow}T{schedule['stop']}" in shown.stdout and f"({schedule['timezone']})" in shown.stdout
    run.signal(signal.SIGTERM)
    assert run.exit_code() == 0
