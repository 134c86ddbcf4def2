"""The node never ends itself with exposure: a strategy's shutdown_system() (the way NautilusTrader's
engines ask for a shutdown too) becomes a stop request to nsup, which flattens, verifies flat, and
only then stops the node."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import pid_alive
from tests.e2e.test_paper_venue import ALWAYS_IN, on_venue, venue, venue_book  # noqa: F401 (venue: a fixture)

pytestmark = pytest.mark.e2e


def test_a_strategy_that_shuts_the_system_down_gets_the_graceful_stop(nsup_run, venue):
    run = nsup_run(on_venue(venue, **ALWAYS_IN), factory="tests.e2e.factories:giving_up_node")

    assert run.exit_code() == 0
    stop = next(r for r in run.records("command") if r["command"] == "stop")
    assert stop["actor"].startswith("node:") and stop["reason"] == "the strategy gave up"
    halting = next(r for r in run.records("transition") if r["dest"] == "HALTING")
    assert halting["actor"] == stop["actor"]
    assert run.transitions()[-3:] == [("RUNNING", "HALTING"), ("HALTING", "FLAT"), ("FLAT", "STOPPED")]
    log = (run.state_dir / "worker.log").read_text()
    assert "the node asked to stop" in log and "fill latency" in log  # GivesUp asks only once it holds a position
    assert "Residual" not in log and venue_book(venue) == {}, "flattened before the node stopped"
    assert not pid_alive(run.worker_pid)
    assert "was called on the node" not in log, "only shutdown_system() was used"
