"""`version`: nsup's, its protocols', and nsupctl's own."""

from __future__ import annotations

from supervisor import __version__
from supervisor import protocol as worker_protocol
from supervisor.control import protocol as c
from supervisor.control.commands.base import Command, Context


class VersionCommand(Command):
    name = "version"
    requests = (c.Version,)
    help = "nsup's version and protocol versions"
    changes = False

    def read(self, ctx: Context, request) -> dict:
        return {"nsup": __version__, "control_protocol": c.CONTROL_VERSION, "worker_protocol": worker_protocol.PROTOCOL_VERSION}

    def client(self, ctl) -> int:
        data = {"nsupctl": __version__, **ctl.call(self.name)}
        ctl.say(self.render(data), data)
        return 0
