"""state.json across an upgrade: the worker outlives nsup, so a new nsup reads what an older one wrote."""

import json

from supervisor.intent import StopRequest
from supervisor.persisted_state import PersistedState, load, save


def test_a_state_written_before_the_stop_was_one_value_carries_its_stop_on(tmp_path):
    path = tmp_path / "state.json"
    old = {"state": "HALTING", "worker": None, "trader_id": "T-1", "shutdown_requested": True,
           "shutdown_actor": "signal:SIGTERM", "paused": True, "restarts": 2, "version": 7}
    path.write_text(json.dumps(old))
    assert load(path) == PersistedState(state="HALTING", trader_id="T-1", stop=StopRequest("signal:SIGTERM", final=True),
                                        paused=True, restarts=2, version=7)
    old.update(shutdown_requested=True, shutdown_actor="alice@desk")
    path.write_text(json.dumps(old))
    assert load(path).stop == StopRequest("alice@desk", final=False), "an operator's stop may still be resumed"
    old.update(shutdown_requested=False, shutdown_actor="")
    path.write_text(json.dumps(old))
    assert load(path).stop is None


def test_the_stop_round_trips(tmp_path):
    path = tmp_path / "state.json"
    state = PersistedState(state="STUCK", stop=StopRequest("signal:SIGINT", final=True))
    save(path, state)
    assert load(path) == state
