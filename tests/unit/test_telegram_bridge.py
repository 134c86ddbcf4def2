"""The bridge's I/O against real sockets: its config, the Bot API client and the outbox against a fake
of the Bot API on loopback (Telegram is the world outside), and the event loop reading a real ZeroMQ
PUB socket laid out as a node's (endpoints.json in ROOT/NAME), as nsup publishes its journal records."""

from __future__ import annotations

import json
import os
import re
import tempfile
import threading
import time
from pathlib import Path

import msgspec
import pytest
import zmq

from supervisor.control.client import host
from telegram_bridge.bot_api import BotApi, BotApiError
from telegram_bridge.bridge import Bridge
from telegram_bridge.carry_out import Operator
from telegram_bridge.cli import main
from telegram_bridge.commands import parse
from telegram_bridge.config import load_config
from telegram_bridge.outbox import Outbox
from tests.telegram_fake import TOKEN, FakeBotApi, bridge_config


@pytest.fixture
def fake():
    api = FakeBotApi()
    yield api
    api.hang(False)
    api.close()


# The config --------------------------------------------------------------------------------------

def test_a_good_config_loads_with_its_token(tmp_path):
    config, token = load_config(bridge_config(tmp_path, "https://api.telegram.org", tmp_path / "nodes", allowed=(1, 2)))
    assert token == TOKEN and config.telegram.allowed_user_ids == [1, 2] and config.nodes.root == str(tmp_path / "nodes")


