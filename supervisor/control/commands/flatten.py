"""`flatten`: market_exit() on every strategy now, without stopping."""

from __future__ import annotations

from supervisor import protocol as p
from supervisor.control import protocol as c
from supervisor.control.commands.base import Command, Context


class FlattenCommand(Command):
    name = "flatten"
    requests = (c.Flatten,)
    help = "market_exit() on every strategy, without stopping"

    async def run(self, ctx: Context, request, actor: str) -> dict:
        ctx.nsup.allow("flatten", actor)
        return {"counts": (await ctx.nsup.worker().command(p.MarketExit(), actor=actor)).status.counts}
