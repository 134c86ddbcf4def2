"""The paper venue as a process (paper_venue.launcher's VenueProcess) over real ZeroMQ on ipc, DEALERs
and a SUB against it: hello and accounts (shared ones too), market data and bars, orders and their
events and whom they go to, reports, the drills (trading by hand too), garbage in, SIGTERM -> exit 0,
and no task of the venue dies. One venue
serves the module; each test trades an account of its own and leaves the drills off."""

from __future__ import annotations

import asyncio
import itertools
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgspec
import pytest
import zmq
from loguru import logger
from nautilus_trader.common.component import TestClock
from nautilus_trader.common.factories import OrderFactory
from nautilus_trader.core.uuid import UUID4
from nautilus_trader.execution.messages import CancelOrder, SubmitOrder
from nautilus_trader.model.data import Bar, QuoteTick, TradeTick
from nautilus_trader.model.enums import OrderSide
from nautilus_trader.model.identifiers import InstrumentId, StrategyId, TraderId
from nautilus_trader.model.objects import Price, Quantity

from paper_venue import protocol as v
from paper_venue.account import LEASE_SECS
from paper_venue.codec import dumps, loads
from paper_venue.launcher import VenueProcess, endpoints_in
from paper_venue.cli import _account
from paper_venue.server import Session, audience, build_venue
from tests.unit.test_supervisor_is_light import imports_in_fresh_interpreter

ROOT = Path(__file__).resolve().parents[2]
EUR = InstrumentId.from_str("EUR/USD.SIM")
ACCOUNTS = {f"SIM-{n:03d}": "NETTING" for n in range(1, 21)} | {"SIM-HEDGE": "HEDGING", "SIM-TEAM": "NETTING:shared"}
_free_accounts = iter(a for a, spec in ACCOUNTS.items() if spec == "NETTING")


