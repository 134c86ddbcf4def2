"""Acts on the trading-session schedule: supervisor/schedule.py decides what is due, this asks for it
the way an operator would, with actor `schedule`.

Each due action goes through the operators' own request path (control/server/operators.py): a pause
for `closing_only`, a flatten for `flatten`, the graceful stop for `stop`. So the lifecycle's table
decides whether it may happen now, the command is journaled as any operator's is, and a refusal is
journaled with its reason (a pause while a stop is under way, say). What was acted on is on record in
the persisted state before the request is made: a restarted nsup acts on a time it missed at once,
and never a second time on one already acted on (or refused).

While no node runs yet (the lifecycle's STARTING states) a due pause or flatten waits for it, since
the table would refuse it only for that; a due stop is asked for at once, as an operator's would be
(a worker then starts closing-only and is stopped once flat).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import socket
from collections.abc import Awaitable, Callable

import msgspec
from loguru import logger

from supervisor import schedule as sched
from supervisor.control import protocol as c
from supervisor.lifecycle import STARTING

ACTOR = "schedule"
REQUESTS = {"closing_only": c.Pause, "flatten": c.Flatten, "stop": c.Stop}
MAX_NAP_SECS = 1.0  # due actions are looked for at least this often: a stepped wall clock is noticed soon

Clock = Callable[[], dt.datetime]
Perform = Callable[[c.Request, str], Awaitable[c.Reply]]  # Operators.perform


class ScheduleView(msgspec.Struct, frozen=True, omit_defaults=True):
    """What status shows of the schedule, and the persisted state keeps."""

    timezone: str
    in_session: bool
    done: list[sched.Done] = []
    next_kind: str | None = None
    next_at: str | None = None  # ISO 8601, in the schedule's zone


class Scheduler:
    def __init__(self, section: sched.ScheduleSection, done: list[sched.Done] | tuple = (), clock: Clock = sched.wall_clock):
        """`done`: what an earlier nsup acted on (the persisted state's record)."""
        self.section = section
        self._clock = clock
        self._done = sched.kept(frozenset(done), clock(), section)
        self._ids = itertools.count(1)
        self._host = socket.gethostname()

    def view(self) -> ScheduleView:
        now = self._clock()
        upcoming = sched.next_action(self.section, now, self._done)
        return ScheduleView(
            timezone=self.section.timezone, in_session=sched.in_session(self.section, now),
            done=sorted(self._done, key=lambda d: (d.day, sched.KINDS.index(d.kind))),
            next_kind=upcoming.kind if upcoming else None,
            next_at=upcoming.local(self.section).isoformat() if upcoming else None,
        )

    async def act_on_due(self, nsup, perform: Perform) -> list[tuple[sched.Action, c.Reply]]:
        """Asks for every action due now, in order; returns each with its answer. `nsup`: the Supervisor."""
        now, acted = self._clock(), []
        for action in sched.due(self.section, now, self._done):
            if action.kind != "stop" and nsup.lifecycle.state in STARTING:
                continue  # no node to pause or flatten yet: asked for once one runs
            self._done = sched.kept(self._done | {action.done}, now, self.section)
            nsup.persist()  # on record before it is asked for: never twice, even if nsup dies in between
            local, late = action.local(self.section), round((now - action.at).total_seconds(), 3)
            nsup.journal.record("scheduled", action=action.kind, day=action.day.isoformat(), at=local.isoformat(),
                                late_secs=late, reason=f"{action.kind}, scheduled for {local:%H:%M:%S} "
                                f"{self.section.timezone}" + (f", {late:g}s late" if late >= 1 else ""))
            request = REQUESTS[action.kind](v=c.CONTROL_VERSION, id=f"schedule-{next(self._ids)}",
                                            actor=c.Actor(user=ACTOR, host=self._host))
            acted.append((action, await perform(request, ACTOR)))
        return acted

    def nap_secs(self) -> float:
        """Until the next action is due, at most MAX_NAP_SECS."""
        upcoming = sched.next_action(self.section, self._clock(), self._done)
        if upcoming is None:
            return MAX_NAP_SECS
        return min(MAX_NAP_SECS, max(0.0, (upcoming.at - self._clock()).total_seconds()))

    async def run(self, nsup, perform: Perform) -> None:
        """For the life of nsup (cancelled as it exits)."""
        while True:
            try:
                await self.act_on_due(nsup, perform)
            except Exception as exc:  # a bug of ours must not end supervision: on record (with its traceback)
                logger.exception("the schedule could not act: {}: {}", type(exc).__name__, exc)
            await asyncio.sleep(max(self.nap_secs(), 0.1))  # an action that waits for a node is looked at again soon
