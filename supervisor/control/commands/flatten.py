"""`flatten`: market_exit() on every strategy now, then nsup's closer for what they leave, without
stopping."""

from __future__ import annotations

from supervisor.control.commands.base import Command, Context


class FlattenCommand(Command):
    name = "flatten"
    requests = ("flatten",)
    help = "market_exit() on every strategy, then nsup's closer for what they leave, without stopping"

    async def run(self, ctx: Context, request, actor: str) -> dict:
        from supervisor import protocol as p  # nsup's side only: nsupctl need not load it

        ctx.nsup.allow("flatten", actor)
        await ctx.nsup.worker().command(p.MarketExit(), actor=actor)
        actions = await ctx.nsup.close_all(actor)
        return {"counts": ctx.nsup.worker().last_status.counts, "actions": actions}

    def render(self, data: dict) -> str:
        from supervisor.control.commands.status import counts

        lines = [f"counts         {counts(data['counts'])}"]
        return "\n".join([*lines, *(f"closer         {action}" for action in data["actions"])])
