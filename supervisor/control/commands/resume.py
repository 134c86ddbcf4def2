"""`resume`: in RUNNING, new entries again (undoes `pause`); in HALTING or STUCK, cancels a stop that an
operator asked for (a stop from a signal is final: the lifecycle's guard refuses it). While any stop
is pending, resume is about the stop, so the table answers it: a stop that has not reached HALTING
yet (asked for while the worker was starting) is not undone by unpausing."""

from __future__ import annotations

from supervisor.control.commands.base import Command, Context
from supervisor.control.commands.pause import set_paused


class ResumeCommand(Command):
    name = "resume"
    requests = ("resume",)
    help = "ACTIVE again; in HALTING or STUCK it cancels the stop"

    async def run(self, ctx: Context, request, actor: str) -> dict:
        nsup = ctx.nsup
        if nsup.stop is None and not nsup.lifecycle.allows("resume"):
            return {"trading_state": await set_paused(ctx, False, actor)}
        if not nsup.lifecycle.allows("resume"):
            from supervisor.intent import Refused  # nsup's side only: nsupctl need not load it

            raise Refused(f"{nsup.lifecycle.why_not('resume')}: the stop asked for by {nsup.stop.actor} goes on "
                          "once the node runs, and is not undone by unpausing")
        nsup.allow("resume", actor, stop=nsup.stop)  # RUNNING again: trading as the operator left it
        return {"state": nsup.lifecycle.state, "paused": nsup.snapshot().paused}
