"""The control client's own parts: the standard-library ZMTP DEALER against real pyzmq sockets, and
the reply reader against what nsup's encoder writes. (tests/e2e/test_control_client.py puts it in
front of a real nsup, for every command.)"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import msgspec
import pytest
import zmq
from hypothesis import given
from hypothesis import strategies as st

from supervisor.control import protocol as c
from supervisor.control.client import client
from supervisor.control.client.client import ControlClient, NotReachable, ProtocolViolation, read_reply
from supervisor.control.client.zmtp import ZmtpDealer, ZmtpError

WAIT = 5.0  # generous deadlines: these tests check what happens, never how fast


def deadline(secs: float = WAIT) -> float:
    return time.monotonic() + secs


@pytest.fixture
def sock_dir():
    with tempfile.TemporaryDirectory(prefix="zmtp-") as directory:  # short: unix socket paths are limited
        yield Path(directory)


class Router:
    """A real pyzmq socket bound at a unix socket, answering in a thread: `answer(frames)` -> frames."""

    def __init__(self, path: Path, answer, socket_type: int = zmq.ROUTER, curve: bool = False):
        self.socket = zmq.Context.instance().socket(socket_type)
        self.socket.setsockopt(zmq.LINGER, 0)
        if curve:
            public, secret = zmq.curve_keypair()
            self.socket.curve_publickey, self.socket.curve_secretkey, self.socket.curve_server = public, secret, True
        self.socket.bind(f"ipc://{path}")
        self.received: list[list[bytes]] = []
        self._answer = answer
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            if self.socket.poll(20):
                frames = self.socket.recv_multipart()
                self.received.append(frames)
                reply = self._answer(frames)
                if reply is not None:
                    self.socket.send_multipart(reply)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.socket.close()


def echo(frames):
    identity, *body = frames
    return [identity, *body]


@pytest.mark.parametrize("size", [0, 1, 255, 256, 70_000])
def test_a_request_reaches_a_pyzmq_router_and_its_reply_comes_back(sock_dir, size):
    """Short frames (a 1-octet size) and long ones (8 octets) both ways."""
    router = Router(sock_dir / "r.sock", echo)
    dealer = ZmtpDealer(str(sock_dir / "r.sock"))
    try:
        body = bytes(range(256)) * (size // 256) + bytes(size % 256)
        dealer.send(body, deadline())
        assert dealer.recv(deadline()) == [body]
        identity, received = router.received[0]
        assert received == body and identity  # the ROUTER named us itself
    finally:
        dealer.close()
        router.close()


def test_many_requests_on_one_connection_and_a_reply_of_several_frames(sock_dir):
    router = Router(sock_dir / "r.sock", lambda frames: [frames[0], b"one", b"", b"three"])
    dealer = ZmtpDealer(str(sock_dir / "r.sock"))
    try:
        for i in range(20):
            dealer.send(f"request {i}".encode(), deadline())
            assert dealer.recv(deadline()) == [b"one", b"", b"three"]
        assert len({frames[0] for frames in router.received}) == 1  # one connection, one identity
    finally:
        dealer.close()
        router.close()


def test_no_reply_by_the_deadline_is_none_and_the_late_reply_is_read_next(sock_dir):
    release = threading.Event()

    def late(frames):
        release.wait(WAIT)
        return echo(frames)

    router = Router(sock_dir / "r.sock", late)
    dealer = ZmtpDealer(str(sock_dir / "r.sock"))
    try:
        dealer.send(b"first", deadline())
        assert dealer.recv(time.monotonic() + 0.05) is None
        release.set()
        assert dealer.recv(deadline()) == [b"first"]
    finally:
        dealer.close()
        router.close()


def test_a_dealer_may_talk_to_a_dealer_but_not_to_a_pub(sock_dir):
    peer = zmq.Context.instance().socket(zmq.PUB)
    peer.bind(f"ipc://{sock_dir / 'pub.sock'}")
    dealer = ZmtpDealer(str(sock_dir / "pub.sock"))
    try:
        with pytest.raises(ZmtpError, match="PUB"):
            dealer.send(b"hello", deadline())
    finally:
        dealer.close()
        peer.close(linger=0)


def test_a_curve_server_does_not_talk_to_it(sock_dir):
    """libzmq hangs up on a mechanism it was not configured for, often before its greeting has named
    its own; if the greeting gets through, the client names the mechanism."""
    router = Router(sock_dir / "c.sock", echo, curve=True)
    dealer = ZmtpDealer(str(sock_dir / "c.sock"))
    try:
        with pytest.raises((ZmtpError, ConnectionResetError), match="CURVE|closed the connection"):
            dealer.send(b"hello", deadline())
    finally:
        dealer.close()
        router.close()


def test_no_socket_file_and_nobody_listening_are_os_errors(sock_dir):
    with pytest.raises(FileNotFoundError):
        ZmtpDealer(str(sock_dir / "missing.sock")).send(b"x", deadline())
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(sock_dir / "stale.sock"))  # the file of a socket nobody listens on, as a crash leaves it
    stale.close()
    with pytest.raises(ConnectionRefusedError):
        ZmtpDealer(str(sock_dir / "stale.sock")).send(b"x", deadline())


def raw_peer(path: Path, says: bytes) -> threading.Thread:
    """A unix socket server that answers the first connection with `says`, and reads until the client
    hangs up."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)

    def serve():
        connection, _ = server.accept()
        connection.sendall(says)
        while connection.recv(1024):
            pass
        connection.close()
        server.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


