"""`flatten`: market_exit() on every strategy now, without stopping."""

from __future__ import annotations

from supervisor.control.commands.base import Command, Context


class FlattenCommand(Command):
    name = "flatten"
    requests = ("flatten",)
    help = "market_exit() on every strategy, without stopping"

    async def run(self, ctx: Context, request, actor: str) -> dict:
        from supervisor import protocol as p  # nsup's side only: nsupctl need not load it

        ctx.nsup.allow("flatten", actor)
        return {"counts": (await ctx.nsup.worker().command(p.MarketExit(), actor=actor)).status.counts}
