"""Every operator command, one object each (the way circus has one module per command): find one by
its nsupctl name (`COMMANDS`) or by the request it answers (`for_request`)."""

from __future__ import annotations

from supervisor.control import protocol as c
from supervisor.control.commands.approval import AbortCommand, RecoverCommand
from supervisor.control.commands.base import Command, Context
from supervisor.control.commands.flatten import FlattenCommand
from supervisor.control.commands.pause import PauseCommand
from supervisor.control.commands.restart import RestartCommand
from supervisor.control.commands.resume import ResumeCommand
from supervisor.control.commands.status import StatusCommand
from supervisor.control.commands.stop import StopCommand
from supervisor.control.commands.version import VersionCommand

COMMANDS: dict[str, Command] = {command.name: command for command in (
    StatusCommand(), PauseCommand(), ResumeCommand(), FlattenCommand(), StopCommand(), RestartCommand(),
    AbortCommand(), RecoverCommand(), VersionCommand(),
)}
_BY_REQUEST = {request: command for command in COMMANDS.values() for request in command.requests}
assert set(_BY_REQUEST) == set(c.Request.__args__), "every request of the protocol has exactly one command"


def for_request(request: c.Request) -> Command:
    return _BY_REQUEST[type(request)]


__all__ = ["COMMANDS", "Command", "Context", "for_request"]
