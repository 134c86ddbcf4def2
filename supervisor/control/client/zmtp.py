"""A ZeroMQ DEALER over a unix socket, in the standard library: how a local client asks nsup without
importing pyzmq (pyzmq alone is most of a pyzmq client's start-up; a `nsupctl status` pays it whole).

It speaks ZeroMQ's wire protocol, ZMTP 3.0 (RFC 23, https://rfc.zeromq.org/spec/23/), with the NULL
security mechanism: no encryption and no authentication, which is what nsup's ipc sockets are (the
socket file's mode decides who may connect). CURVE over TCP and the event stream (SUB) stay with
pyzmq (client.py). What this side of the conversation is, octet by octet:

    greeting   64 octets each way: signature %xFF, 8 x %x00, %x7F; version %x03 %x00 (a newer peer
               falls back to 3.0); mechanism "NULL", padded with %x00 to 20 octets; as-server %x00;
               31 octets of filler %x00.
    handshake  one READY command each way. A command is a frame with the COMMAND flag whose body is
               the name's length (1 octet) and name, then properties: name length (1 octet), name,
               value length (4 octets, network order), value. We say Socket-Type DEALER and an empty
               Identity (the ROUTER makes one up); the peer must be a ROUTER, DEALER or REP. A peer
               that refuses us sends an ERROR command: its reason's length (1 octet) and reason.
    traffic    frames: flags (%x01 MORE, %x02 LONG, %x04 COMMAND; the others are reserved, zero), the
               body's size (1 octet, or 8 in network order with LONG), the body. A message is frames
               up to one without MORE. A DEALER sends a request as a message of one frame and gets
               the reply as one: the ROUTER itself adds and removes the frame naming the client.

Socket errors are OSError (FileNotFoundError, ConnectionRefusedError, PermissionError; a peer that
hangs up mid-conversation is ConnectionResetError); a peer that breaks the protocol is ZmtpError.
"""

from __future__ import annotations

import socket
import time

MORE, LONG, COMMAND = 0x01, 0x02, 0x04
GREETING = b"\xff" + bytes(8) + b"\x7f" + b"\x03\x00" + b"NULL".ljust(20, b"\x00") + b"\x00" + bytes(31)
PEERS_OF_A_DEALER = (b"ROUTER", b"DEALER", b"REP")
MAX_FRAME_BYTES = 64 * 1024 * 1024  # far above any answer nsup gives: a peer that announces more is not nsup


class ZmtpError(Exception):
    """The peer broke ZMTP, or refused the handshake."""


