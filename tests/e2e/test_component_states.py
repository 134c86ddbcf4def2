"""NautilusTrader's own component states reach nsup: a real strategy in a real node degrades, resumes and
faults (its own degrade(), resume(), fault()); each change is journaled, shown in status and made the
health, and clears when the strategy is back. A FAULTED strategy weakens no guard: its market exit does
nothing, so nsup's closer flattens what it holds, and the node stops only once flat, at the venue too.
Another strategy faults as its exit begins, which leaves NautilusTrader's `is_exiting()` set for good: the
node is still flat once its closes have filled, not STUCK."""

from __future__ import annotations

import signal
import urllib.request

import pytest

from tests.e2e.conftest import pid_alive
from tests.e2e.test_nsupctl import nsupctl, status
from tests.e2e.test_paper_venue import ALWAYS_IN, on_venue, venue, venue_book  # noqa: F401 (venue: a fixture)
from tests.redis_server import free_port

pytestmark = pytest.mark.e2e

TROUBLED, EXITER = "Troubled-001", "FaultsInItsExit-002"


def changes(run, component: str) -> list[tuple[str, str]]:
    return [(r["source"], r["dest"]) for r in run.records("component_state") if r["component"] == component]


def test_a_strategy_degraded_resumed_and_faulted_is_journaled_shown_and_the_health_and_still_flattened(nsup_run, venue):
    port = free_port()
    run = nsup_run(on_venue(venue, **ALWAYS_IN), factory="tests.e2e.factories:troubled_node",
                   metrics={"listen": f"127.0.0.1:{port}"})
    run.wait_for(lambda: any(r["health"] == "component_faulted" for r in run.records("health")), timeout=30,
                 what="health component_faulted")  # the change is told at once, the health with the next status

    assert changes(run, TROUBLED) == [("RUNNING", "DEGRADED"), ("DEGRADED", "RUNNING"), ("RUNNING", "FAULTED")]
    assert run.records("component_state")[0]["component_type"] == "Troubled"
    healths = [(r["health"], r["components"]) for r in run.records("health")]
    degraded = healths.index(("component_degraded", {TROUBLED: "DEGRADED"}))
    assert healths[degraded + 1] == ("ok", {}), "back to RUNNING clears it"
    assert healths[-1] == ("component_faulted", {TROUBLED: "FAULTED"})

    shown = status(run)
    assert shown["health"] == "component_faulted" and shown["components"] == {TROUBLED: "FAULTED"}
    assert shown["components_heard"] >= 7  # trader, engines, clients, both strategies, nsup's closer
    assert shown["positions_open"] >= 1, "the FAULTED strategy still holds its position"
    human = nsupctl(run, "status").stdout
    assert f"components     1 of {shown['components_heard']} DEGRADED or FAULTED: {TROUBLED} FAULTED" in human
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        scraped = [line for line in response.read().decode().splitlines() if line.startswith("nsup_component_state")]
    assert scraped == [f'nsup_component_state{{component="{TROUBLED}",state="FAULTED"}} 1.0']

    run.signal(signal.SIGTERM)
    assert run.exit_code() == 0
    assert run.transitions()[-3:] == [("RUNNING", "HALTING"), ("HALTING", "FLAT"), ("FLAT", "STOPPED")]
    assert changes(run, EXITER) == [("RUNNING", "FAULTED")]
    closed = [a for r in run.records("closer") for a in r["actions"]]
    assert any("close" in a and "EUR/USD" in a for a in closed), f"nsup's closer closed the FAULTED strategy's position: {closed}"
    assert venue_book(venue) == {}
    assert not pid_alive(run.worker_pid)
