"""What each control command does: the bridge from a validated request to the supervisor.

Every command that can change something is journaled with its actor ("command"), and every
refusal with its reason ("refusal"); `status` and `version` only read, and are not.
"""

from __future__ import annotations

import os
import time

from supervisor import __version__
from supervisor import protocol as p
from supervisor.control import protocol as c
from supervisor.control.challenges import ChallengeError, Challenges
from supervisor.daemon import Refused, Supervisor
from supervisor.lifecycle import HALTING, Approval
from supervisor.worker_link import LinkError


class OperatorCommands:
    def __init__(self, supervisor: Supervisor, events_endpoints: list[str]):
        self._supervisor = supervisor
        self._journal = supervisor.journal
        self._challenges = Challenges(supervisor.config.supervisor.abort_challenge_ttl_secs)
        self._events_endpoints = events_endpoints

    async def handle(self, request: c.Request, client_key: str | None = None) -> c.Reply:
        if isinstance(request, c.Status):
            return c.ok(request.id, **self.status())
        if isinstance(request, c.Version):
            return c.ok(request.id, nsup=__version__, control_protocol=c.CONTROL_VERSION, worker_protocol=p.PROTOCOL_VERSION)
        command = request.__struct_config__.tag
        # The user and host are what the client says; over TCP the CURVE key beside them is proven.
        actor = f"{request.actor.user}@{request.actor.host}" + (f" key:{client_key}" if client_key else "")
        try:
            data = await self._carry_out(request, actor)
        except (Refused, ChallengeError, LinkError) as exc:
            errno = {ChallengeError: c.Errno.BAD_CHALLENGE, Refused: c.Errno.REFUSED}.get(type(exc), c.Errno.WORKER)
            self._record("refusal", command=command, actor=actor, reason=str(exc))
            return c.error(request.id, errno, str(exc))
        if command not in ("stop", "abort", "recover"):  # stop journals itself; these journal their challenge
            self._record("command", command=command, actor=actor, result=data.get("result", "done"))
        return c.ok(request.id, **data)

    def _record(self, kind: str, **fields) -> None:
        s = self._supervisor
        self._journal.record(kind, **fields, state=s.lifecycle.state, **s.counts())

    async def _carry_out(self, request: c.Request, actor: str) -> dict:
        s = self._supervisor
        match request:
            case c.Pause():
                return {"trading_state": (await s.set_trading_state("REDUCING", actor)).trading_state}
            case c.Resume() if s.lifecycle.state == HALTING:
                return await s.walk("resume", actor)
            case c.Resume():
                return {"trading_state": (await s.set_trading_state("ACTIVE", actor)).trading_state}
            case c.Flatten():
                return {"counts": (await s.market_exit(actor)).counts}
            case c.Stop():
                return {"result": s.request_shutdown(actor), "state": s.lifecycle.state}
            case c.Restart():
                return await s.walk("restart", actor)
            case c.AbortBegin():
                return await self._challenge("abort", actor)
            case c.RecoverBegin():
                return await self._challenge("recover", actor)
            case c.AbortConfirm():
                return await self._approve("abort", request, actor)
            case c.RecoverConfirm():
                return await self._approve("recover", request, actor)
        raise Refused(f"no handler for {request.__struct_config__.tag}")

    def _check_approvable(self, action: str) -> None:
        s = self._supervisor
        if action == "abort":
            if s.lifecycle.state != HALTING:
                raise Refused(f"abort only in HALTING (stop first, and let nsup try to flatten); nsup is {s.lifecycle.state}")
            s.check_walk("abort")
        elif not s.hung:
            raise Refused("recover is for a hung worker, and this one answers")

    async def _challenge(self, action: str, actor: str) -> dict:
        """An abort or a recover is never one request: first the positions, and a nonce to answer with."""
        s = self._supervisor
        self._check_approvable(action)
        status = await s.fresh_status()
        challenge = self._challenges.issue(action, s.trader_id, status.positions if status else [])
        self._record("command", command=action, actor=actor, result="challenge issued", nonce=challenge.nonce)
        return {
            "action": action, "nonce": challenge.nonce,
            "expires_in_secs": s.config.supervisor.abort_challenge_ttl_secs,
            "trader_id": s.trader_id, "positions": challenge.positions, **({"counts": status.counts} if status else {}),
        }

    async def _approve(self, action: str, request: c.AbortConfirm | c.RecoverConfirm, actor: str) -> dict:
        s = self._supervisor
        if not request.reason.strip():
            raise Refused(f"{action} needs a reason")
        self._check_approvable(action)  # before the nonce is spent and an approval put on record
        challenge = self._challenges.redeem(action, request.nonce, request.confirmation)
        approval = Approval(action, operator=actor, reason=request.reason, approval_id=request.nonce)
        self._record(
            "approval", action=action, operator=request.actor.user, host=request.actor.host, actor=actor,
            reason=request.reason, nonce=request.nonce, positions=challenge.positions,
        )
        if action == "recover":
            return await s.recover(approval, actor)
        return {"result": "approved; the worker was stopped with its positions open", **await s.walk("abort", actor, approval)}

    def status(self) -> dict:
        s = self._supervisor
        node = s.link.last_status if s.link else None
        heard = s.link.last_heard if s.link else None
        now = time.monotonic()
        return {
            "state": s.lifecycle.state,
            "trading_state": node.trading_state if node else None,
            "positions_open": node.counts.positions_open if node else None,
            "orders_inflight": node.counts.orders_inflight if node else None,
            "orders_open": node.counts.orders_open if node else None,
            "positions": node.positions if node else [],
            "strategies": node.strategies if node else [],
            "stuck": s.stuck,
            "health": s.health,
            "data_age_secs": node.data_age_secs if node else None,
            "trader_id": s.trader_id,
            "worker_pid": s.process.pid if s.process and s.process.alive() else None,
            "worker_uptime_secs": round(now - s.worker_started_at, 3) if s.worker_started_at and s.process.alive() else None,
            "supervisor_pid": os.getpid(),
            "supervisor_uptime_secs": round(now - s.started_at, 3),
            "heartbeat_age_secs": round(now - heard, 3) if heard else None,
            "restarts": s.restarts,
            "paused": s.paused,
            "shutdown_requested": s.shutdown_requested,
            "last_transition": s.last_transition,
            "events_endpoints": self._events_endpoints,
        }
