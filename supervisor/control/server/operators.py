"""Carries out what operators ask, and puts every request on record with its actor: the command and
what came of it, or the refusal and its reason. Signals and `--duration` ask for their stop through
here too, so a stop is journaled the same way whoever asked. Refusals are on record coalesced per
client (refusals.py), so that asking badly, however often, costs the journal little.

Over TCP the actor carries the client's CURVE key, which ZAP authenticated and the client cannot forge;
the user and host beside it are what the client says.
"""

from __future__ import annotations

import signal

from supervisor.control import protocol as c
from supervisor.control.commands import BY_REQUEST, COMMANDS, Context
from supervisor.control.server.challenges import ChallengeError, Challenges
from supervisor.control.server.listener import Peer
from supervisor.control.server.refusals import RefusalRecords
from supervisor.daemon import Supervisor
from supervisor.intent import Refused
from supervisor.worker_link import LinkError

ERRNO = {Refused: c.Errno.REFUSED, ChallengeError: c.Errno.BAD_CHALLENGE, LinkError: c.Errno.WORKER}
assert set(BY_REQUEST) == set(c.COMMANDS), "every request of the protocol has exactly one command"


class Operators:
    def __init__(self, nsup: Supervisor, events_endpoints: list[str]):
        self._nsup = nsup
        self._context = Context(nsup, Challenges(nsup.config.supervisor.abort_challenge_ttl_secs), events_endpoints)
        nsup.on_node_stop_request(lambda actor, reason: self.stop(actor, reason=reason))
        self._refusals = RefusalRecords(self._record)

    def answer_now(self, request: c.Request) -> c.Reply | None:
        """A request that only reads (status, version), answered at once; None for any other."""
        command = BY_REQUEST[request.__struct_config__.tag]
        return None if command.changes else c.ok(request.id, **command.read(self._context, request))

    async def handle(self, request: c.Request, peer: Peer | None = None) -> c.Reply:
        """A request from the control socket, from `peer` (None: in-process, one peer per actor)."""
        actor = f"{request.actor.user}@{request.actor.host}" + (f" key:{peer.key}" if peer and peer.key else "")
        return await self.perform(request, actor, peer.name if peer else actor)

    async def perform(self, request: c.Request, actor: str, peer: str | None = None) -> c.Reply:
        tag = request.__struct_config__.tag
        command = BY_REQUEST[tag]
        try:
            data = await command.run(self._context, request, actor)
        except (Refused, ChallengeError, LinkError) as exc:
            errno = ERRNO[next(k for k in ERRNO if isinstance(exc, k))]
            self._refusals.refuse(peer or actor, tag, errno, {"command": tag, "actor": actor, "reason": str(exc)})
            return c.error(request.id, errno, str(exc))
        if command.changes:
            self._record("command", command=tag, actor=actor, **command.record(data))
        return c.ok(request.id, **data)

    def refused(self, peer: Peer, command: str, errno: c.Errno, reason: str) -> None:
        """A request the control socket answered with an error before it ran (unreadable, or BUSY)."""
        self._refusals.refuse(peer.name, command or "?", errno, {"command": command or "?", "reason": reason})

    def stop(self, actor: str, final: bool = False, reason: str | None = None) -> str:
        """A stop asked for in-process: `nsup demo --duration`, a signal (final: no resume), or the node
        itself ("node:<component>", with its reason)."""
        result = self._nsup.request_stop(actor, final)
        self._record("command", command="stop", actor=actor, result=result, **({"reason": reason} if reason else {}))
        return result

    def on_signal(self, sig: signal.Signals) -> None:
        if sig == signal.SIGHUP:  # a closed terminal must not end supervision
            self._nsup.journal.record("signal", signal=sig.name, state=self._nsup.lifecycle.state, result="ignored")
            return
        self.stop(f"signal:{sig.name}", final=True)

    def close(self) -> None:
        """At exit: the counts of refusals not on record yet go on record."""
        self._refusals.flush()

    def _record(self, kind: str, **fields) -> None:
        self._nsup.journal.record(kind, **fields, state=self._nsup.lifecycle.state, **self._nsup.counts())


__all__ = ["COMMANDS", "Operators"]
