"""Where the control and event sockets listen, and who may speak to them.

ipc sockets live in the run dir with mode 0600 (0660 and the configured group, for a desk's
operators). TCP is only ever bound with CURVE: the server's key pair, and a directory of the public
keys of the clients allowed in; a client whose key is not there gets nothing, not even an error.
"""

from __future__ import annotations

import grp
import os
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.asyncio


@dataclass(frozen=True)
class Binding:
    endpoint: str
    curve_secret_key: Path | None = None  # the server's key_secret file, for tcp
    group: str | None = None  # for ipc

    @property
    def curve(self) -> bool:
        """tcp is only ever bound with CURVE: its clients are known by their keys."""
        return self.endpoint.startswith("tcp://")

    def bind(self, socket_type: int, max_message_bytes: int = -1) -> zmq.Socket:
        """A bound socket; asyncio for the ROUTER, plain (same context) for the PUB. A peer that
        sends more than `max_message_bytes` is disconnected unread (set before bind: ZMQ takes the
        listener's options at bind time)."""
        context = zmq.asyncio.Context.instance()
        if socket_type == zmq.PUB:
            context = zmq.Context.shadow(context.underlying)
        socket = context.socket(socket_type)
        socket.setsockopt(zmq.LINGER, 0)
        socket.setsockopt(zmq.MAXMSGSIZE, max_message_bytes)
        if self.endpoint.startswith("tcp://"):
            from zmq.auth import load_certificate  # CURVE only: an nsup without tcp does not load it

            public, secret = load_certificate(self.curve_secret_key)
            socket.curve_publickey, socket.curve_secretkey, socket.curve_server = public, secret, True
        ipc = self.endpoint.startswith("ipc://")
        # The umask makes the socket file private from its first instant: no window before the chmod.
        previous = os.umask(0o117 if self.group else 0o177) if ipc else None
        try:
            socket.bind(self.endpoint)
        finally:
            if previous is not None:
                os.umask(previous)
        if ipc:
            path = self.endpoint.removeprefix("ipc://")
            if self.group:
                os.chown(path, -1, grp.getgrnam(self.group).gr_gid)
            os.chmod(path, 0o660 if self.group else 0o600)
        return socket


def start_authenticator(authorized_keys: Path):
    """CURVE for every tcp socket of this process: only the clients whose public keys are listed."""
    from zmq.auth.asyncio import AsyncioAuthenticator

    authenticator = AsyncioAuthenticator(zmq.asyncio.Context.instance())
    authenticator.start()
    authenticator.configure_curve(domain="*", location=str(authorized_keys))
    return authenticator