class ZmtpDealer:
    """One connection to a ROUTER bound at a unix socket `path`, made at the first send (and again
    after the peer hung up). Each call takes a deadline on time.monotonic()'s clock."""

    def __init__(self, path: str):
        self.path = path
        self._socket: socket.socket | None = None
        self._buffer = bytearray()  # what was read and not yet taken: a timeout never splits a frame

    def send(self, body: bytes, deadline: float) -> None:
        """One message of one frame."""
        if self._socket is None:
            self._connect(deadline)
        self._send_frame(0, body, deadline)

    def recv(self, deadline: float) -> list[bytes] | None:
        """The next message's frames, or None if none came by the deadline."""
        if self._socket is None:
            raise ConnectionResetError("not connected: nothing was sent")
        frames = []
        try:
            while True:
                flags, body = self._frame(deadline)
                if flags & COMMAND:
                    _command(body)  # after the handshake only a PING could come, and an ERROR raises
                    continue
                frames.append(body)
                if not flags & MORE:
                    return frames
        except TimeoutError:
            if frames:  # part of a message: the rest would be read as the next one
                self.close()
            return None

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
        self._socket = None
        self._buffer.clear()

    def _connect(self, deadline: float) -> None:
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._socket.settimeout(_remaining(deadline))
            self._socket.connect(self.path)
            self._socket.sendall(GREETING)
            greeting = self._take(64, deadline)
            if greeting[0] != 0xFF or greeting[9] != 0x7F:
                raise ZmtpError("the peer does not speak ZMTP (no ZMTP signature in its greeting)")
            if greeting[10] < 3:
                raise ZmtpError(f"the peer speaks ZMTP {greeting[10]}.{greeting[11]}; this client speaks 3.0")
            if greeting[12:32].rstrip(b"\x00") != b"NULL":
                mechanism = greeting[12:32].rstrip(b"\x00").decode(errors="replace")
                raise ZmtpError(f"the peer wants the {mechanism} security mechanism; this client has only NULL")
            self._send_frame(COMMAND, _ready({b"Socket-Type": b"DEALER", b"Identity": b""}), deadline)
            flags, body = self._frame(deadline)
            name, properties = _command(body) if flags & COMMAND else (None, {})
            if name != b"READY":
                raise ZmtpError("the peer did not answer the handshake with READY")
            if properties.get(b"Socket-Type") not in PEERS_OF_A_DEALER:
                raise ZmtpError(f"the peer is a {properties.get(b'Socket-Type', b'?').decode(errors='replace')} "
                                "socket, which a DEALER cannot talk to")
        except BaseException:
            self.close()
            raise

    def _send_frame(self, flags: int, body: bytes, deadline: float) -> None:
        size = len(body).to_bytes(1, "big") if len(body) < 256 else len(body).to_bytes(8, "big")
        self._socket.settimeout(_remaining(deadline))
        try:
            self._socket.sendall(bytes([flags | (LONG if len(size) == 8 else 0)]) + size + body)
        except OSError:
            self.close()  # how much went out is unknown: the next message starts on a new connection
            raise

    def _frame(self, deadline: float) -> tuple[int, bytes]:
        """The next frame's flags and body; the buffer keeps a frame that is not all in yet."""
        head = self._peek(2, deadline)
        flags = head[0]
        if flags & ~(MORE | LONG | COMMAND):
            raise ZmtpError(f"a frame with reserved flags set ({flags:#04x})")
        if flags & LONG:
            head_size, size = 9, int.from_bytes(self._peek(9, deadline)[1:9], "big")
        else:
            head_size, size = 2, head[1]
        if size > MAX_FRAME_BYTES:
            raise ZmtpError(f"the peer announces a frame of {size} bytes")
        return flags, self._take(head_size + size, deadline)[head_size:]

    def _peek(self, count: int, deadline: float) -> bytes:
        while len(self._buffer) < count:
            self._socket.settimeout(_remaining(deadline))
            chunk = self._socket.recv(max(65536, count - len(self._buffer)))
            if not chunk:
                self.close()
                raise ConnectionResetError("the peer closed the connection")
            self._buffer += chunk
        return bytes(self._buffer[:count])

    def _take(self, count: int, deadline: float) -> bytes:
        taken = self._peek(count, deadline)
        del self._buffer[:count]
        return taken


def _remaining(deadline: float) -> float:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError("timed out")
    return remaining


def _ready(properties: dict[bytes, bytes]) -> bytes:
    body = b"\x05READY"
    for name, value in properties.items():
        body += len(name).to_bytes(1, "big") + name + len(value).to_bytes(4, "big") + value
    return body


def _command(body: bytes) -> tuple[bytes, dict[bytes, bytes]]:
    """A command's name and properties; an ERROR raises ZmtpError with its reason."""
    if not body or len(body) < 1 + body[0]:
        raise ZmtpError("a malformed command")
    name, rest = body[1:1 + body[0]], body[1 + body[0]:]
    if name == b"ERROR":
        reason = rest[1:1 + rest[0]].decode(errors="replace") if rest else ""
        raise ZmtpError(f"the peer refused: {reason or 'no reason given'}")
    properties = {}
    while name == b"READY" and rest:
        key_end = 1 + rest[0]
        if len(rest) < key_end + 4:
            raise ZmtpError("a malformed READY property")
        value_end = key_end + 4 + int.from_bytes(rest[key_end:key_end + 4], "big")
        if len(rest) < value_end:
            raise ZmtpError("a malformed READY property")
        properties[rest[1:key_end]] = rest[key_end + 4:value_end]
        rest = rest[value_end:]
    return name, properties
