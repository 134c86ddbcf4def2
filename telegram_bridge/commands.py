"""An operator's Telegram message, read as what it asks of a node: pure, no I/O (operator.py acts).

    /status [NODE]                      every node in one line each, or one node in full
    /pause NODE  /resume NODE  /flatten NODE  /stop NODE
    /abort NODE  /recover NODE          answered with nsup's challenge: the positions and a nonce
    /approve NONCE TRADER_ID REASON...  the answer to a challenge
    /help
"""

from __future__ import annotations

import msgspec

CONTROLS = ("pause", "resume", "flatten", "stop")  # one request, one answer
CHALLENGED = ("abort", "recover")  # the challenge first, then /approve

HELP = "\n".join([
    "/status [NODE]: every node, or one in full",
    "/pause NODE, /resume NODE, /flatten NODE, /stop NODE",
    "/abort NODE, /recover NODE: shows the positions and a challenge nonce",
    "/approve NONCE TRADER_ID REASON: approves that challenge (nsup puts it on record)",
])


class Help(msgspec.Struct, frozen=True, tag=True): ...


class Status(msgspec.Struct, frozen=True, tag=True):
    node: str | None


class Control(msgspec.Struct, frozen=True, tag=True):
    action: str  # one of CONTROLS
    node: str


class Challenge(msgspec.Struct, frozen=True, tag=True):
    action: str  # one of CHALLENGED
    node: str


class Approve(msgspec.Struct, frozen=True, tag=True):
    nonce: str
    confirmation: str  # the trader id, typed
    reason: str


class Unusable(msgspec.Struct, frozen=True, tag=True):
    reason: str  # said back to the operator


Asked = Help | Status | Control | Challenge | Approve | Unusable


def parse(text: str) -> Asked | None:
    """What the message asks, or None if it is not a command (chat among people is left alone)."""
    words = text.split()
    if not words or not words[0].startswith("/"):
        return None
    command, args = words[0][1:].split("@", 1)[0].lower(), words[1:]  # /stop@MyNsupBot in a group
    if command in ("help", "start"):
        return Help()
    if command == "status":
        return Status(args[0]) if len(args) == 1 else Status(None) if not args else Unusable("usage: /status [NODE]")
    if command in CONTROLS or command in CHALLENGED:
        if len(args) != 1:
            return Unusable(f"usage: /{command} NODE")
        return Control(command, args[0]) if command in CONTROLS else Challenge(command, args[0])
    if command == "approve":
        if len(args) < 3:
            return Unusable("usage: /approve NONCE TRADER_ID REASON (the reason goes on record)")
        return Approve(args[0], args[1], " ".join(args[2:]))
    return Unusable(f"unknown command /{command}\n{HELP}")
