"""The systemd notifier: what reaches a real NOTIFY_SOCKET, the policy per transition, and that no
systemd trouble ever reaches the caller."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid

import pytest
from loguru import logger

from _statuses import flat_reads
from supervisor import sd_notify
from supervisor.intent import StopRequest
from supervisor.lifecycle import Approval, Lifecycle
from supervisor.sd_notify import (
    EXTEND_WHILE_HALTING_USEC,
    SdNotifier,
    keep_alive,
    messages_for_transition,
    messages_on_reattach,
    status_text,
    watchdog_interval_secs,
)

COUNTS = {"positions_open": 2, "orders_inflight": 0, "orders_open": 1}
FLAT_COUNTS = {"positions_open": 0, "orders_inflight": 0, "orders_open": 0}


class Listener:
    """systemd's end: a unix datagram socket bound where NOTIFY_SOCKET points."""

    def __init__(self, address: str):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(2.0)

    def receive(self) -> str:
        return self.sock.recv(4096).decode()

    def nothing_more(self) -> bool:
        self.sock.settimeout(0.05)
        try:
            self.sock.recv(4096)
        except TimeoutError:
            return True
        finally:
            self.sock.settimeout(2.0)
        return False


@pytest.fixture
def clean_env(monkeypatch):
    for name in sd_notify.NOTIFY_ENV:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.fixture
def listener(tmp_path, clean_env):
    path = str(tmp_path / "notify.sock")
    listening = Listener(path)
    clean_env.setenv("NOTIFY_SOCKET", path)
    yield listening
    listening.sock.close()


@pytest.fixture
def warnings():
    seen: list[str] = []
    sink = logger.add(lambda message: seen.append(message.record["message"]), level="WARNING")
    yield seen
    logger.remove(sink)


def test_the_socket_receives_exactly_what_the_notifier_sends(listener):
    notifier = SdNotifier.from_environment()
    assert notifier.enabled
    assert notifier.ready()
    assert listener.receive() == "READY=1"
    notifier.ready(status="RUNNING positions=0 inflight=0 open=0")
    assert listener.receive() == "READY=1\nSTATUS=RUNNING positions=0 inflight=0 open=0"
    notifier.status("HALTING positions=2 inflight=0 open=1")
    assert listener.receive() == "STATUS=HALTING positions=2 inflight=0 open=1"
    notifier.stopping()
    assert listener.receive() == "STOPPING=1"
    notifier.watchdog()
    assert listener.receive() == "WATCHDOG=1"
    notifier.extend_timeout(EXTEND_WHILE_HALTING_USEC)
    assert listener.receive() == f"EXTEND_TIMEOUT_USEC={EXTEND_WHILE_HALTING_USEC}"
    notifier.send(*messages_for_transition("RUNNING", "HALTING", COUNTS))
    assert listener.receive() == "STOPPING=1\nSTATUS=HALTING positions=2 inflight=0 open=1"
    assert listener.nothing_more()


def test_a_status_stays_one_line_and_within_systemds_limit(listener):
    notifier = SdNotifier.from_environment()
    notifier.status("stuck: EURUSD.SIM LONG 1000\nREADY=1" + "x" * 5000)
    received = listener.receive()
    assert "\n" not in received and len(received.encode()) <= len("STATUS=") + sd_notify.STATUS_TEXT_MAX


def test_an_abstract_namespace_socket(clean_env):
    name = f"nsup-test-{uuid.uuid4().hex}"
    listening = Listener("\0" + name)
    try:
        clean_env.setenv("NOTIFY_SOCKET", "@" + name)
        notifier = SdNotifier.from_environment()
        assert notifier.send("READY=1", "STATUS=RUNNING")
        assert listening.receive() == "READY=1\nSTATUS=RUNNING"
    finally:
        listening.sock.close()


def test_the_worker_does_not_inherit_nsups_socket_or_watchdog(listener, clean_env):
    clean_env.setenv("WATCHDOG_USEC", "30000000")
    clean_env.setenv("WATCHDOG_PID", str(os.getpid()))
    notifier = SdNotifier.from_environment()
    assert notifier.watchdog_secs == 15.0
    assert not any(name in os.environ for name in sd_notify.NOTIFY_ENV)
    assert notifier.watchdog()  # nsup itself still reaches systemd
    assert listener.receive() == "WATCHDOG=1"


def test_without_notify_socket_everything_is_a_no_op(clean_env, warnings):
    notifier = SdNotifier.from_environment()
    assert not notifier.enabled
    results = [notifier.ready(), notifier.status("x"), notifier.stopping(), notifier.watchdog(),
               notifier.extend_timeout(1), notifier.keepalive("HALTING")]
    assert results == [False] * len(results)
    assert notifier._sock is None and warnings == []
    asyncio.run(asyncio.wait_for(keep_alive(notifier, lambda: "HALTING"), 1.0))  # returns at once


