"""Every operator command, one object each (the way circus has one module per command): find one by
its nsupctl name (`COMMANDS`) or by the wire tag of a request it answers (`BY_REQUEST`; nsup's side
checks that every request of control/protocol.py has exactly one). Loading these loads no msgspec,
no pyzmq and no asyncio: nsupctl loads them all to start."""

from __future__ import annotations

from supervisor.control.commands.approval import AbortCommand, RecoverCommand
from supervisor.control.commands.base import Command, Context
from supervisor.control.commands.flatten import FlattenCommand
from supervisor.control.commands.pause import PauseCommand
from supervisor.control.commands.refused import RefusedCommand
from supervisor.control.commands.restart import RestartCommand
from supervisor.control.commands.resume import ResumeCommand
from supervisor.control.commands.status import StatusCommand
from supervisor.control.commands.stop import StopCommand
from supervisor.control.commands.version import VersionCommand

COMMANDS: dict[str, Command] = {command.name: command for command in (
    StatusCommand(), PauseCommand(), ResumeCommand(), FlattenCommand(), StopCommand(), RestartCommand(),
    AbortCommand(), RecoverCommand(), RefusedCommand(), VersionCommand(),
)}
BY_REQUEST: dict[str, Command] = {tag: command for command in COMMANDS.values() for tag in command.requests}

__all__ = ["BY_REQUEST", "COMMANDS", "Command", "Context"]
