"""`restart`: a new worker for a flat node (verified flat, at the venues too); answers once it runs."""

from __future__ import annotations

from supervisor.control.commands.base import Command, Context


class RestartCommand(Command):
    name = "restart"
    requests = ("restart",)
    help = "a new worker, only when flat (a paused node comes back paused)"
    timeout_secs = 180.0  # a node stops, and a new one builds, reconciles and runs

    async def run(self, ctx: Context, request, actor: str) -> dict:
        from supervisor.intent import Refused  # nsup's side only: nsupctl need not load them
        from supervisor.stop_gate import describe_exposure

        nsup = ctx.nsup
        if not nsup.lifecycle.allows("restart"):
            raise Refused(nsup.lifecycle.why_not("restart"))
        status = await nsup.worker().fresh_status()  # not flat now: refused at once, nothing is changed
        if status is None or not status.is_flat():
            raise Refused(f"restart only when flat: {describe_exposure(status)}" if status else
                          "restart only when flat, and the worker does not answer")
        nsup.allow("restart", actor)
        final = await nsup.reached({"RUNNING", "HALTING", "ABORTED"})
        now = nsup.snapshot()
        if now.last_transition["trigger"] == "not_flat":
            raise Refused(now.last_transition["reason"])
        if final != "RUNNING":
            raise Refused(f"the restart did not come to RUNNING: nsup is {final}")
        return {"state": final, "restarts": now.restarts, "worker_pid": now.worker.pid, "paused": now.paused}
