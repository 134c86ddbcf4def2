"""FaultWatch on a real NautilusTrader message bus: adapter faults and order rejections become one notice
per kind and a recent list, which makes the node's health `degraded`."""

from __future__ import annotations

import asyncio

from nautilus_trader.common.component import MessageBus, TestClock
from nautilus_trader.core.uuid import UUID4
from nautilus_trader.model.events import OrderRejected
from nautilus_trader.model.identifiers import AccountId, ClientOrderId, InstrumentId, StrategyId, TraderId

from node_worker import faults
from node_worker.faults import FaultWatch, report_fault
from supervisor.protocol import Counts, NodeStatus


def rejected(reason: str) -> OrderRejected:
    return OrderRejected(TraderId("T-001"), StrategyId("S-001"), InstrumentId.from_str("EUR/USD.SIM"),
                         ClientOrderId("O-1"), AccountId("SIM-001"), reason, UUID4(), 0, 0)


def test_each_kind_of_fault_is_told_once_and_kept_while_recent(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(faults.time, "monotonic", lambda: now[0])
    msgbus = MessageBus(TraderId("T-001"), TestClock())
    told: list[str] = []

    async def scenario() -> FaultWatch:
        watch = FaultWatch(msgbus, asyncio.get_running_loop(), told.append)
        report_fault(msgbus, "PAPER: no order books")
        report_fault(msgbus, "PAPER: no order books")
        msgbus.publish("events.order.S-001", rejected("venue drill: rejecting orders"))
        await asyncio.sleep(0)  # faults are marshalled onto the loop
        return watch

    watch = asyncio.run(scenario())
    assert told == ["fault: PAPER: no order books", "fault: EUR/USD.SIM order rejected: venue drill: rejecting orders"]
    assert watch.recent() == ["PAPER: no order books (2x)", "EUR/USD.SIM order rejected: venue drill: rejecting orders"]
    now[0] += faults.RECENT_SECS
    assert watch.recent() == []


def test_recent_faults_make_the_health_degraded():
    status = NodeStatus("RUNNING", "ACTIVE", Counts(0, 0, 0), [], [], 0.0, data_age_secs=0.1, clients={"SIM": True})
    assert status.health(10.0) == "ok"
    degraded = NodeStatus("RUNNING", "ACTIVE", Counts(0, 0, 0), [], [], 0.0, data_age_secs=0.1, clients={"SIM": True},
                          faults=["PAPER: no order books"])
    assert degraded.health(10.0) == "degraded"
