"""The bridge's pure parts: what an operator reads for each event, coalescing, and reading commands."""

from __future__ import annotations

import pytest

from telegram_bridge.commands import Approve, Challenge, Control, Help, Status, Unusable, parse
from telegram_bridge.messages import KINDS, Coalescer, message_for

COUNTS = {"positions_open": 2, "orders_inflight": 0, "orders_open": 1}
POSITION = {"instrument_id": "EUR/USD.SIM", "side": "LONG", "quantity": "100000", "unrealized_pnl": "-12.50 USD"}
ORDER = {"client_order_id": "O-1", "instrument_id": "EUR/USD.SIM", "side": "SELL", "quantity": "100000",
         "order_type": "LIMIT", "status": "ACCEPTED", "owner": "EMACross-000"}


def transition(source: str, dest: str, trigger: str, actor: str = "nsup", reason: str | None = None) -> dict:
    return {"kind": "transition", "source": source, "dest": dest, "trigger": trigger, "actor": actor, "reason": reason,
            **COUNTS}


@pytest.mark.parametrize(("kind", "record", "expected"), [
    ("transition", transition("BUILT", "RUNNING", "run"), "alpha: 🟢 up and reconciled, RUNNING (positions=2 inflight=0 open=1)"),
    ("transition", transition("RUNNING", "HALTING", "halt", "telegram:42@h"), "alpha: 🟠 HALTING: stop asked by telegram:42@h"),
    ("transition", transition("FLAT", "STOPPED", "stop"), "alpha: ✅ flat and stopped cleanly (STOPPED)"),
    ("transition", transition("ABORTING", "ABORTED", "ended", "ops@h", "the worker was ended"),
     "alpha: 🔴 ABORTED (ended by ops@h): the worker was ended"),
    ("transition", transition("RECOVERING", "ABORTED", "give_up", reason="3 restarts in 300s: the restart bound is spent"),
     "alpha: 🔴 ABORTED (give_up by nsup): 3 restarts in 300s: the restart bound is spent"),
    ("transition", transition("RUNNING", "RECOVERING", "worker_lost", reason="the worker exited with code -9"),
     "alpha: 🟠 worker lost, RECOVERING: the worker exited with code -9"),
    ("transition", transition("HALTING", "RUNNING", "resume", "ops@h"), "alpha: 🟢 RUNNING again after HALTING (resume by ops@h"),
    ("halt_stuck", {**COUNTS, "positions": [POSITION], "orders": [ORDER]},
     "alpha: 🔴 STUCK in HALTING, not flat (positions=2 inflight=0 open=1)"),
    ("component_state", {"component": "EMACross-000", "source": "RUNNING", "dest": "DEGRADED"},
     "alpha: 🟠 component EMACross-000 RUNNING -> DEGRADED"),
    ("component_state", {"component": "DataEngine", "source": "RUNNING", "dest": "FAULTED"},
     "alpha: 🔴 component DataEngine RUNNING -> FAULTED"),
    ("component_state", {"component": "EMACross-000", "source": "DEGRADED", "dest": "RUNNING"},
     "alpha: 🟢 component EMACross-000 DEGRADED -> RUNNING"),
    ("fault", {"reason": "the worker has missed 3 heartbeats (0.7s silent); nsup waits"},
     "alpha: 🟠 fault: the worker has missed 3 heartbeats"),
    ("hung", {"silent_secs": 5.2}, "alpha: 🟠 worker hung (5.2s silent), flat when last heard"),
    ("hung_with_exposure", {"silent_secs": 5.2, **COUNTS}, "alpha: 🔴 worker hung WITH EXPOSURE (5.2s silent, positions=2"),
    ("restart_scheduled", {"in_secs": 0.5, "restarts": 2}, "alpha: 🟠 worker restart 2 in 0.5s"),
    ("health", {"health": "feed_silent", "was": "ok"}, "alpha: 🟠 health ok -> feed_silent"),
    ("health", {"health": "ok", "was": "feed_silent"}, "alpha: 🟢 health feed_silent -> ok"),
    ("journal_degraded", {"reason": "the journal cannot be written (ENOSPC)"}, "alpha: 🔴 journal degraded: the journal cannot"),
    ("approval", {"action": "abort", "actor": "telegram:42@h", "reason": "venue down", "nonce": "ab"},
     "alpha: 🟠 abort approved by telegram:42@h: venue down"),
])
def test_each_event_operators_care_about_has_a_short_message_naming_the_node(kind, record, expected):
    assert kind in KINDS, "the bridge subscribes to it"
    _, text = message_for("alpha", kind, record)
    assert text.startswith(expected), text
    assert len(text) < 400


