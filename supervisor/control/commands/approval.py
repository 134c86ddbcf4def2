"""`abort` and `recover`: ending a worker with its positions open, never one request away.

The first request is answered with a challenge: the open positions, and a nonce good once and for a
limited time. The operator answers it with the trader id, typed, and a reason; the approval goes on
record (who, from where, why, which nonce, which positions) before nsup acts on it. `abort` stops the
worker in HALTING or STUCK and ends nsup ABORTED; `recover` kills a hung worker for a replacement.
"""

from __future__ import annotations

import sys

from supervisor.control.commands.base import TYPE_CHECKING, Command, Context, Refusal

if TYPE_CHECKING:
    from typing import ClassVar

    from supervisor.intent import Approval

RECOVER_EXIT_WAIT_SECS = 5.0


def refused(reason: str) -> Exception:
    """The lifecycle's no (supervisor.intent.Refused), imported here: nsupctl need not load it."""
    from supervisor.intent import Refused

    return Refused(reason)


class ApprovalCommand(Command):
    action: ClassVar[str]
    warning: ClassVar[str]
    hint: ClassVar[str] = ""  # said after the table's refusal

    async def run(self, ctx: Context, request, actor: str) -> dict:
        if request.__struct_config__.tag == f"{self.name}_confirm":
            return await self._approve(ctx, request, actor)
        self.check(ctx)
        status = await ctx.nsup.fresh_status()
        trader_id = ctx.nsup.snapshot().trader_id
        challenge = ctx.challenges.issue(self.action, trader_id, status.positions if status else [])
        return {"result": "challenge issued", "action": self.action, "nonce": challenge.nonce,
                "expires_in_secs": ctx.challenges.ttl_secs, "trader_id": trader_id, "positions": challenge.positions,
                **({"counts": status.counts} if status else {})}

    async def _approve(self, ctx: Context, request, actor: str) -> dict:
        from supervisor.intent import Approval
        from supervisor.journal import NotDurable  # nsup's side only: nsupctl need not load them

        if not request.reason.strip():
            raise refused(f"{self.action} needs a reason")
        self.check(ctx)  # before the nonce is spent and an approval put on record
        challenge = ctx.challenges.redeem(self.action, request.nonce, request.confirmation)
        approval = Approval(self.action, operator=actor, reason=request.reason, approval_id=request.nonce)
        try:  # on file before anything acts on it: the guard reads the record, not a promise of one
            ctx.nsup.journal.record_durably(
                "approval", action=self.action, operator=request.actor.user, host=request.actor.host, actor=actor,
                reason=request.reason, nonce=request.nonce, positions=challenge.positions,
            )
        except NotDurable as exc:
            raise refused(self._not_durable(str(exc))) from None
        return await self.carry_out(ctx, approval, actor)

    def check(self, ctx: Context) -> None:
        """Whether the action could be approved now: asked before a challenge is issued or answered, so
        that no approval goes on record for what cannot happen, nor one that cannot be put on record."""
        if not ctx.nsup.lifecycle.allows(self.action):
            raise refused(ctx.nsup.lifecycle.why_not(self.action) + self.hint)
        problem = ctx.nsup.journal.make_durable()
        if problem is not None:
            raise refused(self._not_durable(f"the journal is not durable ({problem})"))

    def _not_durable(self, why: str) -> str:
        return (f"{self.action} needs its approval on file first, and {why}: free or fix the state dir's disk, "
                "then ask again (a stop still flattens meanwhile)")

    async def carry_out(self, ctx: Context, approval: Approval, actor: str) -> dict:
        raise NotImplementedError

    def record(self, data: dict) -> dict:
        return {"result": data.get("result", "done"), **({"nonce": data["nonce"]} if "nonce" in data else {})}

    def add_arguments(self, parser) -> None:
        parser.add_argument("--confirm", help="the trader id, when there is no terminal to type it at")
        parser.add_argument("--reason", help="why, for the journal")

    def describe_challenge(self, challenge: dict) -> list[str]:
        """What an operator reads before approving (nsupctl, the Telegram bridge): the warning, the
        trader id, the open positions and the nonce."""
        from supervisor.control.commands.status import position_line

        lines = [f"{self.warning} Trader {challenge['trader_id']}, open positions:"]
        lines += [f"  {position_line(p)}" for p in challenge.get("positions", [])] or ["  (none reported)"]
        lines.append(f"challenge {challenge['nonce']} is good for {challenge['expires_in_secs']:g}s")
        return lines

    def client(self, ctl) -> int:
        """The positions first, then the trader id typed and a reason given."""
        args = ctl.args
        interactive = sys.stdin.isatty() and args.confirm is None
        if not interactive and (args.confirm is None or args.reason is None):
            raise Refusal("no terminal to confirm at: give --confirm TRADER_ID and --reason TEXT")
        challenge = ctl.call(self.name)
        lines = self.describe_challenge(challenge)
        if interactive:
            print("\n".join(lines), file=sys.stderr)
            try:
                confirmation = input(f"Type the trader id ({challenge['trader_id']}) to confirm: ").strip()
                reason = input("Reason (for the journal): ").strip()
            except (EOFError, KeyboardInterrupt):
                raise Refusal(f"{self.action} cancelled at the prompt; nothing was approved") from None
        else:
            confirmation, reason = args.confirm, args.reason
        data = ctl.call(f"{self.name}_confirm", timeout_secs=self.timeout_secs, nonce=challenge["nonce"],
                        confirmation=confirmation, reason=reason or "")
        ctl.say(data["result"], {**data, "challenge": challenge})
        return 0


