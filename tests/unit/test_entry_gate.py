"""The worker's closing-only gate (node_worker/entry_gate.py), alone: real NautilusTrader orders and
commands, the risk engine, portfolio and cache it reads replaced by fakes that answer as theirs do.

The rule, from nsup's REDUCING ("no new entries"): while the trading state is not ACTIVE, an order
reaches the risk engine only if it is reduce-only, or if it, the orders before it in the same
command and the working orders on its side together close no more than the net position they face.
Everything else is denied through the engine's own path; other commands always pass.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nautilus_trader.common.component import TestClock
from nautilus_trader.common.factories import OrderFactory
from nautilus_trader.core.uuid import UUID4
from nautilus_trader.execution.messages import CancelAllOrders, SubmitOrder, SubmitOrderList
from nautilus_trader.model.enums import OmsType, OrderSide, TradingState
from nautilus_trader.model.identifiers import InstrumentId, OrderListId, PositionId, StrategyId, TraderId
from nautilus_trader.model.objects import Quantity
from nautilus_trader.model.orders import OrderList

from node_worker.entry_gate import EMULATOR_ENDPOINT, RISK_ENDPOINT, EntryGate

TRADER = TraderId("TESTER-001")
STRATEGY = StrategyId("Gate-001")
EURUSD = InstrumentId.from_str("EUR/USD.SIM")
GBPUSD = InstrumentId.from_str("GBP/USD.SIM")
UNIT = 1000


class FakeRiskEngine:
    def __init__(self, trading_state: TradingState):
        self.trading_state = trading_state
        self.executed: list = []
        self.denied: list[tuple[object, str]] = []

    def execute(self, command) -> None:
        self.executed.append(command)

    def _deny_command(self, command, reason: str) -> None:
        self.denied.append((command, reason))


class FakePortfolio:
    def __init__(self, net: dict[InstrumentId, Decimal]):
        self._net = net

    def net_position(self, instrument_id: InstrumentId) -> Decimal:
        return self._net.get(instrument_id, Decimal(0))


class FakeCache:
    def __init__(self, open_orders: list, inflight: list, positions: list = ()):
        self._open, self._inflight, self._positions = open_orders, inflight, {p.id: p for p in positions}

    def position(self, position_id):
        return self._positions.get(position_id)

    def orders_open(self, instrument_id=None):
        return [o for o in self._open if o.instrument_id == instrument_id]

    def orders_inflight(self, instrument_id=None):
        return [o for o in self._inflight if o.instrument_id == instrument_id]


class Door:
    """The OrderEmulator's or an execution algorithm's endpoint: what reaches it, in order."""

    def __init__(self, name: str):
        self.id, self.received = name, []

    def execute(self, command) -> None:
        self.received.append(command)


class FakeTrader:
    def __init__(self, algorithms: list[Door]):
        self._algorithms = algorithms

    def exec_algorithms(self) -> list[Door]:
        return self._algorithms


class FakeMsgBus:
    def __init__(self, risk_engine: FakeRiskEngine, emulator: Door, algorithms: list[Door]):
        self.endpoints = {RISK_ENDPOINT: risk_engine.execute, EMULATOR_ENDPOINT: emulator.execute,
                          **{f"{a.id}.execute": a.execute for a in algorithms}}

    def deregister(self, endpoint, handler) -> None:
        assert self.endpoints.get(endpoint) == handler, "the gate must take the engine's own endpoint"
        del self.endpoints[endpoint]

    def register(self, endpoint, handler) -> None:
        assert endpoint not in self.endpoints
        self.endpoints[endpoint] = handler


class Client:
    def __init__(self, oms_type: OmsType):
        self.oms_type = oms_type


class FakeExecEngine:
    def __init__(self, oms_type: OmsType):
        self._routing_map = {EURUSD.venue: Client(oms_type)}


class Kernel:
    def __init__(self, risk_engine, cache, msgbus, emulator, oms_type=OmsType.NETTING):
        self.risk_engine, self.cache, self.msgbus, self.emulator = risk_engine, cache, msgbus, emulator
        self.exec_engine = FakeExecEngine(oms_type)


class Node:
    def __init__(self, trading_state, net=None, open_orders=(), inflight=(), oms_type=OmsType.NETTING, positions=()):
        self.risk_engine = FakeRiskEngine(trading_state)
        self.emulator, self.twap = Door("OrderEmulator"), Door("TWAP")
        self.trader = FakeTrader([self.twap])
        self.msgbus = FakeMsgBus(self.risk_engine, self.emulator, [self.twap])
        self.kernel = Kernel(self.risk_engine, FakeCache(list(open_orders), list(inflight), list(positions)), self.msgbus,
                             self.emulator, oms_type)
        self.portfolio = FakePortfolio(net or {})
        self.gate = EntryGate(self)
        self.gate.install()

    def send(self, command) -> None:
        """What a strategy's submit does: the message goes to whatever is registered at the endpoint."""
        self.msgbus.endpoints[RISK_ENDPOINT](command)

    def passed(self, command) -> bool:
        executed, denied = command in self.risk_engine.executed, any(c is command for c, _ in self.risk_engine.denied)
        assert executed != denied, "every command is either passed on or denied, exactly once"
        return executed


