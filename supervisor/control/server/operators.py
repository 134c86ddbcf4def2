"""Carries out what operators ask, and puts every request on record with its actor: the command and
what came of it, or the refusal and its reason. Signals and `--duration` ask for their stop through
here too, so a stop is journaled the same way whoever asked.

Over TCP the actor carries the client's CURVE key, which ZAP authenticated and the client cannot forge;
the user and host beside it are what the client says.
"""

from __future__ import annotations

import signal

from supervisor.control import protocol as c
from supervisor.control.commands import BY_REQUEST, COMMANDS, Context
from supervisor.control.server.challenges import ChallengeError, Challenges
from supervisor.daemon import Supervisor
from supervisor.intent import Refused
from supervisor.worker_link import LinkError

ERRNO = {Refused: c.Errno.REFUSED, ChallengeError: c.Errno.BAD_CHALLENGE, LinkError: c.Errno.WORKER}
assert set(BY_REQUEST) == set(c.COMMANDS), "every request of the protocol has exactly one command"


class Operators:
    def __init__(self, nsup: Supervisor, events_endpoints: list[str]):
        self._nsup = nsup
        self._context = Context(nsup, Challenges(nsup.config.supervisor.abort_challenge_ttl_secs), events_endpoints)

    async def handle(self, request: c.Request, client_key: str | None = None) -> c.Reply:
        """A request from the control socket (`client_key`: the CURVE key it came with, over TCP)."""
        actor = f"{request.actor.user}@{request.actor.host}" + (f" key:{client_key}" if client_key else "")
        return await self.perform(request, actor)

    async def perform(self, request: c.Request, actor: str) -> c.Reply:
        tag = request.__struct_config__.tag
        command = BY_REQUEST[tag]
        try:
            data = await command.run(self._context, request, actor)
        except (Refused, ChallengeError, LinkError) as exc:
            self._record("refusal", command=tag, actor=actor, reason=str(exc))
            return c.error(request.id, ERRNO[next(k for k in ERRNO if isinstance(exc, k))], str(exc))
        if command.changes:
            self._record("command", command=tag, actor=actor, **command.record(data))
        return c.ok(request.id, **data)

    def stop(self, actor: str, final: bool = False) -> str:
        """A stop asked for in-process: `nsup demo --duration`, or a signal (final: no resume)."""
        result = self._nsup.request_stop(actor, final)
        self._record("command", command="stop", actor=actor, result=result)
        return result

    def on_signal(self, sig: signal.Signals) -> None:
        if sig == signal.SIGHUP:  # a closed terminal must not end supervision
            self._nsup.journal.record("signal", signal=sig.name, state=self._nsup.lifecycle.state, result="ignored")
            return
        self.stop(f"signal:{sig.name}", final=True)

    def _record(self, kind: str, **fields) -> None:
        self._nsup.journal.record(kind, **fields, state=self._nsup.lifecycle.state, **self._nsup.counts())


__all__ = ["COMMANDS", "Operators"]
