"""The worker's own last line of defence, on a real TradingNode (built, not run): StopNode with
require_flat is refused unless the node's own status, read on its loop after HALTED is set, is flat;
the trading state is put back as it was; only an approved StopNode (require_flat=False) stops a node
with exposure. nsup's stop gate decides first; this is the check that holds even if nsup is wrong.
"""

from __future__ import annotations

import asyncio

import pytest
from nautilus_trader.common.component import TestClock
from nautilus_trader.common.factories import OrderFactory
from nautilus_trader.model.enums import OmsType, OrderSide, TradingState
from nautilus_trader.model.identifiers import AccountId, PositionId, StrategyId, TraderId, Venue
from nautilus_trader.model.objects import Quantity
from nautilus_trader.model.position import Position
from nautilus_trader.test_kit.providers import TestInstrumentProvider
from nautilus_trader.test_kit.stubs.events import TestEventStubs

from node_worker.control_server import ControlServer
from node_worker.demo.node import demo_node
from node_worker.entry_gate import RISK_ENDPOINT
from node_worker.recipe import build_node
from supervisor import protocol as p

NOT_FLAT = "refused to stop: not flat, and no operator approval"


class Worker:
    """A built node with the worker's control server installed on it (nothing is sent or connected)."""

    def __init__(self):
        asyncio.set_event_loop(asyncio.new_event_loop())  # the node takes the current loop, and dispose closes it
        self.node = build_node(demo_node(venue="sandbox", log_level="ERROR"), timeout_post_stop=0.1)
        self.risk_engine = self.node.kernel.risk_engine
        self.cache = self.node.kernel.cache
        self.server = ControlServer(self.node, "ipc:///nonexistent/worker.sock", heartbeat_secs=1.0)
        self.instrument = TestInstrumentProvider.default_fx_ccy("EUR/USD", Venue("SIM"))
        self.cache.add_instrument(self.instrument)
        self._orders = OrderFactory(TraderId("DEMO-001"), StrategyId("Demo-001"), TestClock())

    def execute(self, command: p.Command) -> str | None:
        return self.node.get_event_loop().run_until_complete(self.server._execute(command))

    def stop_carried_out(self) -> bool:
        """Runs the node's loop until the stop begun by StopNode has finished (the worker then exits 0)."""
        loop = self.node.get_event_loop()
        loop.run_until_complete(asyncio.wait_for(self.server._stopped.wait(), 10))
        return self.server._stopped.is_set()

    def fill(self, side: OrderSide) -> None:
        """A fill of 1000 EUR/USD into the one NETTING position, as the execution engine would apply it."""
        order = self._orders.market(self.instrument.id, side, Quantity.from_int(1000))
        fill = TestEventStubs.order_filled(order, self.instrument, position_id=PositionId("P-1"),
                                           account_id=AccountId("SIM-001"))
        position = self.cache.position(PositionId("P-1"))
        if position is None:
            self.cache.add_position(Position(self.instrument, fill), OmsType.NETTING)
        else:
            position.apply(fill)
            self.cache.update_position(position)


@pytest.fixture
def worker():
    w = Worker()
    yield w
    w.node.dispose()


def test_the_gate_sits_at_the_risk_engines_own_endpoint(worker):
    """If NautilusTrader renamed the endpoint, the gate would guard nothing: the name is checked here."""
    assert RISK_ENDPOINT in worker.node.kernel.msgbus.endpoints()


@pytest.mark.parametrize("before", ["ACTIVE", "REDUCING"])
def test_stop_requiring_flat_is_refused_with_a_position_open(worker, before):
    worker.risk_engine.set_trading_state(TradingState[before])
    worker.fill(OrderSide.BUY)
    assert worker.cache.positions_open_count() == 1

    assert worker.execute(p.StopNode(require_flat=True)) == NOT_FLAT
    assert worker.risk_engine.trading_state == TradingState[before], "the trading state is put back as it was"
    assert worker.node.trader.state.name != "STOPPED"
    # Asked again, still refused: a refusal leaves nothing half-begun that a repeat would finish.
    assert worker.execute(p.StopNode(require_flat=True)) == NOT_FLAT


def test_stop_requiring_flat_is_refused_with_an_order_open(worker):
    order = worker._orders.limit(worker.instrument.id, OrderSide.BUY, Quantity.from_int(1000),
                                 worker.instrument.make_price(1.0))
    worker.cache.add_order(order)
    worker.cache.update_order(order)
    order.apply(TestEventStubs.order_submitted(order))
    worker.cache.update_order(order)
    assert worker.cache.orders_inflight_count() == 1
    assert worker.execute(p.StopNode(require_flat=True)) == NOT_FLAT


def test_stop_requiring_flat_goes_ahead_once_the_position_is_closed(worker):
    worker.risk_engine.set_trading_state(TradingState.REDUCING)
    worker.fill(OrderSide.BUY)
    assert worker.execute(p.StopNode(require_flat=True)) == NOT_FLAT
    worker.fill(OrderSide.SELL)
    assert worker.cache.positions_open_count() == 0
    assert worker.execute(p.StopNode(require_flat=True)) is None
    assert worker.risk_engine.trading_state == TradingState.HALTED, "HALTED first, so nothing opens as it stops"
    assert worker.stop_carried_out()


def test_an_approved_stop_goes_ahead_with_a_position_open(worker):
    worker.fill(OrderSide.SELL)
    assert worker.execute(p.StopNode(require_flat=False)) is None
    assert worker.stop_carried_out()
    assert worker.cache.positions_open_count() == 1


def test_the_node_cannot_stop_itself_it_asks_nsup_instead():
    """shutdown_system() (any component's, the engines' on an exception) and a stop() called on the node
    or its kernel become requests to nsup; only inside allowed() (nsup's StopNode) does the stop run."""
    from nautilus_trader.common.messages import ShutdownSystem
    from nautilus_trader.core.uuid import UUID4
    from nautilus_trader.model.identifiers import ComponentId

    from node_worker.shutdown_guard import SHUTDOWN_TOPIC, ShutdownGuard

    asyncio.set_event_loop(asyncio.new_event_loop())
    node = build_node(demo_node(venue="sandbox", log_level="ERROR"), timeout_post_stop=0.1)
    asked = []
    guard = ShutdownGuard(node, lambda component, reason: asked.append((component, reason)))
    loop = node.get_event_loop()
    try:
        for _ in range(2):  # told to nsup once per reason
            command = ShutdownSystem(node.trader_id, ComponentId("RiskEngine"), UUID4(), 0, reason="queue exception")
            node.kernel.msgbus.publish(SHUTDOWN_TOPIC, command)
        node.stop()
        loop.run_until_complete(node.kernel.stop_async())
        assert asked == [("RiskEngine", "queue exception"), ("node", "TradingNode.stop() was called on the node"),
                         ("node", "NautilusKernel.stop_async() was called on the node")]
        assert not node.kernel._is_stopping and node.trader.state.name == "READY"  # untouched
        with guard.allowed():
            loop.run_until_complete(node.stop_async())  # nsup's StopNode: the real stop runs
        assert len(asked) == 3
    finally:
        node.dispose()
