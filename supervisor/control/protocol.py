"""The control protocol between nsupctl (or any client) and nsup, in one screen.

In the manner of circus: a request is one JSON object naming its `command`, with a protocol version
`v`, a request `id` the reply repeats, the `actor` (who asks, from where) and the command's own
fields. A reply is {"v", "id", "status": "ok", "data": {...}} or {"v", "id", "status": "error",
"reason": "...", "errno": N}. Events on the PUB socket are two frames: the topic (the record's kind)
and the JSON record.
"""

from __future__ import annotations

import enum
from typing import Annotated, Any

import msgspec

CONTROL_VERSION = 1
MAX_REQUEST_BYTES = 32 * 1024  # larger is answered with an error (the fields' limits fit, \u-escaped or not)
MAX_FRAME_BYTES = 1024 * 1024  # larger is never read: the peer is disconnected

# Every field has a limit, checked when the request is read, before anything is journaled: what a
# client can put on record is bounded (a request past one is answered BAD_REQUEST).
Id = Annotated[str, msgspec.Meta(max_length=64)]
User = Annotated[str, msgspec.Meta(max_length=64)]
Host = Annotated[str, msgspec.Meta(max_length=255)]  # a DNS name's longest
Nonce = Annotated[str, msgspec.Meta(max_length=64)]
Confirmation = Annotated[str, msgspec.Meta(max_length=128)]  # a trader id, typed
Reason = Annotated[str, msgspec.Meta(max_length=1000)]
Asked = Annotated[str, msgspec.Meta(max_length=200)]  # what a front end was asked, quoted


class Errno(enum.IntEnum):
    BAD_REQUEST = 1  # not JSON, not an object, a field missing or of the wrong type
    UNKNOWN_COMMAND = 2
    VERSION = 3  # a protocol version this nsup does not speak
    REFUSED = 4  # valid, but not now: the reason says why
    BAD_CHALLENGE = 5  # an abort nonce that is unknown, stale, used, or answered wrongly
    WORKER = 6  # the worker did not answer or could not do it
    BUSY = 7  # too many requests in flight
    INTERNAL = 8  # a bug of nsup's: on record in the journal


class Actor(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    user: User
    host: Host


class _Request(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True, tag_field="command"):
    v: int
    id: Id
    actor: Actor


class Status(_Request, tag="status"): ...
class Version(_Request, tag="version"): ...
class Pause(_Request, tag="pause"): ...           # REDUCING: no new entries; stays RUNNING
class Resume(_Request, tag="resume"): ...         # ACTIVE again; from HALTING it cancels the shutdown
class Flatten(_Request, tag="flatten"): ...       # market_exit on every strategy, without stopping
class Stop(_Request, tag="stop"): ...             # the graceful stop
class Restart(_Request, tag="restart"): ...       # a new worker, only when flat
class AbortBegin(_Request, tag="abort"): ...      # answered with a challenge: nonce and positions
class RecoverBegin(_Request, tag="recover"): ...  # the same, to kill a hung worker for a replacement


class _Confirm(_Request):
    nonce: Nonce
    confirmation: Confirmation  # the trader id, typed by the operator
    reason: Reason


class AbortConfirm(_Confirm, tag="abort_confirm"): ...
class RecoverConfirm(_Confirm, tag="recover_confirm"): ...


class Refused(_Request, tag="refused"):  # a front end refused someone on nsup's behalf: on record, changes nothing
    asked: Asked
    reason: Reason


Request = (Status | Version | Pause | Resume | Flatten | Stop | Restart | AbortBegin | AbortConfirm | RecoverBegin
           | RecoverConfirm | Refused)
COMMANDS = tuple(c.__struct_config__.tag for c in Request.__args__)


class Reply(msgspec.Struct, frozen=True, omit_defaults=True):
    v: int
    id: str
    status: str  # "ok" | "error"
    data: dict[str, Any] | None = None
    reason: str | None = None
    errno: int | None = None


def ok(request_id: str, **data) -> Reply:
    return Reply(CONTROL_VERSION, request_id, "ok", data=data)


def error(request_id: str, errno: Errno, reason: str) -> Reply:
    return Reply(CONTROL_VERSION, request_id, "error", reason=reason, errno=int(errno))


_encoder = msgspec.json.Encoder()
_request_decoder = msgspec.json.Decoder(Request)
_reply_decoder = msgspec.json.Decoder(Reply)


class BadRequest(ValueError):
    def __init__(self, reason: str, errno: Errno, request_id: str = "", command: str = ""):
        super().__init__(reason)
        self.errno = errno
        self.request_id = request_id  # echoed when it could be read, so the client can match the error
        self.command = command  # the command it named, if it named one (at most 32 characters of it)


def encode(message) -> bytes:
    return _encoder.encode(message)


def decode_request(frame: bytes) -> Request:
    if len(frame) > MAX_REQUEST_BYTES:
        raise BadRequest(f"request of {len(frame)} bytes exceeds {MAX_REQUEST_BYTES}", Errno.BAD_REQUEST)
    try:
        raw = msgspec.json.decode(frame)
    except msgspec.DecodeError as exc:
        raise BadRequest(f"not JSON: {exc}", Errno.BAD_REQUEST) from None
    except RecursionError:
        raise BadRequest("JSON nested too deeply", Errno.BAD_REQUEST) from None
    request_id = raw.get("id")[:64] if isinstance(raw, dict) and isinstance(raw.get("id"), str) else ""
    command = raw.get("command")[:32] if isinstance(raw, dict) and isinstance(raw.get("command"), str) else ""
    if isinstance(raw, dict) and raw.get("v") != CONTROL_VERSION and "v" in raw:
        raise BadRequest(f"protocol version {str(raw['v'])[:16]!r} is not spoken here (this nsup speaks {CONTROL_VERSION})",
                         Errno.VERSION, request_id, command)
    if command and raw["command"] not in COMMANDS:
        raise BadRequest(f"unknown command {command!r}; known: {', '.join(COMMANDS)}", Errno.UNKNOWN_COMMAND, request_id,
                         command)
    try:
        return _request_decoder.decode(frame)
    except msgspec.ValidationError as exc:
        raise BadRequest(f"invalid request: {exc}", Errno.BAD_REQUEST, request_id, command) from None


def decode_reply(frame: bytes) -> Reply:
    return _reply_decoder.decode(frame)