class Client:
    """A DEALER session on one account: requests wait for their Reply; order events that arrive
    meanwhile are kept, decoded, in order."""

    def __init__(self, ctx: zmq.Context, endpoint: str, account: str, trader: str = "TESTER-001"):
        self.socket = ctx.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.connect(endpoint)
        self.account, self.trader = account, trader
        self.events: list = []
        self._ids = itertools.count(1)
        self.orders = OrderFactory(TraderId(trader), StrategyId("S-001"), TestClock())

    def send(self, make) -> int:
        request_id = next(self._ids)
        self.socket.send(v.encode(make(request_id)))
        return request_id

    def receive(self, timeout: float):
        if not self.socket.poll(int(timeout * 1000)):
            return None
        message = v.from_venue_decoder.decode(self.socket.recv())
        if isinstance(message, v.OrderEvent):
            self.events.append(loads(message.event))
        return message

    def reply(self, request_id: int, timeout: float = 5.0) -> v.Reply | None:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            message = self.receive(left)
            if isinstance(message, v.Reply) and message.request_id == request_id:
                return message
        return None

    def request(self, make, timeout: float = 5.0) -> v.Reply:
        reply = self.reply(self.send(make), timeout)
        assert reply is not None, "the venue did not answer"
        return reply

    def hello(self, oms_type: str = "NETTING", trader: str | None = None) -> v.Reply:
        return self.request(lambda i: v.Hello(request_id=i, account_id=self.account, trader_id=trader or self.trader,
                                              oms_type=oms_type))

    def execute(self, command) -> v.Reply:
        return self.request(lambda i: v.Execute(request_id=i, account_id=self.account, command=dumps(command)))

    def submit(self, order) -> v.Reply:
        return self.execute(SubmitOrder(order.trader_id, order.strategy_id, order, UUID4(), time.time_ns()))

    def buy(self, quantity: int = 100_000):
        order = self.orders.market(EUR, OrderSide.BUY, Quantity.from_int(quantity))
        assert self.submit(order).ok
        return order

    def cancel(self, order) -> v.Reply:
        return self.execute(CancelOrder(order.trader_id, order.strategy_id, EUR, order.client_order_id, None, UUID4(),
                                        time.time_ns()))

    def reports(self, kind: str, **query) -> list:
        return [loads(r) for r in self.request(lambda i: v.QueryReports(request_id=i, kind=kind, account_id=self.account,
                                                                        **query)).items]

    def wait_events(self, order, count: int, timeout: float = 5.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while len(mine := [e for e in self.events if e.client_order_id == order.client_order_id]) < count \
                and time.monotonic() < deadline:
            self.receive(deadline - time.monotonic())
        return [type(e).__name__ for e in mine]


class Running:
    """A started VenueProcess, and the sockets the tests talk to it through."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.ctx = zmq.Context()

    def start(self) -> None:
        self.process = VenueProcess(self.directory, interval_ms=20, seed=1, accounts=ACCOUNTS, history_secs=120)
        self.endpoint, self.quotes_endpoint = self.process.endpoint, self.process.quotes_endpoint
        self.process.wait_ready()

    def client(self, account: str | None = None) -> Client:
        return Client(self.ctx, self.endpoint, account or next(_free_accounts))

    def subscriber(self) -> zmq.Socket:
        sub = self.ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(self.quotes_endpoint)
        return sub

    def faults(self, client: Client, **faults) -> v.Reply:
        return client.request(lambda i: v.SetFaults(request_id=i, **faults))

    def drill(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "paper_venue", "drill", "--endpoint", self.endpoint, *args],
                              cwd=ROOT, capture_output=True, text=True, timeout=30)

    def output(self) -> str:
        return self.process.log_path.read_text(errors="replace")


@pytest.fixture(scope="module")
def running():
    directory = Path(tempfile.mkdtemp(prefix="pv-"))  # ipc paths must stay short
    running = Running(directory)
    try:
        running.start()
        yield running
    finally:
        running.ctx.destroy(linger=0)
        code = running.process.stop()
        output = running.output()
        shutil.rmtree(directory, ignore_errors=True)
    assert code == 0, f"SIGTERM must end the venue with 0, got {code}:\n{output}"
    assert "venue task" not in output, f"a task of the venue died:\n{output}"


@pytest.fixture
def venue(running):
    yield running
    assert running.drill("--reject-orders", "off", "--ack-delay-ms", "0", "--reply-delay-ms", "0",
                         "--silent", "off").returncode == 0


def market_data(sub: zmq.Socket, timeout: float) -> list[tuple[bytes, object]]:
    got, deadline = [], time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0 and sub.poll(int(left * 1000)):
        topic, payload = sub.recv_multipart()
        got.append((topic, loads(payload)))
    return got


def test_hello_market_data_and_a_market_buy_make_a_long_position(venue):
    client = venue.client()
    hello = client.hello()
    assert hello.ok and hello.quotes_endpoint == venue.quotes_endpoint
    instruments = [loads(i) for i in client.request(lambda i: v.QueryInstruments(request_id=i)).items]
    assert [str(i.id) for i in instruments] == ["EUR/USD.SIM", "GBP/USD.SIM"]
    received = market_data(venue.subscriber(), 1.0)
    assert {topic for topic, _ in received if topic.startswith(b"quote.")} == {b"quote.EUR/USD.SIM", b"quote.GBP/USD.SIM"}
    assert any(isinstance(data, TradeTick) for _, data in received)
    for topic, data in received:
        if isinstance(data, QuoteTick):
            assert topic == f"quote.{data.instrument_id}".encode() and data.bid_price < data.ask_price
    order = client.buy()
    assert client.wait_events(order, 1) == ["OrderFilled"]
    (position,) = client.reports("positions")
    assert (str(position.instrument_id), position.position_side.name, position.quantity) == (
        "EUR/USD.SIM", "LONG", Quantity.from_int(100_000))


def test_bars_are_published_once_subscribed_and_answered_from_history(venue):
    client = venue.client()
    bar_type = "EUR/USD.SIM-1-SECOND-MID-EXTERNAL"
    history = [loads(b) for b in client.request(lambda i: v.RequestBars(request_id=i, bar_type=bar_type, limit=30)).items]
    assert len(history) == 30 and all(isinstance(b, Bar) for b in history)
    assert [b.ts_event for b in history] == sorted(b.ts_event for b in history)
    sub = venue.subscriber()
    assert client.request(lambda i: v.SubscribeBars(request_id=i, bar_type=bar_type)).ok
    bars = [data for topic, data in market_data(sub, 2.5) if topic == f"bar.{bar_type}".encode()]
    assert len(bars) >= 1 and bars[0].ts_event > history[-1].ts_event and bars[0].ts_event % 1_000_000_000 == 0
    refused = client.request(lambda i: v.SubscribeBars(request_id=i, bar_type="EUR/USD.SIM-100-TICK-MID-EXTERNAL"))
    assert not refused.ok and "time bars" in refused.error
    unknown = client.request(lambda i: v.RequestBars(request_id=i, bar_type="XAU/USD.SIM-1-MINUTE-MID-EXTERNAL"))
    assert not unknown.ok and "does not list" in unknown.error


def test_the_venue_outlives_its_client(venue):
    first = venue.client()
    first.hello()
    market = first.buy()
    limit = first.orders.limit(EUR, OrderSide.BUY, Quantity.from_int(1000), Price.from_str("0.90000"))
    first.submit(limit)  # rests far below the market
    first.wait_events(limit, 1)
    first.socket.close(linger=0)
    second = venue.client(first.account)
    assert second.hello().ok
    assert [(p.position_side.name, p.quantity.as_double()) for p in second.reports("positions")] == [("LONG", 100_000)]
    assert [(r.client_order_id, r.order_status.name) for r in second.reports("orders")] == [
        (market.client_order_id, "FILLED"), (limit.client_order_id, "ACCEPTED")]
    assert [r.client_order_id for r in second.reports("orders", open_only=True)] == [limit.client_order_id]
    assert [f.client_order_id for f in second.reports("fills")] == [market.client_order_id]
    (account,) = [loads(a) for a in second.request(lambda i: v.QueryAccount(request_id=i, account_id=first.account)).items]
    assert account.balances[0].total.as_double() < 10_000_000  # the commission
    assert second.cancel(limit).ok and second.wait_events(limit, 1) == ["OrderCanceled"]


def test_orders_need_a_hello_for_the_account_and_an_account_is_one_traders(venue):
    client = venue.client()
    order = client.orders.market(EUR, OrderSide.BUY, Quantity.from_int(1000))
    assert client.submit(order).error == v.NOT_GREETED
    client.account = "SIM-NOPE"
    assert "unknown account" in client.hello().error
    client.account = "SIM-HEDGE"
    assert "is HEDGING at the venue" in client.hello(oms_type="NETTING").error
    assert client.hello(oms_type="HEDGING").ok
    other = venue.client("SIM-HEDGE")
    assert "in use by trader TESTER-001" in other.hello(oms_type="HEDGING", trader="OTHER-001").error
    time.sleep(LEASE_SECS)  # the owner is silent and the account flat: it may pass to another trader
    assert other.hello(oms_type="HEDGING", trader="OTHER-001").ok
    assert client.submit(order).error == v.NOT_GREETED  # the old owner's session trades no more
    assert "in use by trader OTHER-001" in client.hello(oms_type="HEDGING").error


def test_a_shared_account_takes_several_traders_and_tells_each_of_its_own_orders(venue):
    alpha = Client(venue.ctx, venue.endpoint, "SIM-TEAM", "ALPHA-001")
    beta = Client(venue.ctx, venue.endpoint, "SIM-TEAM", "BETA-002")
    assert alpha.hello().ok and beta.hello().ok
    alphas, betas = alpha.buy(), beta.buy()  # one instrument: whose an event is goes by trader
    assert alpha.wait_events(alphas, 1) == beta.wait_events(betas, 1) == ["OrderFilled"]
    assert venue.drill("--hand-trade", "SELL:EUR/USD.SIM:200000", "--account", "SIM-TEAM").returncode == 0
    for client, own in ((alpha, alphas), (beta, betas)):
        client.receive(2.0)  # the next event each hears of is the hand trade's: nobody's order, so everybody's
        own_fill, hand_fill = client.events  # and none of the other trader's
        assert own_fill.client_order_id == own.client_order_id and hand_fill.client_order_id.value.startswith("HAND-")
    assert [p.position_side.name for p in alpha.reports("positions")] == ["FLAT"]


def test_on_a_shared_account_an_order_event_goes_to_its_traders_sessions_and_a_hand_trade_to_all():
    sessions = {b"a1": Session("SIM-T", "A-001"), b"b": Session("SIM-T", "B-001"), b"a2": Session("SIM-T", "A-001"),
                b"elsewhere": Session("SIM-X", "A-001")}
    assert audience(sessions, "SIM-T", "A-001", shared=True) == [b"a1", b"a2"]
    assert audience(sessions, "SIM-T", "B-001", shared=True) == [b"b"]
    assert audience(sessions, "SIM-T", "C-001", shared=True) == [], "a trader away is not heard by the others"
    assert audience(sessions, "SIM-T", "HAND-001", shared=True) == [b"a1", b"b", b"a2"]
    assert audience(sessions, "SIM-Y", "A-001", shared=True) == []


def test_on_an_account_not_shared_every_session_hears_of_everything():
    sessions = {b"a": Session("SIM-T", "A-001"), b"elsewhere": Session("SIM-X", "A-001")}
    assert audience(sessions, "SIM-T", "OLD-001", shared=False) == [b"a"]  # the last owner's resting order, filled


def test_account_options():
    assert [_account(text) for text in ("SIM-1", "SIM-1:hedging", "SIM-1:NETTING:shared", "SIM-1:shared")] == [
        ("SIM-1", "NETTING", False), ("SIM-1", "HEDGING", False), ("SIM-1", "NETTING", True), ("SIM-1", "NETTING", True)]


def test_reject_orders_drill_through_the_cli(venue):
    client = venue.client()
    client.hello()
    on = venue.drill("--reject-orders", "on")
    assert on.returncode == 0 and '"ok":true' in on.stdout
    order = client.buy()  # received...
    assert client.wait_events(order, 1) == ["OrderRejected"]
    assert client.events[-1].reason == "venue drill: rejecting orders"
    assert venue.drill("--reject-orders", "off").returncode == 0
    assert client.wait_events(client.buy(), 1) == ["OrderFilled"]


@pytest.mark.parametrize("seen", [True, False])
def test_a_hand_trade_fills_on_the_account_and_its_events_go_out_only_if_seen(venue, seen):
    node = venue.client()
    node.hello()
    unseen = [] if seen else ["--unseen"]
    done = venue.drill("--hand-trade", "SELL:EUR/USD.SIM:200000", "--account", node.account, *unseen)
    assert done.returncode == 0 and '"ok":true' in done.stdout, done.stdout + done.stderr
    (position,) = node.reports("positions")  # the venue's books hold it either way
    assert (position.position_side.name, position.quantity) == ("SHORT", Quantity.from_int(200_000))
    (order,) = node.reports("orders")
    assert order.client_order_id.value.startswith("HAND-") and order.order_status.name == "FILLED"
    node.receive(0.3)
    assert [type(e).__name__ for e in node.events if e.client_order_id == order.client_order_id] == (
        ["OrderFilled"] if seen else [])
    not_sent = [line for line in venue.output().splitlines() if order.client_order_id.value in line and "not sent" in line]
    assert bool(not_sent) != seen, "an unseen hand trade's events are logged as not sent"


def test_a_hand_trade_is_answered_at_once_whatever_the_drills(venue):
    node = venue.client()
    node.hello()
    every_drill = {"reject_orders": True, "ack_delay_ms": 1000, "reply_delay_ms": 1000, "silent": True}
    assert venue.faults(node, **every_drill).ok
    sent = time.monotonic()
    reply = node.request(lambda i: v.HandTrade(request_id=i, account_id=node.account, instrument_id=str(EUR),
                                               side="BUY", quantity="1000"), timeout=0.5)
    assert reply.ok and time.monotonic() - sent < 0.5  # not rejected, not delayed: those drills are the node's
    assert venue.faults(node, reject_orders=False, ack_delay_ms=0, reply_delay_ms=0, silent=False).ok
    assert node.events == []  # seen, but the venue was silent: its events were lost
    assert [p.quantity.as_double() for p in node.reports("positions")] == [1000]  # filled when it was answered


def test_a_hand_trade_that_makes_no_sense_is_refused_with_the_reason(venue):
    account = venue.client().account
    for args, says in (
        (["BUY:EUR/USD.SIM:1.5", "--account", account], "not a positive multiple of EUR/USD.SIM's size increment 1"),
        (["BUY:EUR/USD.SIM:10", "--account", account], "below EUR/USD.SIM's minimum 1000"),
        (["SELL:XAU/USD.SIM:1000", "--account", account], "the venue does not list 'XAU/USD.SIM'"),
        (["BUY:EUR/USD.SIM:1000", "--account", "SIM-NOPE"], "unknown account 'SIM-NOPE'"),
        (["BUY:EUR/USD.SIM:1000"], "the venue has accounts SIM-001, SIM-002"),  # several: which one is not guessed
    ):
        done = venue.drill("--hand-trade", *args)
        assert done.returncode == 1 and '"ok":false' in done.stdout and says in done.stdout, (args, done.stdout)
    assert venue.client(account).reports("orders") == []  # nothing reached the books
    for args in (["--hand-trade", "HOLD:EUR/USD.SIM:1000"], ["--hand-trade", "BUY:1000"], ["--unseen"],
                 ["--hand-trade", "BUY:EUR/USD.SIM:1000", "--silent", "on"]):
        done = venue.drill(*args)  # usage errors: nothing is sent
        assert done.returncode == 2 and "error:" in done.stderr and "Traceback" not in done.stderr, (args, done.stderr)


def test_ack_delay_holds_the_order_in_flight_but_known(venue):
    client = venue.client()
    client.hello()
    assert venue.faults(client, ack_delay_ms=400).ok
    sent = time.monotonic()
    order = client.buy()
    (held,) = client.reports("orders", client_order_id=order.client_order_id.value)  # in flight, not unknown
    assert held.order_status.name == "SUBMITTED" and held.filled_qty == Quantity.from_int(0)
    assert client.cancel(order).ok and client.wait_events(order, 1) == ["OrderCancelRejected"]  # not at the engine yet
    assert client.wait_events(order, 2) == ["OrderCancelRejected", "OrderFilled"]
    assert time.monotonic() - sent >= 0.35
    venue.faults(client, ack_delay_ms=0)
    sent = time.monotonic()
    assert client.wait_events(client.buy(), 1) == ["OrderFilled"] and time.monotonic() - sent < 0.35


def test_reply_delay_carries_out_at_once_and_answers_late(venue):
    client = venue.client()
    client.hello()
    assert venue.drill("--reply-delay-ms", "400").returncode == 0
    sent = time.monotonic()
    order = client.orders.market(EUR, OrderSide.BUY, Quantity.from_int(1000))
    command = SubmitOrder(order.trader_id, order.strategy_id, order, UUID4(), time.time_ns())
    request_id = client.send(lambda i: v.Execute(request_id=i, account_id=client.account, command=dumps(command)))
    assert client.wait_events(order, 1, timeout=0.3) == ["OrderFilled"]
    assert time.monotonic() - sent < 0.3  # carried out at once: the events overtake the reply
    reply = client.reply(request_id)
    assert reply.ok and time.monotonic() - sent >= 0.35
    sent = time.monotonic()
    assert venue.faults(client, reply_delay_ms=0).ok and time.monotonic() - sent < 0.3  # SetFaults: at once
    assert not venue.faults(client, reply_delay_ms=-1).ok


def test_two_drop_connection_drills_in_a_row(venue):
    client = venue.client()
    client.hello()
    for _ in range(2):  # back to back: the second comes while the first drop is under way
        client.send(lambda i: v.SetFaults(request_id=i, drop_connection=True))
    time.sleep(1.0)
    assert venue.drill("--drop-connection").returncode == 0  # and once more after it
    time.sleep(1.0)
    fresh = venue.client(client.account)
    assert fresh.hello().ok and fresh.buy()  # the module's fixture checks that no task died


def test_silent_means_no_market_data_no_events_no_replies_until_switched_off(venue):
    client = venue.client()
    client.hello()
    sub = venue.subscriber()
    assert market_data(sub, 0.3)
    assert venue.faults(client, silent=True).ok  # the switch itself is answered
    market_data(sub, 0.1)  # drain what was already on its way
    assert market_data(sub, 0.4) == []
    lost = client.send(lambda i: v.QueryInstruments(request_id=i))
    assert client.reply(lost, timeout=0.4) is None
    assert venue.faults(client, silent=False).ok  # the one request answered while silent
    assert client.reply(lost, timeout=0.3) is None  # dropped, not delayed
    assert market_data(sub, 0.3)
    assert client.request(lambda i: v.QueryInstruments(request_id=i)).ok


def test_drop_connection_cuts_the_sessions_and_the_venue_comes_back(venue):
    client = venue.client()
    client.hello()
    client.wait_events(client.buy(), 1)
    assert venue.faults(client, drop_connection=True).ok  # answered before the drop
    time.sleep(1.0)  # the DEALER reconnects by itself to the new ROUTER
    order = client.orders.market(EUR, OrderSide.BUY, Quantity.from_int(1000))
    command = SubmitOrder(order.trader_id, order.strategy_id, order, UUID4(), time.time_ns())
    reply = None
    for _ in range(10):  # a request lost in the gap is simply not answered
        if (reply := client.reply(client.send(lambda i: v.Execute(request_id=i, account_id=client.account,
                                                                   command=dumps(command))), timeout=1.0)) is not None:
            break
    assert reply is not None and reply.error == v.NOT_GREETED  # the session was cut
    assert client.hello().ok
    assert [p.quantity.as_double() for p in client.reports("positions")] == [100_000]


def test_garbage_gets_ok_false_or_is_dropped_and_the_venue_lives_on(venue):
    client = venue.client()
    client.hello()
    for frames, request_id in (
        ([b"not json"], 0),
        ([b'{"type": "nope", "request_id": 5}'], 5),
        ([b'{"type": "execute", "request_id": 6}'], 6),
        ([b'{"type": "hello", "request_id": 7, "account_id": "SIM-001", "extra": 1}'], 7),
        ([b'[1, 2, 3]'], 0),
        ([b"", b'{"type": "instruments", "request_id": 8}'], 8),
        ([b'{"type": "reports", "request_id": "x"}'], 0),
    ):
        client.socket.send_multipart(frames)
        reply = client.reply(request_id, timeout=2.0)
        assert reply is not None and not reply.ok and "malformed" in reply.error, frames
    for command, why in ((b'{"type": "SubmitOrder"}', "not a NautilusTrader object"),
                         (b'{"type": "Nope"}', "unknown type"), (b"[]", "not a NautilusTrader object")):
        reply = client.request(lambda i, c=command: v.Execute(request_id=i, account_id=client.account, command=msgspec.Raw(c)))
        assert not reply.ok and why in reply.error
    assert "unknown report kind" in client.request(lambda i: v.QueryReports(request_id=i, kind="nope")).error
    client.socket.send(b"x" * (2 << 20))  # over the size limit: the venue drops that connection
    assert client.hello().ok  # the DEALER reconnects by itself
    fresh = venue.client(client.account)
    assert fresh.hello().ok
    assert fresh.wait_events(fresh.buy(), 1) == ["OrderFilled"]


def test_bad_options_get_one_line_and_exit_2():
    for args, says in ((["--instruments", "EUR/USD", "XAU/USD"], "unknown instrument(s) XAU/USD"),
                       (["--account", "SIM-001:SPREAD"], "OMS type 'SPREAD' is not one of NETTING, HEDGING"),
                       (["--account", "ACC"], "an account id is SIM-<name>"),
                       (["--account", "SIM-001:NETTING:shard"], "expected ID[:OMS][:shared]")):
        done = subprocess.run([sys.executable, "-m", "paper_venue", "serve", "--dir", tempfile.mkdtemp(), *args],
                              cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert done.returncode == 2 and says in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_a_venue_task_that_dies_is_logged():
    directory = Path(tempfile.mkdtemp(prefix="pv-"))
    venue = build_venue(["EUR/USD"], {"SIM-001": "NETTING"}, *endpoints_in(directory), interval_ms=10, history_secs=5)

    def broken(ts):
        raise RuntimeError("the market broke")

    venue.market.step = broken
    errors: list[str] = []
    sink = logger.add(errors.append, level="ERROR")

    async def run_briefly() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(0.3, stop.set)
        await venue.run(stop)

    try:
        asyncio.run(run_briefly())
    finally:
        logger.remove(sink)
        shutil.rmtree(directory, ignore_errors=True)
    assert any("venue task Venue._ticks died" in e and "the market broke" in e for e in errors), errors


def test_the_drills_and_the_launcher_need_no_nautilus_trader():
    loaded = imports_in_fresh_interpreter(["paper_venue.cli", "paper_venue.protocol", "paper_venue.launcher"])
    assert "paper_venue.cli" in loaded and not [m for m in loaded if m.startswith("nautilus_trader")]


@pytest.mark.parametrize(("command", "usage"), [
    (["-m", "supervisor", "paper-venue", "--help"], "usage: nsup paper-venue serve"),
    (["-m", "supervisor", "paper-venue", "drill", "--help"], "usage: nsup paper-venue drill"),
    (["-m", "paper_venue", "serve", "--help"], "usage: python -m paper_venue serve"),
])
def test_the_venue_usage_names_the_command_that_was_typed(command, usage):
    done = subprocess.run([sys.executable, *command], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.startswith(usage), done.stdout[:200]
