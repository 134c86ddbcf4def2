"""The control client's standard-library ZMTP DEALER in front of a real nsup, for every request of the
control protocol; where a request changes nothing, pyzmq's DEALER is asked too and must hear the same."""

from __future__ import annotations

import json

import pytest
import zmq

from supervisor.control import protocol as c
from supervisor.control.client.client import ControlClient, NotReachable, endpoints_in
from supervisor.control.client.zmtp import ZmtpDealer

pytestmark = pytest.mark.e2e

ALWAYS_IN = {"hold_secs": 3600.0, "flat_secs": 0.0}


def ask_with_pyzmq(endpoint: str, request: dict) -> dict:
    socket = zmq.Context.instance().socket(zmq.DEALER)
    socket.setsockopt(zmq.LINGER, 0)
    socket.connect(endpoint)
    try:
        socket.send(json.dumps(request).encode())
        assert socket.poll(10_000), "pyzmq's DEALER got no answer"
        return json.loads(socket.recv())
    finally:
        socket.close()


def test_every_request_over_the_standard_library_client(nsup_run):
    run = nsup_run(ALWAYS_IN)
    run.wait_for_state("RUNNING")
    run.wait_for_positions(2)
    endpoint = endpoints_in(run.state_dir)["control"][0]
    client = ControlClient(endpoint, timeout_secs=30.0)
    assert isinstance(client._dealer, ZmtpDealer)  # ipc without CURVE: no pyzmq on this side
    asked = set()

    def ask(command: str, **fields):
        asked.add(command)
        return client.call(command, **fields)

    try:
        status = ask("status")
        assert status.status == "ok" and status.data["state"] == "RUNNING" and status.data["positions_open"] == 2
        version = ask("version")
        assert version.status == "ok" and version.data["control_protocol"] == c.CONTROL_VERSION
        assert ask("pause").data["trading_state"] == "REDUCING"
        assert ask("resume").data["trading_state"] == "ACTIVE"
        restart = ask("restart")  # two positions open: refused at once, nothing changed
        assert (restart.status, restart.errno) == ("error", c.Errno.REFUSED) and "only when flat" in restart.reason
        for command in ("abort", "recover"):
            begin = ask(command)
            assert (begin.status, begin.errno) == ("error", c.Errno.REFUSED)
            confirm = ask(f"{command}_confirm", nonce="feedfacefeedface", confirmation="DEMO-001", reason="test")
            assert (confirm.status, confirm.errno) == ("error", c.Errno.REFUSED)
        assert "counts" in ask("flatten").data
        on_record = ask("refused", asked="/stop alpha", reason="telegram user 99 is not allow-listed")
        assert (on_record.status, on_record.errno) == ("error", c.Errno.REFUSED)
        assert on_record.reason == "asked '/stop alpha': telegram user 99 is not allow-listed"

        # What changes nothing is answered alike to pyzmq's DEALER.
        for command, fields in (("status", {}), ("version", {}), ("abort", {}), ("recover", {})):
            request = {"v": c.CONTROL_VERSION, "id": "same", "command": command,
                       "actor": {"user": "test", "host": "here"}, **fields}
            ours, theirs = client.call(command, **fields), ask_with_pyzmq(endpoint, request)
            assert (ours.status, ours.errno, sorted(ours.data or {})) == \
                (theirs["status"], theirs.get("errno"), sorted(theirs.get("data") or {})), command

        bad = client.call("frobnicate")
        assert (bad.status, bad.errno) == ("error", c.Errno.UNKNOWN_COMMAND)
        incomplete = client.call("abort_confirm", nonce="feedfacefeedface")  # no confirmation, no reason
        assert (incomplete.status, incomplete.errno) == ("error", c.Errno.BAD_REQUEST)
        # A request in a long frame (over 255 octets) is read too; a reason past nsup's 1000 characters
        # is a bad request, one within it reaches the challenge (and its unknown nonce is refused).
        long_reason = client.call("abort_confirm", nonce="f" * 16, confirmation="DEMO-001", reason="x" * 900)
        assert long_reason.errno == c.Errno.REFUSED, long_reason.reason
        too_long = client.call("abort_confirm", nonce="f" * 16, confirmation="DEMO-001", reason="x" * 5000)
        assert too_long.errno == c.Errno.BAD_REQUEST and "1000" in too_long.reason

        stop = ask("stop")
        assert stop.status == "ok" and stop.data["result"] == "graceful stop requested"
        assert asked == set(c.COMMANDS)
        assert run.exit_code() == 0
        with pytest.raises(NotReachable):
            client.call("status")
    finally:
        client.close()
