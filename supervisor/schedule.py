"""The trading-session schedule, pure: given the [schedule] config, the time now and what was already
acted on, which scheduled actions are due now and which comes next. No I/O and no clock of its own
(supervisor/scheduler.py acts on the answers; `wall_clock` is what callers pass as now); no calendar
library either, only the standard library's zoneinfo.

    [schedule]                                     # optional; no schedule without it
    timezone = "America/New_York"                  # IANA; every time below is wall-clock time there
    days = ["mon..fri"]                            # trading days: names or ranges of mon tue wed thu fri sat sun
    holidays = [2026-12-25, 2027-01-01]            # dates that are not trading days
    open = 09:30:00                                # the session opens (default 00:00:00)
    closing_only = 15:45:00                        # optional: closing orders only (nsup's pause)
    flatten = 15:55:00                             # optional: market_exit() and nsup's closer (nsup's flatten)
    stop = 16:00:00                                # optional: the graceful stop: flat, verified, then stopped

Times are written as TOML times (15:55:00) or strings ("15:55:00"); when several are given they must
be in the order closing_only <= flatten <= stop. The session is a trading day from `open` until the
first of stop, flatten, closing_only (until midnight if none is set).

Each time is acted on at most once per trading day, and only on the day it belongs to: a time that
passed while nsup was down is due at once when nsup is back (the same day), never on a later day.
Daylight saving: a time is the wall-clock time of its day, so 15:55 stays 15:55 across a change; a
time the clock skips (02:30 on a spring-forward night) is read with the offset before the change
(it falls an hour later, 03:30), and a time that happens twice (autumn) is its first occurrence.
Every comparison is made in UTC: Python compares two aware datetimes of one zone by their wall
clocks, which is wrong across a change.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Iterator
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

UTC = dt.UTC
KINDS = ("closing_only", "flatten", "stop")  # the scheduled actions, in the order they come in a day
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # date.weekday()'s order
DAY_SPEC = re.compile(r"^(?P<first>[a-z]{3})(?:\.\.(?P<last>[a-z]{3}))?$")
LOOK_AHEAD_DAYS = 400  # the next action is sought this far ahead: a year of holidays and then some


def wall_clock() -> dt.datetime:
    return dt.datetime.now(UTC)


class ScheduleSection(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    timezone: str
    days: list[str] = msgspec.field(default_factory=lambda: ["mon..fri"])
    holidays: list[dt.date] = []
    open: dt.time = dt.time(0, 0)
    closing_only: dt.time | None = None
    flatten: dt.time | None = None
    stop: dt.time | None = None

    def __post_init__(self):
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"timezone: {self.timezone!r} is not an IANA time zone (e.g. America/New_York)") from None
        weekdays(self.days)  # raises with the bad name
        for kind in ("open", *KINDS):
            if (t := getattr(self, kind)) is not None and t.tzinfo is not None:
                raise ValueError(f"{kind}: a wall-clock time in {self.timezone}, without an offset")
        times = [(kind, t) for kind in KINDS if (t := getattr(self, kind)) is not None]
        for (earlier, a), (later, b) in zip(times, times[1:]):
            if a > b:
                raise ValueError(f"{later}: {b} is before {earlier} ({a}); expected closing_only <= flatten <= stop")

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)  # cached by zoneinfo itself

    def times(self) -> list[tuple[str, dt.time]]:
        """The configured actions of a day, in order."""
        return [(kind, t) for kind in KINDS if (t := getattr(self, kind)) is not None]


class Done(msgspec.Struct, frozen=True):
    """A scheduled action that was acted on (or refused: either way it is not tried again)."""

    day: dt.date
    kind: str


class Action(msgspec.Struct, frozen=True):
    kind: str
    day: dt.date  # the trading day it belongs to, in the schedule's zone
    at: dt.datetime  # aware, in UTC

    @property
    def done(self) -> Done:
        return Done(self.day, self.kind)

    def local(self, section: ScheduleSection) -> dt.datetime:
        return self.at.astimezone(section.zone)


def weekdays(specs: list[str]) -> frozenset[int]:
    """["mon..fri", "sun"] -> {0, 1, 2, 3, 4, 6}; a ValueError names what it cannot read."""
    if not specs:
        raise ValueError("days: at least one trading day, e.g. [\"mon..fri\"]")
    found: set[int] = set()
    for spec in specs:
        match = DAY_SPEC.match(spec.strip().lower())
        first, last = (match["first"], match["last"] or match["first"]) if match else (None, None)
        if first not in WEEKDAYS or last not in WEEKDAYS:
            raise ValueError(f"days: {spec!r}: expected day names ({' '.join(WEEKDAYS)}) or a range such as mon..fri")
        a, b = WEEKDAYS.index(first), WEEKDAYS.index(last)
        found.update(range(a, b + 1) if a <= b else (*range(a, 7), *range(0, b + 1)))  # fri..mon wraps
    return frozenset(found)


_weekdays = functools.lru_cache(maxsize=16)(lambda specs: weekdays(list(specs)))


def is_trading_day(section: ScheduleSection, day: dt.date) -> bool:
    return day.weekday() in _weekdays(tuple(section.days)) and day not in section.holidays


def at(section: ScheduleSection, day: dt.date, time: dt.time) -> dt.datetime:
    """A wall-clock time of `day` in the schedule's zone, in UTC (fold=0: the first of a repeated
    time; a skipped time is read with the offset before the change)."""
    return dt.datetime.combine(day, time, tzinfo=section.zone).astimezone(UTC)


def actions_on(section: ScheduleSection, day: dt.date) -> list[Action]:
    """The day's scheduled actions in order; none on a day that is not a trading day."""
    if not is_trading_day(section, day):
        return []
    return [Action(kind, day, at(section, day, t)) for kind, t in section.times()]