GREETING_NULL = b"\xff" + bytes(8) + b"\x7f\x03\x01" + b"NULL".ljust(20, b"\x00") + bytes(32)


@pytest.mark.parametrize(("says", "complaint"), [
    (b"HTTP/1.1 400 Bad Request\r\n" + bytes(64), "does not speak ZMTP"),
    (b"\xff" + bytes(8) + b"\x7f\x02\x00" + bytes(52), "ZMTP 2.0"),
    (GREETING_NULL + b"\x04\x0b\x05ERROR\x04nope", "refused: nope"),
    (GREETING_NULL + b"\x00\x05hello", "did not answer the handshake with READY"),
    (GREETING_NULL + b"\x04\x06\x05READY", "is a \\? socket"),
    (GREETING_NULL + b"\x04\x0a\x05READY\x03abc", "malformed READY property"),
    (GREETING_NULL + b"\xf0\x00", "reserved flags"),
])
def test_a_peer_that_breaks_zmtp_is_a_zmtp_error(sock_dir, says, complaint):
    thread = raw_peer(sock_dir / "p.sock", says)
    dealer = ZmtpDealer(str(sock_dir / "p.sock"))
    try:
        with pytest.raises(ZmtpError, match=complaint):
            dealer.send(b"hello", deadline())
    finally:
        dealer.close()
        thread.join(WAIT)


def test_a_peer_that_hangs_up_is_a_connection_reset_and_the_next_send_reconnects(sock_dir):
    router = Router(sock_dir / "r.sock", lambda frames: None)
    dealer = ZmtpDealer(str(sock_dir / "r.sock"))
    try:
        dealer.send(b"first", deadline())
        router.close()  # nsup went away with our request unanswered
        with pytest.raises(ConnectionResetError):
            dealer.recv(deadline())
        router = Router(sock_dir / "r.sock", echo)  # a new nsup on the same path
        dealer.send(b"second", deadline())
        assert dealer.recv(deadline()) == [b"second"]
    finally:
        dealer.close()
        router.close()


# The reply reader --------------------------------------------------------------------------------


def test_the_client_speaks_the_protocol_version_and_reads_the_reply_fields_of_control_protocol():
    assert client.CONTROL_VERSION == c.CONTROL_VERSION
    assert client.Reply._fields == c.Reply.__struct_fields__


replies = st.one_of(
    st.builds(c.ok, st.text(max_size=20), data=st.dictionaries(st.text(max_size=10), st.integers(-(2**63), 2**63 - 1) | st.text() | st.none())),
    st.builds(c.error, st.text(max_size=20), st.sampled_from(list(c.Errno)), st.text()),
)


@given(replies)
def test_every_reply_nsup_encodes_is_read_as_it_was_sent(reply):
    read = read_reply([c.encode(reply)])
    assert msgspec.structs.asdict(reply) == read._asdict()


@pytest.mark.parametrize(("frames", "complaint"), [
    ([b"{}", b"{}"], "2 frames"),
    ([b"not json"], "unreadable"),
    ([b"\xff\xfe"], "unreadable"),
    ([b"[1, 2]"], "not a JSON object"),
    ([b'{"v": 1, "status": "ok"}'], "no id"),
    ([b'{"v": "1", "id": "x", "status": "ok"}'], "v of type str"),
    ([b'{"v": true, "id": "x", "status": "ok"}'], "v of type bool"),
    ([b'{"v": 1, "id": "x", "status": "ok", "data": [1]}'], "data of type list"),
    ([b'{"v": 1, "id": "x", "status": "error", "errno": 1.5}'], "errno of type float"),
])
def test_a_reply_nsup_would_never_give_is_a_protocol_violation(frames, complaint):
    with pytest.raises(ProtocolViolation, match=complaint):
        read_reply(frames)


def test_unknown_reply_fields_are_ignored_as_the_server_side_would():
    assert read_reply([b'{"v": 1, "id": "x", "status": "ok", "later": 2}']) == client.Reply(1, "x", "ok")


def test_a_client_on_a_missing_socket_is_not_reachable(sock_dir):
    with pytest.raises(NotReachable, match="does not exist"):
        ControlClient(f"ipc://{sock_dir / 'gone.sock'}")


def test_nsupctl_loads_neither_pyzmq_nor_msgspec_nor_asyncio():
    """What `nsupctl status` imports is what it costs to start: none of these is needed for it
    (typing and dataclasses, with inspect, are some 15 ms each on a 2-core machine)."""
    code = "import json, sys, supervisor.control.client.nsupctl; print(json.dumps(sorted(sys.modules)))"
    loaded = set(json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout))
    heavy = {"zmq", "msgspec", "asyncio", "ssl", "loguru", "typing", "dataclasses", "inspect", "supervisor.journal",
             "supervisor.daemon"}
    assert heavy & loaded == set()
