"""`pause`: closing orders only (REDUCING); the node stays RUNNING and comes back paused if replaced."""

from __future__ import annotations

from supervisor.control.commands.base import Command, Context


class PauseCommand(Command):
    name = "pause"
    requests = ("pause",)
    help = "REDUCING: closing orders only, stays RUNNING"
    nodes = "many"

    async def run(self, ctx: Context, request, actor: str) -> dict:
        return {"trading_state": await set_paused(ctx, True, actor)}


async def set_paused(ctx: Context, paused: bool, actor: str) -> str:
    """Pause or unpause a RUNNING node: the table first, then the intent (which outlives the worker)."""
    from supervisor import protocol as p  # nsup's side only: nsupctl need not load it

    ctx.nsup.allow("pause" if paused else "unpause", actor)
    worker = ctx.nsup.worker()
    trading_state = ctx.nsup.intend_paused(paused)
    return (await worker.command(p.SetTradingState(trading_state), actor=actor)).status.trading_state