def local_day(section: ScheduleSection, now: dt.datetime) -> dt.date:
    return now.astimezone(section.zone).date()


def due(section: ScheduleSection, now: dt.datetime, done: frozenset[Done] | set[Done]) -> list[Action]:
    """Today's actions whose time has come and that were not acted on, in order. Only today's (in the
    schedule's zone): a time missed on an earlier day is not acted on later."""
    return [a for a in actions_on(section, local_day(section, now)) if a.at <= now and a.done not in done]


def next_action(section: ScheduleSection, now: dt.datetime, done: frozenset[Done] | set[Done]) -> Action | None:
    """What the schedule does next: an action due now if there is one, else the first still to come."""
    return next(ahead(section, now, done), None)


def ahead(section: ScheduleSection, now: dt.datetime, done: frozenset[Done] | set[Done]) -> Iterator[Action]:
    """What the schedule does from now on, in order: the actions due now, then those still to come
    (up to LOOK_AHEAD_DAYS ahead)."""
    yield from due(section, now, done)
    if not section.times():
        return
    today = local_day(section, now)
    for offset in range(LOOK_AHEAD_DAYS):
        for action in actions_on(section, today + dt.timedelta(days=offset)):
            if action.at > now and action.done not in done:
                yield action


def session_end(section: ScheduleSection, day: dt.date) -> dt.datetime:
    """Where a day's session ends: its first of stop, flatten, closing_only; midnight if none is set."""
    last = next((t for t in (section.stop, section.flatten, section.closing_only) if t is not None), None)
    return at(section, day, last) if last is not None else at(section, day + dt.timedelta(days=1), dt.time(0, 0))


def in_session(section: ScheduleSection, now: dt.datetime) -> bool:
    """A trading day, at or after `open` and before the session's end."""
    day = local_day(section, now)
    return is_trading_day(section, day) and at(section, day, section.open) <= now < session_end(section, day)


def starts_after_flatten(section: ScheduleSection, now: dt.datetime) -> str | None:
    """Why a session started now would not trade as meant (preflight warns), or None: today is a
    trading day and its flatten time has passed, or the session opens at or after its flatten time."""
    if section.flatten is None:
        return None
    if section.open >= section.flatten:
        return f"the session opens at {section.open} but flattens at {section.flatten}: it never trades"
    day = local_day(section, now)
    if is_trading_day(section, day) and now >= at(section, day, section.flatten):
        return (f"today's flatten time {section.flatten} ({section.timezone}) has passed: a start now is flattened "
                "at once" + (f" and stopped (stop {section.stop})" if section.stop is not None else ""))
    return None


def kept(done: frozenset[Done] | set[Done], now: dt.datetime, section: ScheduleSection) -> frozenset[Done]:
    """What is worth keeping on record: only today's actions can be due again."""
    today = local_day(section, now)
    return frozenset(d for d in done if d.day >= today)
