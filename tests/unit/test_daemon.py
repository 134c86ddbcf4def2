"""The daemon's shape: every state but the two ends has one activity, and the ends have none."""

from supervisor import lifecycle as lc
from supervisor.daemon import ACTIVITIES


def test_every_state_but_the_ends_has_one_activity():
    assert set(ACTIVITIES) == set(lc.STATES) - set(lc.TERMINAL)
    assert len(set(ACTIVITIES.values())) == len(ACTIVITIES), "one activity per state, none shared"