_orders = OrderFactory(trader_id=TRADER, strategy_id=STRATEGY, clock=TestClock())


def order(side: OrderSide, units: int, reduce_only: bool = False, instrument: InstrumentId = EURUSD):
    return _orders.market(instrument, side, Quantity.from_int(units * UNIT), reduce_only=reduce_only)


def submit(o) -> SubmitOrder:
    return SubmitOrder(trader_id=TRADER, strategy_id=STRATEGY, order=o, command_id=UUID4(), ts_init=0)


def submit_list(orders) -> SubmitOrderList:
    order_list = OrderList(OrderListId(f"OL-{UUID4()}"), list(orders))
    return SubmitOrderList(trader_id=TRADER, strategy_id=STRATEGY, order_list=order_list, command_id=UUID4(), ts_init=0)


NOT_ACTIVE = [TradingState.REDUCING, TradingState.HALTED]
BUY, SELL = OrderSide.BUY, OrderSide.SELL


def test_install_puts_the_gate_in_front_of_every_door():
    node = Node(TradingState.ACTIVE)
    doors = {RISK_ENDPOINT: node.risk_engine.execute, EMULATOR_ENDPOINT: node.emulator.execute,
             "TWAP.execute": node.twap.execute}
    assert all(node.msgbus.endpoints[endpoint] != handler for endpoint, handler in doors.items())


@pytest.mark.parametrize("side", [BUY, SELL])
def test_active_lets_every_order_through(side):
    node = Node(TradingState.ACTIVE)
    command = submit(order(side, 5))
    node.send(command)
    assert node.passed(command)


@pytest.mark.parametrize("state", NOT_ACTIVE)
@pytest.mark.parametrize("side", [BUY, SELL])
def test_an_opening_order_from_flat_is_denied_with_the_reason(state, side):
    node = Node(state)
    command = submit(order(side, 1))
    node.send(command)
    assert not node.passed(command)
    (_, reason), = node.risk_engine.denied
    assert reason.startswith("nsup closing-only:") and "EUR/USD.SIM" in reason and "would open risk" in reason


@pytest.mark.parametrize("state", NOT_ACTIVE)
@pytest.mark.parametrize("side, net", [(SELL, 2), (BUY, -2)])
def test_a_closing_order_passes_and_a_growing_one_is_denied(state, side, net):
    node = Node(state, {EURUSD: Decimal(net * UNIT)})
    closing, exactly_flat, flipping = (submit(order(side, n)) for n in (1, 2, 3))
    node.send(closing)
    node.send(exactly_flat)
    assert node.passed(closing) and node.passed(exactly_flat)
    opposite = BUY if side == SELL else SELL
    grow = submit(order(opposite, 1))
    node.send(grow)
    assert not node.passed(grow), "an order on the position's own side grows it"
    node = Node(state, {EURUSD: Decimal(net * UNIT)})
    node.send(flipping)
    assert not node.passed(flipping), "more than the position closes it and opens the other way"


@pytest.mark.parametrize("state", NOT_ACTIVE)
@pytest.mark.parametrize("side", [BUY, SELL])
def test_reduce_only_is_left_to_the_risk_engine(state, side):
    node = Node(state)
    command = submit(order(side, 3, reduce_only=True))
    node.send(command)
    assert node.passed(command)


@pytest.mark.parametrize("state", NOT_ACTIVE)
def test_working_orders_on_the_same_side_use_up_the_room(state):
    working = order(SELL, 2)
    node = Node(state, {EURUSD: Decimal(3 * UNIT)}, open_orders=[working])
    fits, too_much = submit(order(SELL, 1)), submit(order(SELL, 2))
    node.send(fits)
    node.send(too_much)
    assert node.passed(fits) and not node.passed(too_much)


@pytest.mark.parametrize("state", NOT_ACTIVE)
def test_an_order_both_open_and_in_flight_is_counted_once(state):
    working = order(SELL, 2)  # pending a cancel or an update: open and in flight at once
    node = Node(state, {EURUSD: Decimal(3 * UNIT)}, open_orders=[working], inflight=[working])
    command = submit(order(SELL, 1))
    node.send(command)
    assert node.passed(command)


@pytest.mark.parametrize("state", NOT_ACTIVE)
def test_an_order_list_that_together_would_flip_is_denied_whole(state):
    node = Node(state, {EURUSD: Decimal(2 * UNIT)})
    command = submit_list([order(SELL, 1), order(SELL, 1), order(SELL, 1)])
    node.send(command)
    assert not node.passed(command)
    node = Node(state, {EURUSD: Decimal(2 * UNIT)})
    command = submit_list([order(SELL, 1), order(SELL, 1)])
    node.send(command)
    assert node.passed(command)