class AbortCommand(ApprovalCommand):
    name = "abort"
    action = "abort"
    requests = ("abort", "abort_confirm")
    help = "stop WITH exposure (HALTING or STUCK): shows the positions, asks for the trader id and a reason"
    warning = "ABORT stops the node WITH EXPOSURE."
    hint = " (stop first, and let nsup try to flatten)"
    timeout_secs = 60.0  # the worker's stop, or its kill under the approval

    async def carry_out(self, ctx: Context, approval: Approval, actor: str) -> dict:
        """ABORTING: the worker is stopped (killed, if it does not exit) under the approval; the answer
        comes once it is gone and nsup is ABORTED."""
        ctx.nsup.allow("abort", actor, approval=approval, reason=approval.reason)
        state = await ctx.nsup.reached({"ABORTED"})  # ABORTING ends only once the worker's exit is seen
        end = ctx.nsup.snapshot().last_transition
        return {"state": state, "result": f"the worker was ended with its positions open ({end['reason']}); nsup is ABORTED"}


class RecoverCommand(ApprovalCommand):
    name = "recover"
    action = "recover"
    requests = ("recover", "recover_confirm")
    help = "kill a HUNG worker with exposure, for a replacement: the same challenge"
    warning = "RECOVER kills the hung worker WITH EXPOSURE; a new one reconciles and takes over."
    timeout_secs = 30.0

    def check(self, ctx: Context) -> None:
        super().check(ctx)
        if not ctx.nsup.worker().hung:
            raise refused("recover is for a hung worker, and this one answers")

    async def carry_out(self, ctx: Context, approval: Approval, actor: str) -> dict:
        """The hung worker is killed under the approval; the answer comes once it is gone (nsup then
        replaces it, within the restart bound)."""
        import asyncio  # nsup's side only: nsupctl need not load them

        from supervisor.stop_gate import EndAction

        worker = ctx.nsup.worker()
        ctx.nsup.allow("recover", actor, approval=approval, hung=worker.hung)
        decision = await worker.end(EndAction.SIGKILL, actor, approval)
        if not decision.allowed:
            raise refused(decision.reason)
        await asyncio.wait([worker.process.exited], timeout=RECOVER_EXIT_WAIT_SECS)
        if worker.process.alive():
            raise refused(f"the hung worker {worker.pid} was sent SIGKILL and has not exited yet")
        return {"result": "the hung worker was killed; nsup replaces it within the restart bound"}
