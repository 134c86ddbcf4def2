"""The restart policy on a clock of its own: the first restart at once, backoff from the second in a
row, a clean slate after a stable run, and the bound."""

from __future__ import annotations

import pytest

from supervisor.restart_policy import RestartPolicy

BACKOFF, BACKOFF_MAX = 0.5, 30.0


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def policy(clock: Clock, max_restarts: int = 5) -> RestartPolicy:
    return RestartPolicy(max_restarts, window_secs=300.0, backoff_secs=BACKOFF, backoff_max_secs=BACKOFF_MAX,
                         stable_after_secs=60.0, clock=clock)


def test_the_first_restart_goes_at_once_and_backoff_begins_with_the_second():
    clock = Clock()
    restarts = policy(clock)
    assert restarts.next_delay() == 0.0
    second, third, fourth = restarts.next_delay(), restarts.next_delay(), restarts.next_delay()
    assert BACKOFF <= second <= 2 * BACKOFF  # the wait, plus jitter of up to as much again
    assert 2 * BACKOFF <= third <= 3 * BACKOFF
    assert 4 * BACKOFF <= fourth <= 5 * BACKOFF


def test_a_worker_that_came_up_but_not_for_long_is_still_a_loop():
    clock = Clock()
    restarts = policy(clock)
    assert restarts.next_delay() == 0.0
    restarts.worker_up()
    clock.now += 5.0  # up, but short of stable_after_secs
    assert restarts.next_delay() >= BACKOFF


def test_after_a_stable_run_the_first_restart_goes_at_once_again():
    clock = Clock()
    restarts = policy(clock)
    restarts.next_delay()
    restarts.next_delay()
    restarts.worker_up()
    clock.now += 60.0
    assert restarts.next_delay() == 0.0
    assert restarts.next_delay() >= BACKOFF


def test_max_restarts_zero_never_restarts():
    assert policy(Clock(), max_restarts=0).next_delay() is None


@pytest.mark.parametrize("max_restarts", [1, 3])
def test_past_the_bound_it_gives_up_and_the_window_forgives(max_restarts):
    clock = Clock()
    restarts = policy(clock, max_restarts)
    delays = [restarts.next_delay() for _ in range(max_restarts)]
    assert None not in delays
    assert restarts.next_delay() is None
    clock.now += 301.0  # every restart has left the window
    assert restarts.next_delay() is not None


def test_backoff_never_exceeds_its_maximum_and_jitter():
    clock = Clock()
    restarts = policy(clock, max_restarts=100)
    delays = [restarts.next_delay() for _ in range(20)]
    assert max(delays) <= BACKOFF_MAX + BACKOFF