@pytest.mark.parametrize("state", [TradingState.ACTIVE, *NOT_ACTIVE])
def test_commands_other_than_submits_always_pass(state):
    node = Node(state)
    command = CancelAllOrders(trader_id=TRADER, strategy_id=STRATEGY, instrument_id=EURUSD, order_side=OrderSide.NO_ORDER_SIDE,
                              command_id=UUID4(), ts_init=0)
    node.send(command)
    assert node.passed(command)


# The rule as a property, against an oracle written from the docstring ----------------------------

sides = st.sampled_from([BUY, SELL])
drawn_orders = st.tuples(sides, st.integers(1, 4), st.booleans(), st.sampled_from([EURUSD, GBPUSD]))


def oracle_passes(state, net: dict, working: list, submitted: list) -> bool:
    if state == TradingState.ACTIVE:
        return True
    used: dict = {}
    for side, units, reduce_only, instrument in submitted:
        if reduce_only:
            continue
        key = (instrument, side)
        if key not in used:
            used[key] = sum(u for s, u, r, i in working if (i, s) == key and not r)
        used[key] += units
        facing = net.get(instrument, 0)
        room = -facing if side == BUY else facing  # what it would close
        if used[key] > room:
            return False
    return True


@settings(max_examples=300, deadline=None)
@given(
    state=st.sampled_from([TradingState.ACTIVE, *NOT_ACTIVE]),
    net=st.fixed_dictionaries({EURUSD: st.integers(-4, 4), GBPUSD: st.integers(-4, 4)}),
    working=st.lists(drawn_orders, max_size=3),
    submitted=st.lists(drawn_orders, min_size=1, max_size=3),
    as_list=st.booleans(),
)
def test_the_gate_is_exactly_the_rule(state, net, working, submitted, as_list):
    node = Node(state, {i: Decimal(n * UNIT) for i, n in net.items()},
                open_orders=[order(s, u, r, i) for s, u, r, i in working])
    orders = [order(s, u, r, i) for s, u, r, i in submitted]
    command = submit_list(orders) if as_list or len(orders) > 1 else submit(orders[0])
    node.send(command)
    assert node.passed(command) == oracle_passes(state, net, working, submitted)


@pytest.mark.parametrize("door", [EMULATOR_ENDPOINT, "TWAP.execute"])
def test_the_emulator_and_an_execution_algorithm_are_gated_too(door):
    """A TWAP parent or an emulated order reaches the risk engine only later (as slices, or released):
    an opening one is denied whole at its own door, a closing one goes on to that door."""
    node = Node(TradingState.REDUCING, net={EURUSD: Decimal(2 * UNIT)})
    handler = {EMULATOR_ENDPOINT: node.emulator, "TWAP.execute": node.twap}[door]
    opening, closing = submit(order(OrderSide.BUY, 1)), submit(order(OrderSide.SELL, 2))
    node.msgbus.endpoints[door](opening)
    node.msgbus.endpoints[door](closing)
    assert [c for c, _ in node.risk_engine.denied] == [opening] and handler.received == [closing]
    assert node.risk_engine.executed == [], "nothing skipped its own door"

    active = Node(TradingState.ACTIVE)
    command = submit(order(OrderSide.BUY, 5))
    active.msgbus.endpoints[door](command)
    assert {EMULATOR_ENDPOINT: active.emulator, "TWAP.execute": active.twap}[door].received == [command]


class HeldPosition:
    def __init__(self, position_id: str, side: OrderSide, units: int):
        self.id, self.instrument_id, self.is_open = PositionId(position_id), EURUSD, True
        self.is_long, self.quantity = side == OrderSide.BUY, Quantity.from_int(units * UNIT)


@pytest.mark.parametrize("state", NOT_ACTIVE)
def test_on_a_hedging_account_an_order_opens_unless_it_closes_the_position_it_names(state):
    """On HEDGING every order opens its own position, whatever it does to the net: a SELL against a net
    long is a new short there. It passes only as reduce-only, or naming the long it closes."""
    long = HeldPosition("P-LONG", OrderSide.BUY, 2)
    node = Node(state, net={EURUSD: Decimal(2 * UNIT)}, oms_type=OmsType.HEDGING, positions=[long])
    unnamed, reduce_only = submit(order(OrderSide.SELL, 1)), submit(order(OrderSide.SELL, 1, reduce_only=True))
    closing = SubmitOrder(trader_id=TRADER, strategy_id=STRATEGY, order=order(OrderSide.SELL, 2), command_id=UUID4(),
                          ts_init=0, position_id=long.id)
    too_big = SubmitOrder(trader_id=TRADER, strategy_id=STRATEGY, order=order(OrderSide.SELL, 3), command_id=UUID4(),
                          ts_init=0, position_id=long.id)
    for command in (unnamed, reduce_only, closing, too_big):
        node.send(command)
    assert [node.passed(c) for c in (unnamed, reduce_only, closing, too_big)] == [False, True, True, False]
