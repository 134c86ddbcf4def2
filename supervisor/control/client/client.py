"""A control client: one request, one reply, with a timeout; and the event stream.

nsupctl uses it, and so may any script: `ControlClient.from_state_dir(d).call("status")`.

Over ipc (nsup's own unix socket) it speaks ZeroMQ's wire protocol with the standard library
(zmtp.py); over TCP, which nsup only ever serves with CURVE, and for the event stream, it uses
pyzmq. Nothing here imports pyzmq or msgspec until it is needed, so that `nsupctl status` starts in
the time Python itself takes: requests are written and replies read with the standard library's json.
"""

from __future__ import annotations

import collections
import getpass
import itertools
import json
import os
import socket as net
import time
from pathlib import Path

from supervisor.control.client.zmtp import ZmtpDealer, ZmtpError

ENDPOINTS_FILE = "endpoints.json"
# The control protocol this client speaks: control/protocol.py's CONTROL_VERSION (a unit test holds
# the two equal; that module builds msgspec types, which a client does without).
CONTROL_VERSION = 1


class NotReachable(RuntimeError):
    pass


class ProtocolViolation(RuntimeError):
    """An answer nsup should never give."""


# An answer as nsup sends it: control/protocol.py's Reply, the same fields of the same types (status
# "ok" or "error"). A namedtuple, because dataclasses imports inspect: 15 ms of nsupctl's start.
_REPLY_FIELDS = {"v": int, "id": str, "status": str, "data": dict, "reason": str, "errno": int}
Reply = collections.namedtuple("Reply", list(_REPLY_FIELDS), defaults=[None, None, None])


def read_reply(frames: list[bytes]) -> Reply:
    """A reply message (one frame of JSON), or ProtocolViolation saying what is wrong with it."""
    if len(frames) != 1:
        raise ProtocolViolation(f"a reply of {len(frames)} frames (expected 1)")
    try:
        raw = json.loads(frames[0])
    except ValueError as exc:
        raise ProtocolViolation(f"an unreadable reply: {exc}") from None
    if not isinstance(raw, dict):
        raise ProtocolViolation(f"a reply that is not a JSON object: {frames[0][:100]!r}")
    fields = {name: raw[name] for name in _REPLY_FIELDS if raw.get(name) is not None}  # others are ignored
    problems = [f"no {name}" for name in ("v", "id", "status") if name not in fields]
    problems += [f"{name} of type {type(value).__name__}" for name, value in fields.items()
                 if not isinstance(value, _REPLY_FIELDS[name]) or (isinstance(value, bool) and _REPLY_FIELDS[name] is int)]
    if problems:
        raise ProtocolViolation(f"a reply with {', '.join(problems)}")
    return Reply(**fields)


class CurveKeys:
    """What a tcp client needs: the server's public key file and its own key_secret file."""

    def __init__(self, server_public: Path, client_secret: Path):
        import zmq.auth

        self.server_public, _ = zmq.auth.load_certificate(server_public)
        self.client_public, self.client_secret = zmq.auth.load_certificate(client_secret)
        if self.client_secret is None:
            raise ValueError(f"{client_secret} holds no secret key (use the .key_secret file)")

    def apply(self, socket) -> None:
        socket.curve_serverkey = self.server_public
        socket.curve_publickey = self.client_public
        socket.curve_secretkey = self.client_secret


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
    def __init__(self, endpoint: str, timeout_secs: float = 5.0, curve: CurveKeys | None = None,
                 user: str | None = None):
        """`user`: who asks, as nsup journals it (user@host); the login name unless a client speaks for
        someone else (the Telegram bridge: telegram:<user id>)."""
        self.endpoint = endpoint
        self._timeout_secs = timeout_secs
        self._curve = curve
        self._ids = itertools.count(1)
        self._actor = {"user": user or getpass.getuser(), "host": net.gethostname()}
        self._prefix = f"{os.getpid()}-"
        if endpoint.startswith("ipc://") and curve is None:
            self._dealer = ZmtpDealer(_ipc_path(endpoint))
        else:
            self._dealer = PyzmqDealer(_connect("DEALER", endpoint, curve))

    @classmethod
    def from_state_dir(cls, state_dir: Path, timeout_secs: float = 5.0, user: str | None = None) -> ControlClient:
        return cls(endpoints_in(state_dir)["control"][0], timeout_secs, user=user)

    def call(self, command: str, timeout_secs: float | None = None, **fields) -> Reply:
        request_id = f"{self._prefix}{next(self._ids)}"
        request = {"v": CONTROL_VERSION, "id": request_id, "command": command, "actor": self._actor, **fields}
        timeout = timeout_secs or self._timeout_secs
        deadline = time.monotonic() + timeout
        try:
            self._dealer.send(json.dumps(request).encode(), deadline)
            while (frames := self._dealer.recv(deadline)) is not None:
                reply = read_reply(frames)
                if reply.id in (request_id, ""):
                    return reply
        except ZmtpError as exc:
            raise ProtocolViolation(f"{self.endpoint}: {exc}") from None
        except TimeoutError:
            pass
        except PermissionError:
            raise NotReachable(f"{self.endpoint}: permission denied (the socket is nsup's user's, or its control "
                               "group's: see [control] group)") from None
        except OSError as exc:
            raise NotReachable(f"{self.endpoint}: {exc.strerror or exc}; is nsup running?") from None
        raise NotReachable(f"no reply from {self.endpoint} within {timeout:g}s")

    def subscribe(self, endpoint: str, topics: tuple[str, ...] = ("",)):
        """A pyzmq SUB socket on the event stream."""
        return subscribe(endpoint, topics, self._curve)

    def close(self) -> None:
        self._dealer.close()


def subscribe(endpoint: str, topics: tuple[str, ...] = ("",), curve: CurveKeys | None = None):
    """A pyzmq SUB socket on an nsup's event stream, for the topics (record kinds) given: "" is all."""
    import zmq

    socket = _connect("SUB", endpoint, curve)
    for topic in topics:
        socket.setsockopt(zmq.SUBSCRIBE, topic.encode())
    return socket


def _connect(socket_type: str, endpoint: str, curve: CurveKeys | None):
    import zmq

    if endpoint.startswith("ipc://"):
        _ipc_path(endpoint)
    socket = zmq.Context.instance().socket(getattr(zmq, socket_type))
    socket.setsockopt(zmq.LINGER, 0)
    if curve is not None:
        curve.apply(socket)
    try:
        socket.connect(endpoint)
    except zmq.ZMQError as exc:
        socket.close()
        raise ValueError(f"cannot use endpoint {endpoint!r}: {exc}") from None
    return socket


class PyzmqDealer:
    """The same two calls as ZmtpDealer, over a pyzmq DEALER (TCP with CURVE)."""

    def __init__(self, socket):
        self._socket = socket

    def send(self, body: bytes, deadline: float) -> None:
        self._socket.send(body)

    def recv(self, deadline: float) -> list[bytes] | None:
        if not self._socket.poll(max(0, int((deadline - time.monotonic()) * 1000))):
            return None
        return self._socket.recv_multipart()

    def close(self) -> None:
        self._socket.close(linger=0)


def _ipc_path(endpoint: str) -> str:
    path = endpoint.removeprefix("ipc://")
    if not Path(path).exists():
        raise NotReachable(f"{endpoint} does not exist: is nsup running?")
    return path
