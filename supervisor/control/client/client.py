"""A control client: one request, one reply, with a timeout; and the event stream.

nsupctl uses it, and so may any script: `ControlClient.from_state_dir(d).call("status")`.
"""

from __future__ import annotations

import getpass
import itertools
import json
import os
import socket as net
from pathlib import Path

import msgspec
import zmq
import zmq.auth

from supervisor.control import protocol as c

ENDPOINTS_FILE = "endpoints.json"


class NotReachable(RuntimeError):
    pass


class CurveKeys:
    """What a tcp client needs: the server's public key file and its own key_secret file."""

    def __init__(self, server_public: Path, client_secret: Path):
        self.server_public, _ = zmq.auth.load_certificate(server_public)
        self.client_public, self.client_secret = zmq.auth.load_certificate(client_secret)
        if self.client_secret is None:
            raise ValueError(f"{client_secret} holds no secret key (use the .key_secret file)")

    def apply(self, socket: zmq.Socket) -> None:
        socket.curve_serverkey = self.server_public
        socket.curve_publickey = self.client_public
        socket.curve_secretkey = self.client_secret


class ProtocolViolation(RuntimeError):
    """An answer nsup should never give."""


def endpoints_in(state_dir: Path) -> dict:
    """The sockets of the nsup that runs on this state dir, as it wrote them at start."""
    path = state_dir / ENDPOINTS_FILE
    try:
        endpoints = json.loads(path.read_text())
        if not (endpoints["control"] and endpoints["events"]):
            raise ValueError("no endpoints listed")
        return endpoints
    except FileNotFoundError:
        raise NotReachable(f"no nsup is running on {state_dir} (no {ENDPOINTS_FILE})") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise NotReachable(f"{path} is damaged ({type(exc).__name__}: {exc}); is nsup running?") from None


class ControlClient:
    def __init__(self, endpoint: str, timeout_secs: float = 5.0, curve: CurveKeys | None = None):
        self.endpoint = endpoint
        self._timeout_ms = int(timeout_secs * 1000)
        self._curve = curve
        self._ids = itertools.count(1)
        self._actor = {"user": getpass.getuser(), "host": net.gethostname()}
        self._prefix = f"{os.getpid()}-"
        self._socket = self._connect(zmq.DEALER, endpoint)

    @classmethod
    def from_state_dir(cls, state_dir: Path, timeout_secs: float = 5.0) -> ControlClient:
        return cls(endpoints_in(state_dir)["control"][0], timeout_secs)

    def call(self, command: str, timeout_secs: float | None = None, **fields) -> c.Reply:
        request_id = f"{self._prefix}{next(self._ids)}"
        request = {"v": c.CONTROL_VERSION, "id": request_id, "command": command, "actor": self._actor, **fields}
        timeout_ms = int(timeout_secs * 1000) if timeout_secs else self._timeout_ms
        self._socket.send(json.dumps(request).encode())
        while self._socket.poll(timeout_ms):
            try:
                reply = c.decode_reply(self._socket.recv())
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                raise ProtocolViolation(f"unreadable reply from {self.endpoint}: {exc}") from None
            if reply.id in (request_id, ""):
                return reply
        raise NotReachable(f"no reply from {self.endpoint} within {timeout_ms / 1000:g}s")

    def subscribe(self, endpoint: str, topics: tuple[str, ...] = ("",)) -> zmq.Socket:
        socket = self._connect(zmq.SUB, endpoint)
        for topic in topics:
            socket.setsockopt(zmq.SUBSCRIBE, topic.encode())
        return socket

    def close(self) -> None:
        self._socket.close(linger=0)

    def _connect(self, socket_type: int, endpoint: str) -> zmq.Socket:
        if endpoint.startswith("ipc://") and not Path(endpoint.removeprefix("ipc://")).exists():
            raise NotReachable(f"{endpoint} does not exist: is nsup running?")
        socket = zmq.Context.instance().socket(socket_type)
        socket.setsockopt(zmq.LINGER, 0)
        if self._curve is not None:
            self._curve.apply(socket)
        try:
            socket.connect(endpoint)
        except zmq.ZMQError as exc:
            socket.close()
            raise ValueError(f"cannot use endpoint {endpoint!r}: {exc}") from None
        return socket
