"""TCP control only with CURVE, and a control socket that no malformed input can move."""

from __future__ import annotations

import json
import random
import socket
import subprocess
import sys

import pytest
import zmq

from supervisor.control import protocol as c
from supervisor.control.commands.base import EXIT_OK, EXIT_UNREACHABLE
from tests.e2e.conftest import REPO

pytestmark = pytest.mark.e2e


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def nsupctl(*args: str, timeout: float = 30):
    return subprocess.run(
        [sys.executable, "-m", "supervisor.control.client.nsupctl", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


def test_tcp_answers_known_keys_only(nsup_run, tmp_path):
    keys, authorized = tmp_path / "keys", tmp_path / "authorized"
    for name in ("server", "desk", "stranger"):
        assert nsupctl("keygen", str(keys), "--name", name).returncode == EXIT_OK
    authorized.mkdir()
    (authorized / "desk.key").write_text((keys / "desk.key").read_text())
    port, events_port = free_port(), free_port()
    run = nsup_run({"hold_secs": 3600.0, "flat_secs": 0.0}, control={
        "tcp_endpoint": f"tcp://127.0.0.1:{port}", "events_tcp_endpoint": f"tcp://127.0.0.1:{events_port}",
        "curve_secret_key": str(keys / "server.key_secret"), "curve_authorized_keys": str(authorized),
    })
    run.wait_for_state("RUNNING")
    tcp = ["--endpoint", f"tcp://127.0.0.1:{port}", "--server-key", str(keys / "server.key"), "--timeout", "2"]

    desk = nsupctl(*tcp, "--client-key", str(keys / "desk.key_secret"), "--json", "status")
    assert desk.returncode == EXIT_OK, desk.stderr
    assert json.loads(desk.stdout)["state"] == "RUNNING"
    assert f"tcp://127.0.0.1:{events_port}" in json.loads(desk.stdout)["events_endpoints"]

    stranger = nsupctl(*tcp, "--client-key", str(keys / "stranger.key_secret"), "status")
    assert stranger.returncode == EXIT_UNREACHABLE

    plain = zmq.Context.instance().socket(zmq.DEALER)  # no CURVE at all
    plain.setsockopt(zmq.LINGER, 0)
    plain.connect(f"tcp://127.0.0.1:{port}")
    plain.send(json.dumps({"v": 1, "id": "p", "command": "stop", "actor": {"user": "x", "host": "y"}}).encode())
    assert not plain.poll(1500), "an unauthenticated client must get nothing"
    plain.close()
    assert run.records("command") == [] and run.transitions()[-1] == ("BUILT", "RUNNING")

    refused_plain = nsupctl("--endpoint", f"tcp://127.0.0.1:{port}", "status")
    assert refused_plain.returncode == 2 and "plain TCP" in refused_plain.stderr


def test_plain_tcp_is_refused_by_config(tmp_path):
    config = tmp_path / "nsup.toml"
    config.write_text(
        '[node]\nfactory = "node_worker.demo.node:demo_node"\n[supervisor]\n'
        f'state_dir = "{tmp_path}/s"\n[control]\ntcp_endpoint = "tcp://127.0.0.1:7400"\nevents_tcp_endpoint = "tcp://127.0.0.1:7401"\n'
    )
    result = subprocess.run([sys.executable, "-m", "supervisor", "run", "--config", str(config)], cwd=REPO,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "plain TCP is refused" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def malformed_messages(rng: random.Random, count: int):
    """Frames that are each certainly not a valid request: every one must be answered with an error."""
    actor = {"user": "fuzz", "host": "fuzz"}
    defects = [
        lambda m: m.pop("v"),
        lambda m: m.update(v=rng.choice([0, 2, "1", None, 1.5, [1]])),
        lambda m: m.update(command=rng.choice(["", "STOP", "stop ", "shutdown", "abort_now", "kill", "\u00e9"])),
        lambda m: m.update(command=rng.choice([1, None, [], {}])),
        lambda m: m.update(actor=rng.choice(["root", None, 7, {"user": "x"}, {"user": 1, "host": "h"}])),
        lambda m: m.update(id=rng.choice([None, 5, [], {}])),
        lambda m: m.update(unexpected=rng.random()),
        lambda m: m.pop("actor"),
    ]
    for i in range(count):
        kind = rng.random()
        if kind < 0.25:
            yield bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 300)))
        elif kind < 0.40:
            yield json.dumps(rng.choice([[], 1, "stop", None, [{"command": "stop"}], 3.5, True])).encode()
        else:
            message = {"v": 1, "id": f"f{i}", "command": rng.choice(c.COMMANDS), "actor": dict(actor)}
            rng.choice(defects)(message)
            yield json.dumps(message).encode()


def test_fuzzed_control_input_changes_nothing(nsup_run):
    run = nsup_run({"hold_secs": 3600.0, "flat_secs": 0.0})
    run.wait_for_state("RUNNING")
    endpoint = json.loads((run.state_dir / "endpoints.json").read_text())["control"][0]
    context = zmq.Context.instance()
    fuzzer = context.socket(zmq.DEALER)
    fuzzer.setsockopt(zmq.LINGER, 0)
    fuzzer.connect(endpoint)

    sent, replies = 0, []
    for frame in malformed_messages(random.Random(20261121), 3000):
        fuzzer.send(frame)
        sent += 1
        if sent % 200 == 0:  # read as we go: ZMQ drops replies past its high-water mark, by design
            while len(replies) < sent and fuzzer.poll(5000):
                replies.append(c.decode_reply(fuzzer.recv()))
    fuzzer.send_multipart([b"a", b"b"])  # two frames: not one request
    fuzzer.send(b"[" * 20_000)  # small, but nested deeper than any decoder will follow
    sent += 1
    while len(replies) < sent + 1 and fuzzer.poll(2000):
        replies.append(c.decode_reply(fuzzer.recv()))
    assert len(replies) == sent + 1, f"{len(replies)} replies to {sent + 1} malformed requests"
    assert all(r.status == "error" and r.errno in {e.value for e in c.Errno} and r.reason for r in replies)
    assert {r.errno for r in replies} >= {c.Errno.BAD_REQUEST, c.Errno.UNKNOWN_COMMAND, c.Errno.VERSION}

    fuzzer.send(b"{" + b" " * (c.MAX_REQUEST_BYTES + 10) + b"}")  # too large to read as a request: an error
    assert fuzzer.poll(5000)
    too_large = c.decode_reply(fuzzer.recv())
    assert too_large.status == "error" and "exceeds" in too_large.reason

    flood = context.socket(zmq.DEALER)  # too large to take in at all: disconnected unread
    flood.setsockopt(zmq.LINGER, 0)
    flood.connect(endpoint)
    flood.send(b"x" * (c.MAX_FRAME_BYTES + 1))
    assert not flood.poll(500)
    flood.close()

    fuzzer.send(json.dumps({"v": 1, "id": "alive", "command": "status", "actor": {"user": "u", "host": "h"}}).encode())
    assert fuzzer.poll(5000)
    alive = c.decode_reply(fuzzer.recv())
    assert alive.status == "ok" and alive.data["state"] == "RUNNING"
    fuzzer.close()
    assert run.transitions() == [("CREATED", "BUILT"), ("BUILT", "RUNNING")]
    assert run.records("command") == [] and run.records("worker_end") == []

    run.signal(15)
    assert run.exit_code() == 0
    assert run.transitions()[-1] == ("FLAT", "STOPPED")
