"""`version`: nsup's, its protocols', and nsupctl's own."""

from __future__ import annotations

from supervisor import __version__
from supervisor.control.commands.base import Command, Context


class VersionCommand(Command):
    name = "version"
    requests = ("version",)
    help = "nsup's version and protocol versions"
    changes = False

    def read(self, ctx: Context, request) -> dict:
        from supervisor import protocol as worker_protocol  # nsup's side only: nsupctl need not load them
        from supervisor.control import protocol as c

        return {"nsup": __version__, "control_protocol": c.CONTROL_VERSION, "worker_protocol": worker_protocol.PROTOCOL_VERSION}

    def client(self, ctl) -> int:
        data = {"nsupctl": __version__, **ctl.call(self.name)}
        ctl.say(self.render(data), data)
        return 0
