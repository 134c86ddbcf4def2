"""`refused`: a front end that refused someone on nsup's behalf puts the refusal on nsup's record.

The Telegram bridge ignores commands from users not on its allow-list; the refusal belongs in the
node's journal with the others. nsup answers it as what it is, a refusal: it goes through the same
coalesced refusal records as any (server/refusals.py), under the actor the client names, and
changes nothing.
"""

from __future__ import annotations

from supervisor.control.commands.approval import refused
from supervisor.control.commands.base import Command, Context


class RefusedCommand(Command):
    name = "refused"
    requests = ("refused",)
    help = "put on record a refusal made on nsup's behalf (by a front end such as the Telegram bridge)"

    async def run(self, ctx: Context, request, actor: str) -> dict:
        raise refused(f"asked {request.asked!r}: {request.reason}")

    def add_arguments(self, parser) -> None:
        parser.add_argument("--asked", required=True, help="what was asked, quoted")
        parser.add_argument("--reason", required=True, help="why it was refused")

    def client(self, ctl) -> int:
        ctl.call(self.name, asked=ctl.args.asked, reason=ctl.args.reason)  # answered with the refusal: exit 1
        return 0