def test_a_socket_that_vanished_does_not_raise_and_is_logged_once(listener, tmp_path, warnings):
    notifier = SdNotifier.from_environment()
    assert notifier.ready()
    listener.sock.close()
    (tmp_path / "notify.sock").unlink()
    assert notifier.stopping() is False  # ENOENT
    assert notifier.status("HALTING") is False
    assert len(warnings) == 1 and "systemd notify failed" in warnings[0]
    replacement = Listener(str(tmp_path / "notify.sock"))  # systemd re-executed: the same path again
    try:
        assert notifier.status("HALTING")
        assert replacement.receive() == "STATUS=HALTING"
    finally:
        replacement.sock.close()


def test_a_socket_that_refuses_does_not_raise(tmp_path, clean_env):
    bound = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # the wrong kind: the send fails
    bound.bind(str(tmp_path / "stream.sock"))
    try:
        clean_env.setenv("NOTIFY_SOCKET", str(tmp_path / "stream.sock"))
        assert SdNotifier.from_environment().stopping() is False
    finally:
        bound.close()


def test_a_notify_socket_that_is_no_unix_path_is_ignored(clean_env, warnings):
    clean_env.setenv("NOTIFY_SOCKET", "vsock:2:1234")
    assert not SdNotifier.from_environment().enabled
    assert len(warnings) == 1


def test_a_full_lifecycle_through_the_policy(listener):
    """CREATED -> BUILT -> RUNNING -> HALTING -> FLAT -> STOPPED, as the daemon will wire it: the
    lifecycle's observer hands each transition to messages_for_transition and the notifier."""
    notifier = SdNotifier.from_environment()
    counts = {"now": COUNTS}
    life = Lifecycle(0.5, lambda trigger, source, dest, ev: notifier.send(
        *messages_for_transition(source, dest, counts["now"], resumable=not ev["actor"].startswith("signal:"))))

    assert life.fire("build", actor="nsup").ok
    assert life.fire("run", actor="nsup").ok
    assert life.fire("halt", actor="signal:SIGTERM").ok
    counts["now"] = FLAT_COUNTS
    assert life.fire("flat", actor="nsup", evidence=flat_reads(0.5)).ok
    assert life.fire("stop", actor="nsup", exit_code=0).ok
    received = [listener.receive() for _ in range(5)]
    assert listener.nothing_more()

    assert received == [
        "STATUS=BUILT positions=2 inflight=0 open=1",
        "READY=1\nSTATUS=RUNNING positions=2 inflight=0 open=1",
        "STOPPING=1\nSTATUS=HALTING positions=2 inflight=0 open=1",
        "STATUS=FLAT positions=0 inflight=0 open=0",
        "STATUS=STOPPED positions=0 inflight=0 open=0",
    ]
    lines = [line for datagram in received for line in datagram.split("\n")]
    assert lines.count("READY=1") == 1 and lines.count("STOPPING=1") == 1
    assert sum(line.startswith("STATUS=") for line in lines) == 5


def test_ready_again_after_recovery_and_status_on_every_transition():
    seen = []
    life = Lifecycle(0.5, lambda trigger, source, dest, ev: seen.append(messages_for_transition(source, dest, COUNTS)))
    for trigger in ("build", "run", "worker_lost", "build", "run", "worker_lost", "give_up"):
        assert life.fire(trigger, actor="nsup").ok
    assert [m[0] for m in seen] == ["STATUS=BUILT positions=2 inflight=0 open=1", "READY=1", "STATUS=RECOVERING positions=2 inflight=0 open=1",
                                    "STATUS=BUILT positions=2 inflight=0 open=1", "READY=1", "STATUS=RECOVERING positions=2 inflight=0 open=1",
                                    "STATUS=ABORTED positions=2 inflight=0 open=1"]
    assert all(m[-1].startswith("STATUS=") for m in seen)


def test_a_stop_an_operator_can_resume_does_not_tell_systemd_it_is_stopping():
    """STOPPING=1 puts the unit in 'deactivating' with TimeoutStopSec armed and no way back, so a
    `nsupctl stop` (resumable) must not send it; its resume then only says READY (ignored) and STATUS."""
    life_messages = []
    life = Lifecycle(0.5, lambda trigger, source, dest, ev: life_messages.append(
        messages_for_transition(source, dest, COUNTS, resumable=not ev["actor"].startswith("signal:"))))
    for trigger, actor in (("build", "nsup"), ("run", "nsup"), ("halt", "alice@desk")):
        assert life.fire(trigger, actor=actor).ok
    assert life.fire("resume", actor="alice@desk", stop=StopRequest("alice@desk")).ok
    assert life_messages[2] == ["STATUS=HALTING positions=2 inflight=0 open=1"]
    assert life_messages[3] == ["READY=1", "STATUS=RUNNING positions=2 inflight=0 open=1"]
    approval = Approval("abort", "alice", "venue down", "n-1")
    assert life.fire("halt", actor="signal:SIGTERM").ok and life.fire("abort", actor="alice", approval=approval).ok
    assert life.fire("ended", actor="alice").ok
    assert life_messages[4][0] == "STOPPING=1" and life_messages[5] == ["STATUS=ABORTING positions=2 inflight=0 open=1"]
    assert life_messages[6] == ["STATUS=ABORTED positions=2 inflight=0 open=1"]