@pytest.mark.parametrize(("change", "said"), [
    (lambda c, t: t.chmod(0o644), "has mode 0644: it must be 0600"),
    (lambda c, t: t.chmod(0o640), "has mode 0640: it must be 0600"),
    (lambda c, t: t.unlink(), "does not exist"),
    (lambda c, t: t.write_text("two words\n"), "must hold the bot token alone, on one line"),
    (lambda c, t: c.write_text(c.read_text().replace("chat_id = -100", 'chat_id = "the desk"')),
     "telegram.chat_id: expected int, got str"),
    (lambda c, t: c.write_text(c.read_text().replace("allowed_user_ids = [42]", "allowed_user_ids = []")),
     "telegram.allowed_user_ids: expected array of length >= 1"),
    (lambda c, t: c.write_text(c.read_text().replace("http://127.0.0.1:1", "http://api.example")),
     "telegram.api_url must be https"),
    (lambda c, t: c.write_text(c.read_text().replace("[telegram]", "[telegarm]")), "no [telegram] table: the bridge is off"),
    (lambda c, t: c.write_text("[telegram\n"), "is not valid TOML"),
])
def test_a_config_error_is_one_line_and_exit_2(tmp_path, capsys, change, said):
    config = bridge_config(tmp_path, "http://127.0.0.1:1", tmp_path / "nodes")
    change(config, tmp_path / "telegram.token")
    assert main(["--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert said in err and err.count("\n") == 1 and err.startswith("nsup-telegram: "), err


# The Bot API client and the outbox ---------------------------------------------------------------

def test_the_bot_api_client_sends_and_reads_updates(fake):
    api = BotApi(fake.url, TOKEN)
    api.send_message(-100, "x" * 5000)
    assert fake.sent[0]["chat_id"] == -100 and len(fake.sent[0]["text"]) <= 4096 and fake.sent[0]["text"].endswith("(cut short)")
    fake.say(7, "/status")
    update, = api.get_updates(None, 1)
    assert update["message"]["text"] == "/status" and api.get_updates(update["update_id"] + 1, 0) == []


def test_a_failed_call_names_the_method_and_never_the_token(fake):
    with pytest.raises(BotApiError) as refused:
        BotApi(fake.url, "999:wrong").send_message(-100, "hello")
    assert str(refused.value) == "sendMessage: HTTP 401 Unauthorized"
    with pytest.raises(BotApiError) as down:
        BotApi("http://127.0.0.1:1", TOKEN).send_message(-100, "hello")
    assert str(down.value).startswith("sendMessage: ") and TOKEN not in str(down.value)


def test_the_outbox_never_blocks_drops_the_oldest_and_says_so(fake):
    fake.hang(True)
    outbox = Outbox(BotApi(fake.url, TOKEN, timeout_secs=30).send_message, size=3)
    outbox.put(-100, "m0")
    time.sleep(0.2)  # m0 is being sent: the fake holds it
    started = time.monotonic()
    for i in range(1, 10):
        outbox.put(-100, f"m{i}")
    assert time.monotonic() - started < 0.1, "put never waits on Telegram"
    # m1..m6 were dropped for m7, m8, m9; the one being sent is never dropped
    assert outbox.dropped == 6 and outbox.waiting() == 4
    fake.hang(False)
    fake.wait_for_text("m9")
    assert fake.texts() == ["m0", "(6 earlier message(s) dropped while Telegram was unreachable)\nm7", "m8", "m9"]
    outbox.close()


def test_a_send_that_fails_is_tried_again(fake, monkeypatch):
    monkeypatch.setattr("telegram_bridge.outbox.RETRY_FIRST_SECS", 0.05)
    calls = []

    def flaky(chat_id, text):
        calls.append(text)
        if len(calls) < 3:
            raise BotApiError("sendMessage: HTTP 502 Bad Gateway")
        BotApi(fake.url, TOKEN).send_message(chat_id, text)

    outbox = Outbox(flaky, size=10)
    outbox.put(-100, "alpha: ✅ flat and stopped cleanly (STOPPED)")
    fake.wait_for_text("STOPPED", timeout=5)
    outbox.close()
    assert len(calls) == 3 and outbox.sent == 1 and outbox.dropped == 0


# The event loop, on a real PUB socket ------------------------------------------------------------

class FakeNodeEvents:
    """A PUB socket where nsup binds its events, with the endpoints.json nsup writes in its state dir."""

    def __init__(self, state_dir: Path):
        self._dir = tempfile.mkdtemp(prefix="tg-")  # ipc paths must be short
        self.endpoint = f"ipc://{self._dir}/events.sock"
        self.socket = zmq.Context.instance().socket(zmq.PUB)
        self.socket.bind(self.endpoint)
        state_dir.mkdir(parents=True)
        (state_dir / "endpoints.json").write_text(json.dumps({"control": [f"ipc://{self._dir}/control.sock"],
                                                              "events": [self.endpoint]}))

    def publish(self, kind: str, **fields) -> None:
        self.socket.send_multipart([kind.encode(), msgspec.json.encode({"ts": "now", "kind": kind, **fields})])

    def close(self) -> None:
        self.socket.close(linger=0)
        os.rmdir(self._dir) if not os.listdir(self._dir) else None


@pytest.fixture
def running_bridge(tmp_path, fake):
    root = tmp_path / "nodes"
    root.mkdir()
    config, token = load_config(bridge_config(tmp_path, fake.url, root, coalesce_secs=1.0))
    bridge = Bridge(config, token)
    thread = threading.Thread(target=bridge.run, daemon=True)
    thread.start()
    fake.wait_for_text("bridge up")
    yield bridge, root
    bridge.stop()
    thread.join(5)
    assert not thread.is_alive()


def publish_until_seen(fake, node: FakeNodeEvents, needle: str, kind: str, **fields) -> str:
    """ZeroMQ's slow joiner: the bridge's subscription reaches the PUB a moment after it connects."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        node.publish(kind, **fields)
        try:
            return fake.wait_for_text(needle, timeout=0.3)
        except AssertionError:
            continue
    raise AssertionError(f"{needle!r} never sent; sent: {fake.texts()}")


def test_a_node_that_appears_is_followed_and_its_component_states_are_said(fake, running_bridge):
    _, root = running_bridge
    node = FakeNodeEvents(root / "charlie")  # after the bridge started: found by its next scan
    try:
        said = publish_until_seen(fake, node, "DEGRADED", "component_state", component="EMACross-000", source="RUNNING",
                                  dest="DEGRADED")
        assert said == "charlie: 🟠 component EMACross-000 RUNNING -> DEGRADED"
        node.publish("component_state", component="DataEngine", source="RUNNING", dest="FAULTED")
        assert fake.wait_for_text("FAULTED") == "charlie: 🔴 component DataEngine RUNNING -> FAULTED"
        node.publish("heartbeat", state="RUNNING")  # not subscribed to
        node.publish("command", command="pause", actor="ops@h")  # nothing to say
        node.publish("transition", source="RUNNING", dest="HALTING", trigger="halt", actor="ops@h")
        fake.wait_for_text("charlie: 🟠 HALTING: stop asked by ops@h")
        assert not any("heartbeat" in t or "pause" in t for t in fake.texts())
    finally:
        node.close()


def test_a_flapping_feed_through_the_bridge_is_one_message_then_one_count(fake, running_bridge):
    _, root = running_bridge
    node = FakeNodeEvents(root / "delta")
    try:
        publish_until_seen(fake, node, "delta: 🟠 health ok -> feed_silent", "health", health="feed_silent", was="ok")
        time.sleep(1.1)  # the warm-up's window ends (it may have sent one count)
        before = len(fake.sent)
        for i in range(300):
            node.publish("health", health=("ok", "feed_silent")[i % 2], was=("feed_silent", "ok")[i % 2])
        summary = fake.wait_for_text("more like this", timeout=5, after=before)
        time.sleep(1.2)
        flaps = [t for t in fake.texts()[before:] if t.startswith("delta: ")]
        assert len(flaps) == 2, flaps
        assert flaps[0] == "delta: 🟢 health feed_silent -> ok"
        assert summary == flaps[1] and "(and 298 more like this in 1s; this is the last)" in summary
    finally:
        node.close()


def test_a_stale_command_is_not_carried_out(fake, running_bridge):
    fake.say(42, "/stop charlie", age_secs=600)
    said = fake.wait_for_text("not carried out")
    assert re.search(r"was sent 60\ds ago", said), said


# Nodes by name, and what is answered without asking a node --------------------------------------

def test_nodes_are_the_state_dirs_under_the_root_that_hold_nsups_files(tmp_path):
    for name, file in (("alpha", "journal.jsonl"), ("bravo", "endpoints.json"), ("charlie", "state.json")):
        (tmp_path / name).mkdir()
        (tmp_path / name / file).write_text("{}")
    (tmp_path / "lost+found").mkdir()
    (tmp_path / "notes.txt").write_text("")
    assert host.nodes(tmp_path) == {n: tmp_path / n for n in ("alpha", "bravo", "charlie")}
    assert host.nodes(tmp_path / "absent") == {}


def test_what_needs_no_node_is_answered_by_the_bridge(tmp_path):
    (tmp_path / "alpha").mkdir()
    (tmp_path / "alpha" / "journal.jsonl").write_text("")
    operator = Operator(lambda: host.nodes(tmp_path))
    assert operator.answer(parse("/approve 0a1b DEMO-001 why"), 42).startswith("no challenge was shown here")
    assert operator.answer(parse("/stop zulu"), 42) == "no node named 'zulu' (nodes: alpha)"
    assert operator.answer(parse("/stop alpha"), 42).startswith("alpha: not reachable: no nsup is running on")
    assert operator.answer(parse("/status"), 42).startswith("alpha: not reachable")
    assert operator.answer(parse("/help"), 42).startswith("/status [NODE]")


def test_status_of_every_node_asks_them_at_once(tmp_path):
    """Three nsups that take the request and never answer: one timeout for /status, not three."""
    context = zmq.Context.instance()
    silent = []
    for name in ("alpha", "bravo", "charlie"):
        (tmp_path / name).mkdir()
        socket = context.socket(zmq.ROUTER)
        socket.bind(f"ipc://{tmp_path / name / 'control.sock'}")
        silent.append(socket)
        endpoints = {"control": [socket.last_endpoint.decode()], "events": ["ipc:///nowhere"]}
        (tmp_path / name / "endpoints.json").write_text(json.dumps(endpoints))
    try:
        started = time.monotonic()
        said = Operator(lambda: host.nodes(tmp_path), timeout_secs=2.0).answer(parse("/status"), 42)
        took = time.monotonic() - started
    finally:
        for socket in silent:
            socket.close(linger=0)
    assert [line.split(":")[0] for line in said.splitlines()] == ["alpha", "bravo", "charlie"], said
    assert all("did not answer" in line or "no reply" in line for line in said.splitlines()), said
    assert took < 5.0, f"{took:.1f}s: asked one after another (6 s), not at once (2 s)"


def test_a_hung_bot_api_never_stops_the_bridge_reading_events(fake, running_bridge):
    bridge, root = running_bridge
    node = FakeNodeEvents(root / "echo")
    try:
        publish_until_seen(fake, node, "echo: 🟢 up", "transition", source="BUILT", dest="RUNNING", trigger="run")
        fake.hang(True)
        for dest in ("HALTING", "STOPPED"):
            node.publish("transition", source="RUNNING", dest=dest, trigger="halt", actor="signal:SIGTERM")
        for i in range(5):
            node.publish("component_state", component=f"Strategy-{i}", source="RUNNING", dest="FAULTED")
        deadline = time.monotonic() + 5
        while bridge.outbox.waiting() < 7 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert bridge.outbox.waiting() >= 7, "read and queued while every send hangs"
        fake.hang(False)
        fake.wait_for_text("Strategy-4")
        said = fake.texts()
        halting = said.index("echo: 🟠 HALTING: stop asked by signal:SIGTERM (positions=None inflight=None open=None)")
        assert said[halting + 1:halting + 7] == ["echo: ✅ flat and stopped cleanly (STOPPED)"] + [
            f"echo: 🔴 component Strategy-{i} RUNNING -> FAULTED" for i in range(5)], "all of it, in order"
    finally:
        node.close()


def test_a_bridge_with_no_nodes_yet_waits_without_spinning(running_bridge):
    started_cpu, started = time.process_time(), time.monotonic()
    time.sleep(1.0)
    assert time.process_time() - started_cpu < 0.3 * (time.monotonic() - started)


def test_a_token_the_bot_api_refuses_ends_the_bridge_with_one_line_and_exit_2(tmp_path, fake, capsys):
    config = bridge_config(tmp_path, fake.url, tmp_path / "nodes")
    (tmp_path / "telegram.token").write_text("999:revoked\n")
    assert main(["--config", str(config)]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == ("nsup-telegram: the Bot API refused the token (getUpdates: HTTP 401 Unauthorized): check "
                    "token_file, or ask @BotFather for a new one")


def test_updates_of_odd_shapes_never_end_the_reading(fake, running_bridge):
    with fake._cv:  # what a fake's `say` would never send
        fake._updates += [{"update_id": 1, "message": {"text": ["/stop", "x"], "from": {"id": 42}}},
                          {"update_id": 2, "edited_message": {}}, {"update_id": 3, "message": None}]
    fake.say(42, "/help")
    assert fake.wait_for_text("/approve NONCE").startswith("/status [NODE]")
