"""Two nodes on one shared account of a real paper venue process, each through its own real paper
execution client (node_worker/paper/execution.py) over ZeroMQ: each hears only of its own orders,
the venue holds both positions and reports the whole account to each, one trader's close leaves the
other's position alone, and a hand trade is news to both. An account that is not shared still
refuses a second trader."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
import time
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from nautilus_trader.cache.cache import Cache
from nautilus_trader.common.component import LiveClock, MessageBus
from nautilus_trader.common.factories import OrderFactory
from nautilus_trader.core.uuid import UUID4
from nautilus_trader.execution.messages import GeneratePositionStatusReports, SubmitOrder
from nautilus_trader.model.enums import OrderSide
from nautilus_trader.model.events import OrderFilled
from nautilus_trader.model.identifiers import InstrumentId, StrategyId, TraderId
from nautilus_trader.model.objects import Quantity

from node_worker.faults import FAULT_TOPIC
from node_worker.paper.execution import PaperExecClientConfig, PaperExecClientFactory
from paper_venue.launcher import VenueProcess

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
EUR, GBP = InstrumentId.from_str("EUR/USD.SIM"), InstrumentId.from_str("GBP/USD.SIM")


@pytest.fixture(scope="module")
def venue():
    venue = VenueProcess(Path(tempfile.mkdtemp(prefix="pv-shared-")), accounts={"SIM-001": "NETTING:shared",
                                                                                 "SIM-002": "NETTING"})
    venue.wait_ready()
    yield venue
    assert venue.stop() == 0


class Trader:
    """One node's side of the account without the rest of the node: its PaperExecClient on a message
    bus and cache of its own, and what the client hands the node's execution engine: the events of
    orders the node knows, and reports of those it does not."""

    def __init__(self, venue: VenueProcess, trader_id: str, account_id: str, instrument: InstrumentId):
        clock = LiveClock()
        msgbus = MessageBus(TraderId(trader_id), clock)
        self.cache = Cache()
        self.events, self.reports, self.faults = [], [], []
        msgbus.register("ExecEngine.process", self.events.append)
        msgbus.register("ExecEngine.reconcile_execution_report", self.reports.append)
        msgbus.register("Portfolio.update_account", lambda state: None)
        msgbus.subscribe(FAULT_TOPIC, self.faults.append)
        config = PaperExecClientConfig(endpoint=venue.endpoint, account_id=account_id)
        self.client = PaperExecClientFactory.create(asyncio.get_running_loop(), "SIM", config, msgbus, self.cache, clock)
        self.orders = OrderFactory(TraderId(trader_id), StrategyId("S-001"), clock)
        self.instrument = instrument

    async def trade(self, side: OrderSide, quantity: int, reduce_only: bool = False):
        order = self.orders.market(self.instrument, side, Quantity.from_int(quantity), reduce_only=reduce_only)
        self.cache.add_order(order)  # as the node's execution engine does before its client sends it
        self.client.submit_order(SubmitOrder(order.trader_id, order.strategy_id, order, UUID4(), time.time_ns()))
        await until(lambda: order.client_order_id in self.filled(), f"{order.client_order_id} filled")
        return order.client_order_id

    def filled(self) -> list:
        return [e.client_order_id for e in self.events if isinstance(e, OrderFilled)]

    async def positions(self) -> set[str]:
        reports = await self.client.generate_position_status_reports(GeneratePositionStatusReports(
            instrument_id=None, start=None, end=None, command_id=UUID4(), ts_init=time.time_ns()))
        return {f"{r.instrument_id} {r.position_side.name}" for r in reports}


async def until(predicate, what: str, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while not (result := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)
    return result


@asynccontextmanager
async def connecting(*traders: Trader):
    for trader in traders:
        trader.client.connect()
    try:
        yield
    finally:
        for trader in traders:
            trader.client.disconnect()
        await asyncio.sleep(0.2)  # the link's sockets close on the loop


def book(venue: VenueProcess, account_id: str) -> dict[str, tuple[str, str]]:
    return {p.instrument_id: (p.side, p.quantity) for p in venue.positions() if p.account_id == account_id
            and p.side != "FLAT"}


def test_two_traders_on_a_shared_account_each_hear_only_of_their_own_orders(venue):
    async def scenario() -> None:
        alpha, beta = Trader(venue, "ALPHA-001", "SIM-001", EUR), Trader(venue, "BETA-002", "SIM-001", GBP)
        async with connecting(alpha, beta):
            await until(lambda: alpha.client.is_connected and beta.client.is_connected, "both connected")
            alpha_buys = await alpha.trade(OrderSide.BUY, 100_000)
            beta_sells = await beta.trade(OrderSide.SELL, 200_000)
            assert book(venue, "SIM-001") == {"EUR/USD.SIM": ("LONG", "100000"), "GBP/USD.SIM": ("SHORT", "200000")}
            # The account's reports are the whole account's, as a real venue's: a node filters them by its own scope.
            assert await alpha.positions() == await beta.positions() == {"EUR/USD.SIM LONG", "GBP/USD.SIM SHORT"}

            alpha_closes = await alpha.trade(OrderSide.SELL, 100_000, reduce_only=True)
            assert book(venue, "SIM-001") == {"GBP/USD.SIM": ("SHORT", "200000")}, "beta's position is untouched"
            # Alpha's close came after beta's trade on the venue's one ordered stream: had any of beta's
            # events been sent to alpha, alpha would have asked the venue about that order it does not know
            # by now (and the other way round below).
            assert alpha.filled() == [alpha_buys, alpha_closes] and alpha.reports == []

            hand = await asyncio.to_thread(subprocess.run, [
                sys.executable, "-m", "paper_venue", "drill", "--endpoint", venue.endpoint,
                "--hand-trade", "BUY:GBP/USD.SIM:200000", "--account", "SIM-001"], cwd=REPO, capture_output=True, text=True)
            assert hand.returncode == 0, hand.stdout + hand.stderr
            for trader in (alpha, beta):  # nobody's order: news to both, which ask the venue what it is
                (report,) = await until(lambda t=trader: t.reports, "the hand trade reported")
                assert report.client_order_id.value.startswith("HAND-")
            assert beta.filled() == [beta_sells]
            assert book(venue, "SIM-001") == {}

    asyncio.run(scenario())


def test_an_account_that_is_not_shared_refuses_a_second_trader(venue):
    async def scenario() -> None:
        alpha, beta = Trader(venue, "ALPHA-001", "SIM-002", EUR), Trader(venue, "BETA-002", "SIM-002", GBP)
        async with connecting(alpha):
            await until(lambda: alpha.client.is_connected, "alpha connected")
            async with connecting(beta):
                (fault,) = await until(lambda: beta.faults, "beta's connection refused")
            assert "account SIM-002 is in use by trader ALPHA-001" in fault and not beta.client.is_connected
            await alpha.trade(OrderSide.BUY, 1000)  # alpha trades on
            assert book(venue, "SIM-002") == {"EUR/USD.SIM": ("LONG", "1000")}

    asyncio.run(scenario())
