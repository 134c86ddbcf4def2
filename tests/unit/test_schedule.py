"""The trading-session schedule, pure (supervisor/schedule.py): days, holidays, DST, what is due and next."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from supervisor import schedule as sched
from supervisor.schedule import Done, ScheduleSection

UTC = dt.UTC
NY = "America/New_York"


def desk(**fields) -> ScheduleSection:
    """A US equity desk: closing-only 15:45, flat 15:55, stopped 16:00 New York time, Monday to Friday."""
    return ScheduleSection(**{"timezone": NY, "open": dt.time(9, 30), "closing_only": dt.time(15, 45),
                              "flatten": dt.time(15, 55), "stop": dt.time(16, 0), **fields})


def ny(*args) -> dt.datetime:
    return dt.datetime(*args, tzinfo=sched.ZoneInfo(NY)).astimezone(UTC)


def test_days_read_names_ranges_and_wrapping_ranges():
    assert sched.weekdays(["mon..fri"]) == {0, 1, 2, 3, 4}
    assert sched.weekdays(["mon", "wed..thu", "SUN"]) == {0, 2, 3, 6}
    assert sched.weekdays(["fri..mon"]) == {4, 5, 6, 0}


def test_a_trading_day_is_due_in_order_and_nothing_before_its_time():
    s, day = desk(), dt.date(2026, 12, 1)  # a Tuesday
    assert sched.due(s, ny(2026, 12, 1, 15, 44, 59), set()) == []
    assert [a.kind for a in sched.due(s, ny(2026, 12, 1, 15, 45), set())] == ["closing_only"]
    late = sched.due(s, ny(2026, 12, 1, 15, 58), set())
    assert [(a.kind, a.day) for a in late] == [("closing_only", day), ("flatten", day)]
    assert [a.kind for a in sched.due(s, ny(2026, 12, 1, 15, 58), {Done(day, "closing_only")})] == ["flatten"]


def test_nothing_is_due_on_a_weekend_or_a_holiday_and_next_skips_them():
    s = desk(holidays=[dt.date(2026, 12, 25)])
    assert sched.due(s, ny(2026, 12, 5, 17, 0), set()) == []  # Saturday
    assert sched.due(s, ny(2026, 12, 25, 17, 0), set()) == []  # Christmas, a Friday
    assert sched.next_action(s, ny(2026, 12, 24, 16, 1), set()).kind == "closing_only"  # missed: due now
    done = {a.done for a in sched.actions_on(s, dt.date(2026, 12, 24))}
    upcoming = sched.next_action(s, ny(2026, 12, 24, 16, 1), done)
    assert (upcoming.kind, upcoming.day) == ("closing_only", dt.date(2026, 12, 28))  # the Monday after
    assert not sched.in_session(s, ny(2026, 12, 25, 11, 0)) and sched.in_session(s, ny(2026, 12, 24, 11, 0))


def test_a_missed_time_is_due_the_same_day_only():
    s = desk()
    assert [a.kind for a in sched.due(s, ny(2026, 12, 1, 23, 59), set())] == ["closing_only", "flatten", "stop"]
    assert sched.due(s, ny(2026, 12, 2, 0, 1), set()) == []  # yesterday's are not acted on today


def test_times_stay_wall_clock_across_daylight_saving():
    s = desk(days=["mon..sun"])
    before, after = sched.actions_on(s, dt.date(2026, 3, 7)), sched.actions_on(s, dt.date(2026, 3, 9))
    assert before[1].at == dt.datetime(2026, 3, 7, 20, 55, tzinfo=UTC)  # EST, UTC-5
    assert after[1].at == dt.datetime(2026, 3, 9, 19, 55, tzinfo=UTC)  # EDT, UTC-4
    assert after[1].local(s).strftime("%H:%M %Z") == "15:55 EDT"


def test_a_skipped_time_falls_after_the_change_and_a_repeated_one_is_its_first():
    s = ScheduleSection(timezone=NY, days=["mon..sun"], flatten=dt.time(2, 30), stop=dt.time(2, 30))
    (flatten, _) = sched.actions_on(s, dt.date(2026, 3, 8))  # 02:00 EST jumps to 03:00 EDT
    assert flatten.at == dt.datetime(2026, 3, 8, 7, 30, tzinfo=UTC)  # 03:30 EDT
    s = ScheduleSection(timezone=NY, days=["mon..sun"], flatten=dt.time(1, 30))
    (flatten,) = sched.actions_on(s, dt.date(2026, 11, 1))  # 01:30 happens twice
    assert flatten.at == dt.datetime(2026, 11, 1, 5, 30, tzinfo=UTC)  # the first: EDT
    assert [a.kind for a in sched.due(s, dt.datetime(2026, 11, 1, 5, 30, tzinfo=UTC), set())] == ["flatten"]
    assert sched.due(s, dt.datetime(2026, 11, 1, 6, 30, tzinfo=UTC), {flatten.done}) == []  # the second 01:30: done


def test_the_session_is_open_to_the_first_of_stop_flatten_closing_only():
    s = desk()
    assert not sched.in_session(s, ny(2026, 12, 1, 9, 29))
    assert sched.in_session(s, ny(2026, 12, 1, 9, 30)) and sched.in_session(s, ny(2026, 12, 1, 15, 59, 59))
    assert not sched.in_session(s, ny(2026, 12, 1, 16, 0))
    assert sched.session_end(desk(stop=None), dt.date(2026, 12, 1)) == ny(2026, 12, 1, 15, 55)
    only_open = ScheduleSection(timezone=NY)
    assert sched.in_session(only_open, ny(2026, 12, 1, 23, 59)) and not sched.in_session(only_open, ny(2026, 12, 5, 12))
    assert sched.next_action(only_open, ny(2026, 12, 1, 12), set()) is None


def test_preflight_reason_for_a_start_after_the_flatten_time():
    s = desk()
    assert sched.starts_after_flatten(s, ny(2026, 12, 1, 15, 54)) is None
    assert "has passed" in sched.starts_after_flatten(s, ny(2026, 12, 1, 15, 56))
    assert sched.starts_after_flatten(s, ny(2026, 12, 5, 15, 56)) is None  # a Saturday: no session today
    assert "never trades" in sched.starts_after_flatten(desk(open=dt.time(16, 0), closing_only=None), ny(2026, 12, 1, 8))


def test_kept_drops_earlier_days():
    s, today = desk(), dt.date(2026, 12, 2)
    done = {Done(dt.date(2026, 12, 1), "stop"), Done(today, "flatten")}
    assert sched.kept(done, ny(2026, 12, 2, 10, 0), s) == {Done(today, "flatten")}


# Properties -----------------------------------------------------------------------------------------

ZONES = ["America/New_York", "Europe/London", "Australia/Sydney", "Asia/Kolkata", "UTC"]
times = st.times(max_value=dt.time(23, 59, 59)).map(lambda t: t.replace(microsecond=0))


@st.composite
def schedules(draw) -> ScheduleSection:
    chosen = sorted(draw(st.lists(times, min_size=3, max_size=3)))
    kinds = draw(st.lists(st.booleans(), min_size=3, max_size=3))
    days = draw(st.lists(st.sampled_from(sched.WEEKDAYS), min_size=1, max_size=7, unique=True))
    start = dt.date(2026, 1, 1)
    holidays = draw(st.lists(st.integers(0, 400).map(lambda n: start + dt.timedelta(days=n)), max_size=30))
    return ScheduleSection(timezone=draw(st.sampled_from(ZONES)), days=days, holidays=holidays,
                           open=draw(times), **{k: t for k, t, on in zip(sched.KINDS, chosen, kinds) if on})


moments = st.datetimes(min_value=dt.datetime(2026, 1, 1), max_value=dt.datetime(2027, 1, 31)).map(
    lambda d: d.replace(tzinfo=UTC))
steps = st.lists(st.floats(min_value=1, max_value=3 * 86_400), min_size=1, max_size=60)  # nsup down for up to 3 days


@settings(max_examples=300, deadline=None)
@given(schedules(), moments, steps)
def test_acting_on_what_is_due_acts_once_per_day_on_trading_days_only(s, start, gaps):
    """Nsup looks at the schedule now and then (it may be down for days between looks) and acts on
    whatever is due: each configured time is acted on at most once per trading day, never on a day
    that is not a trading day, never before its time, always on its own day; and a time that passed
    since the last look is due at once if it is still its day."""
    done: set[Done] = set()
    acted: list[tuple[Done, dt.datetime]] = []
    now = start
    for gap in gaps:
        now += dt.timedelta(seconds=gap)
        today = sched.local_day(s, now)
        missed = [a for a in sched.actions_on(s, today) if a.at <= now and a.done not in done]
        due = sched.due(s, now, done)
        assert due == missed  # a missed time is due at once
        for action in due:
            assert sched.is_trading_day(s, action.day) and action.at <= now and action.day == today
            assert action.done not in done
            done.add(action.done)
            acted.append((action.done, now))
        done = set(sched.kept(done, now, s))  # what the persisted state keeps does not change the answer
        assert sched.due(s, now, done) == []
    assert len({d for d, _ in acted}) == len(acted)


@settings(max_examples=300, deadline=None)
@given(schedules(), moments)
def test_next_action_is_due_or_the_first_still_to_come(s, now):
    upcoming = sched.next_action(s, now, set())
    due = sched.due(s, now, set())
    if due:
        assert upcoming == due[0]
    elif upcoming is not None:
        assert upcoming.at > now and sched.is_trading_day(s, upcoming.day)
        between = sched.local_day(s, now)
        while between < upcoming.day:  # nothing scheduled in between
            assert all(a.at <= now for a in sched.actions_on(s, between))
            between += dt.timedelta(days=1)
    else:
        assert not s.times() or not any(sched.actions_on(s, sched.local_day(s, now) + dt.timedelta(days=n))
                                        for n in range(1, 30))


@settings(max_examples=200, deadline=None)
@given(schedules(), moments)
def test_never_in_session_on_a_day_that_is_not_a_trading_day(s, now):
    if sched.in_session(s, now):
        day = sched.local_day(s, now)
        assert sched.is_trading_day(s, day)
        assert all(a.at >= now for a in sched.actions_on(s, day) if a.kind == "stop")


@pytest.mark.parametrize("zone", ZONES)
def test_every_day_of_a_year_has_its_times_once_in_utc_order(zone):
    s = desk(timezone=zone, days=["mon..sun"])
    for n in range(366):
        actions = sched.actions_on(s, dt.date(2026, 1, 1) + dt.timedelta(days=n))
        assert [a.kind for a in actions] == list(sched.KINDS)
        assert [a.at for a in actions] == sorted(a.at for a in actions)
        assert all(a.local(s).time() == t for a, (_, t) in zip(actions, s.times()))


def test_preflight_warns_of_a_start_after_the_flatten_time_and_lists_what_comes_next(tmp_path):
    from supervisor.config import parse_config
    from supervisor.preflight import _schedule

    def check(flatten: dt.datetime, stop: dt.datetime):
        config = parse_config({"node": {"factory": "a.b:c"}, "supervisor": {"state_dir": str(tmp_path)},
                               "schedule": {"timezone": "UTC", "days": ["mon..sun"], "flatten": f"{flatten:%H:%M:%S}",
                                            "stop": f"{stop:%H:%M:%S}"}})
        (found,) = _schedule(config)
        return found

    now = dt.datetime.now(UTC)
    if not dt.time(0, 10) < now.time() < dt.time(23, 50):
        pytest.skip("too near midnight (UTC) for times on either side of now")
    late = check(now - dt.timedelta(minutes=5), now + dt.timedelta(minutes=5))
    assert late.outcome == "WARN" and "today's flatten time" in late.detail and "has passed" in late.detail
    assert late.detail.index("flatten ") < late.detail.index("stop ")  # the missed flatten is due first
    early = check(now + dt.timedelta(minutes=5), now + dt.timedelta(minutes=6))
    assert early.outcome == "PASS" and early.detail.startswith(f"next: flatten {now:%a %Y-%m-%d}") and "(UTC)" in early.detail