def test_stuck_lists_what_keeps_it_from_flat_and_counts_the_rest():
    positions = [{**POSITION, "instrument_id": f"I{i}.SIM"} for i in range(7)]
    _, text = message_for("alpha", "halt_stuck", {**COUNTS, "positions": positions, "orders": [ORDER]})
    assert "position I0.SIM LONG 100000 unrealized -12.50 USD" in text and "position I4.SIM" in text
    assert "I5.SIM" not in text and "(and 2 more positions)" in text
    assert "order O-1 EUR/USD.SIM SELL 100000 LIMIT ACCEPTED (EMACross-000)" in text


@pytest.mark.parametrize(("kind", "record"), [
    ("transition", transition("HALTING", "STUCK", "stuck")),
    ("transition", transition("HALTING", "FLAT", "flat")),
    ("transition", transition("CREATED", "BUILT", "build")),
    ("transition", transition("RUNNING", "RESTARTING", "restart")),
    ("command", {"command": "pause", "actor": "ops@h"}),
    ("heartbeat", {"state": "RUNNING"}),
    ("flatten_round", {"round": 1}),
    ("fault", {"reason": "the worker exited with code -9 in RUNNING", "exit_code": -9}),  # RECOVERING says it
])
def test_steps_on_the_way_say_nothing(kind, record):
    assert message_for("alpha", kind, record) is None


def test_a_flapping_feed_sends_one_message_a_window_with_the_count():
    now = [0.0]
    coalescer = Coalescer(60.0, clock=lambda: now[0])
    health = [("ok", "feed_silent"), ("feed_silent", "ok")]
    sent = []
    for i in range(200):
        was, is_ = health[i % 2]
        key, text = message_for("alpha", "health", {"health": is_, "was": was})
        sent += [t for t in [coalescer.offer(key, text)] if t]
        now[0] += 0.25  # 200 flaps in 50 s
    assert sent == ["alpha: 🟠 health ok -> feed_silent"]
    assert coalescer.due() == []  # the window is still open
    now[0] = 60.0
    (_, last), = coalescer.due()
    assert last == "alpha: 🟢 health feed_silent -> ok (and 198 more like this in 60s; this is the last)"
    assert coalescer.due() == []
    key, text = message_for("alpha", "health", {"health": "feed_silent", "was": "ok"})
    assert coalescer.offer(key, text) is None, "still flapping: the next window counts it"
    now[0] = 120.0
    assert coalescer.due() == [(key, text)]  # one more, alone: said as it is
    now[0] = 180.0
    assert coalescer.due() == [] and coalescer.offer(key, text) == text, "quiet for a window: the next goes at once"


def test_coalescing_is_per_node_and_kind():
    coalescer = Coalescer(60.0, clock=lambda: 0.0)
    offers = [message_for(node, "health", {"health": "feed_silent", "was": "ok"}) for node in ("alpha", "bravo")]
    offers.append(message_for("alpha", "transition", transition("RUNNING", "HALTING", "halt")))
    assert all(coalescer.offer(*said) for said in offers)


@pytest.mark.parametrize(("text", "asked"), [
    ("/status", Status(None)),
    ("/status alpha", Status("alpha")),
    ("/STOP@NsupBot alpha", Control("stop", "alpha")),
    ("/pause alpha", Control("pause", "alpha")),
    ("/resume alpha", Control("resume", "alpha")),
    ("/flatten alpha", Control("flatten", "alpha")),
    ("/abort alpha", Challenge("abort", "alpha")),
    ("/recover alpha", Challenge("recover", "alpha")),
    ("/approve 0a1b DEMO-001 the venue  is down", Approve("0a1b", "DEMO-001", "the venue is down")),
    ("/help", Help()),
    ("/stop", Unusable("usage: /stop NODE")),
    ("/stop alpha bravo", Unusable("usage: /stop NODE")),
    ("/status a b", Unusable("usage: /status [NODE]")),
    ("/approve 0a1b DEMO-001", Unusable("usage: /approve NONCE TRADER_ID REASON (the reason goes on record)")),
])
def test_commands_are_read_into_what_they_ask(text, asked):
    assert parse(text) == asked


def test_chat_is_not_a_command_and_an_unknown_command_is_answered_with_help():
    assert parse("is anyone watching alpha?") is None and parse("") is None
    unknown = parse("/kill alpha")
    assert isinstance(unknown, Unusable) and unknown.reason.startswith("unknown command /kill") and "/approve" in unknown.reason
