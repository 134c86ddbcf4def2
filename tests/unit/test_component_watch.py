"""NautilusTrader's component states: which changes are told to nsup (pure), the ComponentWatch on a real
message bus with real components driven through their own state machine, from the loop and from another
thread, and what the troubled states make of the health."""

from __future__ import annotations

import asyncio
import threading

import pytest
from nautilus_trader.common.component import Component, MessageBus, TestClock
from nautilus_trader.model.identifiers import ComponentId, TraderId

from node_worker.component_watch import UNKNOWN, ComponentWatch, change_to_tell
from supervisor.protocol import Counts, NodeStatus


@pytest.mark.parametrize(("last", "state", "told"), [
    ("RUNNING", "DEGRADED", ("RUNNING", "DEGRADED")),
    ("DEGRADED", "RUNNING", ("DEGRADED", "RUNNING")),
    ("DEGRADED", "FAULTED", ("DEGRADED", "FAULTED")),
    ("RUNNING", "FAULTED", ("RUNNING", "FAULTED")),
    ("DEGRADED", "STOPPED", ("DEGRADED", "STOPPED")),  # stopped with the node: out of trouble, said so
    (None, "FAULTED", (UNKNOWN, "FAULTED")),  # built before the worker listened
    ("RUNNING", "DEGRADING", None),  # on its way: told where it settles
    ("DEGRADED", "RESUMING", None),
    ("DEGRADED", "DEGRADED", None),
    ("READY", "RUNNING", None),  # the node's own start and stop are nsup's doing
    ("RUNNING", "STOPPED", None),
    (None, "RUNNING", None),
])
def test_only_changes_into_or_out_of_trouble_are_told(last, state, told):
    assert change_to_tell(last, state) == told


def component(msgbus: MessageBus, name: str) -> Component:
    return Component(TestClock(), TraderId("T-001"), ComponentId(name), msgbus=msgbus)


def test_a_component_degraded_resumed_and_faulted_is_told_each_time_and_shown_while_in_trouble():
    msgbus = MessageBus(TraderId("T-001"), TestClock())
    told: list[tuple[str, str, str, str]] = []
    troubled: list[dict[str, str]] = []

    async def scenario() -> ComponentWatch:
        watch = ComponentWatch(msgbus, asyncio.get_running_loop(), lambda *change: (told.append(change),
                                                                                    troubled.append(watch.troubled())))
        strategy, engine = component(msgbus, "Strategy-001"), component(msgbus, "DataEngine")
        for c in (strategy, engine):
            c.start()
        strategy.degrade()
        await asyncio.sleep(0)  # marshalled onto the loop
        strategy.resume()
        # From a thread of its own, as a timer's callback on NautilusTrader's Rust thread would.
        thread = threading.Thread(target=engine.fault)
        thread.start()
        thread.join()
        await asyncio.sleep(0.01)
        return watch

    watch = asyncio.run(scenario())
    assert told == [("Strategy-001", "Component", "RUNNING", "DEGRADED"),
                    ("Strategy-001", "Component", "DEGRADED", "RUNNING"),
                    ("DataEngine", "Component", "RUNNING", "FAULTED")]
    assert troubled == [{"Strategy-001": "DEGRADED"}, {}, {"DataEngine": "FAULTED"}]
    assert watch.troubled() == {"DataEngine": "FAULTED"} and watch.heard() == 2


def status(components: dict[str, str], clients: dict[str, bool] | None = None) -> NodeStatus:
    return NodeStatus("RUNNING", "ACTIVE", Counts(0, 0, 0), [], [], 0.0, data_age_secs=0.1,
                      clients=clients or {"SIM": True}, components=components, components_heard=5)


def test_a_faulted_component_is_the_health_first_and_a_degraded_one_after_a_lost_venue():
    assert status({}).health(10.0) == "ok"
    assert status({"Strategy-001": "DEGRADED"}).health(10.0) == "component_degraded"
    assert status({"Strategy-001": "DEGRADED"}, {"SIM": False}).health(10.0) == "venue_disconnected"
    assert status({"Strategy-001": "DEGRADED", "RiskEngine": "FAULTED"}, {"SIM": False}).health(10.0) == "component_faulted"


def test_status_names_only_the_components_in_trouble_with_a_count():
    from supervisor.control.commands.status import StatusCommand
    from supervisor.snapshot import Snapshot

    def shown(components: dict[str, str]) -> list[str]:
        snapshot = Snapshot(state="RUNNING", node=status(components), health="ok", hung=False, stop=None, paused=False,
                            trader_id="T-001", worker=None, worker_alive=True, worker_uptime_secs=1.0, supervisor_pid=1,
                            supervisor_uptime_secs=1.0, heartbeat_age_secs=0.2, restarts=0, last_transition=None)
        return [line for line in StatusCommand().render(snapshot.status()).splitlines() if line.startswith("components")]

    assert shown({}) == ["components     0 of 5 DEGRADED or FAULTED"]
    assert shown({"RiskEngine": "DEGRADED", "EMACross-001": "FAULTED"}) == [
        "components     2 of 5 DEGRADED or FAULTED: EMACross-001 FAULTED, RiskEngine DEGRADED"]