@pytest.mark.parametrize(("state", "resumable", "ready", "stopping"), [
    ("RUNNING", False, True, False),
    ("HALTING", False, True, True),
    ("HALTING", True, True, False),  # an operator's stop, which an operator may still resume
    ("FLAT", False, True, True),
    ("STUCK", False, True, True),
    ("STUCK", True, True, False),
    ("BUILT", False, False, False),  # READY=1 comes with the transition into RUNNING
    ("RECOVERING", False, False, False),
])
def test_reattach(listener, state, resumable, ready, stopping):
    status = f"STATUS={state} positions=2 inflight=0 open=1: re-attached"
    expected = [(["READY=1"] if ready else []) + [status]] + ([["STOPPING=1"]] if stopping else [])
    assert messages_on_reattach(state, COUNTS, resumable=resumable) == expected
    SdNotifier.from_environment().reattached(state, COUNTS, resumable=resumable)
    assert [listener.receive() for _ in expected] == ["\n".join(d) for d in expected]  # READY apart from STOPPING
    assert listener.nothing_more()


def test_unknown_counts_are_shown_as_unknown():
    assert messages_for_transition("CREATED", "BUILT", {"positions_open": None}) == [
        "STATUS=BUILT positions=? inflight=? open=?"]


def test_status_says_when_the_journal_is_not_durable():
    note = "degraded: journal not durable (ENOSPC: No space left on device; 3 records held in memory)"
    assert messages_for_transition("RUNNING", "HALTING", COUNTS, resumable=True, note=note) == [
        f"STATUS={status_text('HALTING', COUNTS)}: {note}"]


@pytest.mark.parametrize(("env", "expected"), [
    ({}, None),
    ({"WATCHDOG_USEC": "30000000"}, 15.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4242"}, 15.0),  # ours
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4243"}, None),  # another process's
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "x"}, None),
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "-5"}, None),
    ({"WATCHDOG_USEC": "soon"}, None),
    ({"WATCHDOG_USEC": ""}, None),
])
def test_watchdog_interval_is_half_of_watchdog_usec_for_this_pid(env, expected):
    assert watchdog_interval_secs(env, pid=4242) == expected


@pytest.mark.parametrize(("state", "extends"), [
    ("CREATED", True), ("BUILT", True), ("RECOVERING", True), ("HALTING", True), ("FLAT", True),
    ("RUNNING", False), ("STOPPED", False), ("ABORTED", False),
])
def test_keepalive_extends_while_starting_halting_or_flat(listener, clean_env, state, extends):
    clean_env.setenv("WATCHDOG_USEC", "30000000")
    notifier = SdNotifier.from_environment()
    assert notifier.keepalive_secs == sd_notify.KEEPALIVE_SECS  # 10 s: under half of WatchdogSec=30
    assert notifier.keepalive(state)
    expected = "WATCHDOG=1" + (f"\nEXTEND_TIMEOUT_USEC={EXTEND_WHILE_HALTING_USEC}" if extends else "")
    assert listener.receive() == expected


def test_keepalive_without_watchdog_sends_only_the_extension(listener):
    notifier = SdNotifier.from_environment()
    assert not notifier.keepalive("RUNNING")
    assert notifier.keepalive("HALTING")
    assert listener.receive() == f"EXTEND_TIMEOUT_USEC={EXTEND_WHILE_HALTING_USEC}"
    assert listener.nothing_more()


def test_the_extension_outlasts_several_lost_keepalives():
    assert EXTEND_WHILE_HALTING_USEC / 1e6 >= 5 * sd_notify.KEEPALIVE_SECS


def test_keep_alive_ticks_on_the_loop_with_the_state_of_the_moment(listener, clean_env):
    clean_env.setenv("WATCHDOG_USEC", "100000")  # 0.1 s: a tick every 0.05 s
    notifier = SdNotifier.from_environment()
    states = iter(["RUNNING", "HALTING", "HALTING"])

    async def three_ticks():
        task = asyncio.ensure_future(keep_alive(notifier, lambda: next(states, "HALTING")))
        await asyncio.sleep(0.12)
        task.cancel()

    asyncio.run(three_ticks())
    assert listener.receive() == "WATCHDOG=1"
    assert listener.receive() == f"WATCHDOG=1\nEXTEND_TIMEOUT_USEC={EXTEND_WHILE_HALTING_USEC}"
