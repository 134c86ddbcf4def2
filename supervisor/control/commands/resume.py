"""`resume`: in RUNNING, new entries again (undoes `pause`); in HALTING or STUCK, cancels a stop that an
operator asked for (a stop from a signal is final: the lifecycle's guard refuses it)."""

from __future__ import annotations

from supervisor.control.commands.base import Command, Context
from supervisor.control.commands.pause import set_paused


class ResumeCommand(Command):
    name = "resume"
    requests = ("resume",)
    help = "ACTIVE again; in HALTING or STUCK it cancels the stop"

    async def run(self, ctx: Context, request, actor: str) -> dict:
        nsup = ctx.nsup
        if not nsup.lifecycle.allows("resume"):
            return {"trading_state": await set_paused(ctx, False, actor)}
        nsup.allow("resume", actor, stop=nsup.stop)  # RUNNING again: trading as the operator left it
        return {"state": nsup.lifecycle.state, "paused": nsup.snapshot().paused}
