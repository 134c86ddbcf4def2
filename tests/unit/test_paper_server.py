"""The paper venue as a process (paper_venue.launcher's VenueProcess) over real ZeroMQ on ipc, a DEALER
and a SUB against it; the venue outlives its client; the drills; garbage in; SIGTERM -> exit 0; and no
task of the venue dies."""

from __future__ import annotations

import asyncio
import itertools
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import zmq
from loguru import logger

from paper_venue import protocol as v
from paper_venue.book import Book
from paper_venue.launcher import VenueProcess, endpoints_in
from paper_venue.server import Venue

ROOT = Path(__file__).resolve().parents[2]
EUR = "EUR/USD.SIM"


class Client:
    """A DEALER session: requests wait for their Reply; events that arrive meanwhile are kept in order."""

    def __init__(self, ctx: zmq.Context, endpoint: str):
        self.socket = ctx.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.connect(endpoint)
        self.events: list[v.Event] = []
        self._ids = itertools.count(1)

    def send(self, make) -> int:
        request_id = next(self._ids)
        self.socket.send(v.encode(make(request_id)))
        return request_id

    def receive(self, timeout: float) -> v.Reply | v.Event | None:
        if not self.socket.poll(int(timeout * 1000)):
            return None
        message = v.from_venue_decoder.decode(self.socket.recv())
        if not isinstance(message, v.Reply):
            self.events.append(message)
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

    def hello(self) -> v.Reply:
        return self.request(lambda i: v.Hello(request_id=i, account_id="SIM-001"))

    def submit(self, cid: str, side: str = "BUY", qty: str = "100000", price: str | None = None, **kw) -> v.Reply:
        return self.request(lambda i: v.Submit(
            request_id=i, client_order_id=cid, strategy_id="S-1", instrument_id=EUR, side=side,
            order_type="MARKET" if price is None else "LIMIT", quantity=qty, price=price, **kw,
        ))

    def wait_events(self, cid: str, count: int, timeout: float = 5.0) -> list[v.Event]:
        deadline = time.monotonic() + timeout
        while len(mine := [e for e in self.events if _cid(e) == cid]) < count and time.monotonic() < deadline:
            self.receive(deadline - time.monotonic())
        return mine


def _cid(event: v.Event) -> str:
    return event.order.client_order_id if hasattr(event, "order") else event.client_order_id


class Running:
    """A started VenueProcess, and the sockets the tests talk to it through."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.ctx = zmq.Context()

    def start(self) -> None:
        self.process = VenueProcess(self.directory, interval_ms=20, seed=1)
        self.endpoint, self.quotes_endpoint = self.process.endpoint, self.process.quotes_endpoint
        self.process.wait_ready()

    def client(self) -> Client:
        return Client(self.ctx, self.endpoint)

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


@pytest.fixture
def venue():
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


def quotes(sub: zmq.Socket, timeout: float) -> list[tuple[bytes, v.Quote]]:
    got, deadline = [], time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0 and sub.poll(int(left * 1000)):
        topic, payload = sub.recv_multipart()
        got.append((topic, v.quote_decoder.decode(payload)))
    return got


def test_hello_quotes_and_a_market_buy_make_a_long_position(venue):
    client = venue.client()
    hello = client.hello()
    assert hello.ok and hello.instruments == [EUR, "GBP/USD.SIM"] and hello.quotes_endpoint == venue.quotes_endpoint
    received = quotes(venue.subscriber(), 1.0)
    assert {topic for topic, _ in received} == {EUR.encode(), b"GBP/USD.SIM"}
    for topic, quote in received:
        assert quote.instrument_id == topic.decode() and float(quote.bid) < float(quote.ask)
    assert client.submit("O-1").ok
    events = client.wait_events("O-1", 2)
    assert [type(e) for e in events] == [v.OrderAccepted, v.OrderFilled]
    assert events[1].order.status == "FILLED" and events[1].fill.quantity == "100000"
    positions = client.request(lambda i: v.QueryPositions(request_id=i)).positions
    assert [(p.instrument_id, p.side, p.quantity) for p in positions] == [(EUR, "LONG", "100000")]


def test_the_venue_outlives_its_client(venue):
    first = venue.client()
    first.hello()
    first.submit("O-1")
    first.submit("L-1", price="0.90000")  # rests far below the market
    first.wait_events("L-1", 1)
    first.socket.close(linger=0)
    second = venue.client()
    assert second.hello().ok
    positions = second.request(lambda i: v.QueryPositions(request_id=i)).positions
    assert [(p.side, p.quantity) for p in positions] == [("LONG", "100000")]
    orders = second.request(lambda i: v.QueryOrders(request_id=i)).orders
    assert [(o.client_order_id, o.status) for o in orders] == [("O-1", "FILLED"), ("L-1", "ACCEPTED")]
    assert [o.client_order_id for o in second.request(lambda i: v.QueryOrders(request_id=i, open_only=True)).orders] == ["L-1"]
    fills = second.request(lambda i: v.QueryFills(request_id=i)).fills
    assert [f.client_order_id for f in fills] == ["O-1"]
    balances = second.request(lambda i: v.QueryAccount(request_id=i)).balances
    assert balances[0].currency == "USD" and float(balances[0].total) < 10_000_000  # the commission
    cancel = second.request(lambda i: v.Cancel(request_id=i, client_order_id="L-1"))
    assert cancel.ok and [type(e) for e in second.wait_events("L-1", 1)] == [v.OrderCanceled]


def test_requests_are_carried_out_in_the_order_they_arrive(venue):
    client = venue.client()
    client.hello()
    submit = client.send(lambda i: v.Submit(request_id=i, client_order_id="L-1", strategy_id="S-1", instrument_id=EUR,
                                            side="SELL", order_type="LIMIT", quantity="1000", price="9.00000"))
    cancel = client.send(lambda i: v.Cancel(request_id=i, client_order_id="L-1"))
    assert client.reply(submit).ok and client.reply(cancel).ok
    assert [type(e) for e in client.wait_events("L-1", 2)] == [v.OrderAccepted, v.OrderCanceled]


def test_orders_need_a_hello_and_the_right_account(venue):
    client = venue.client()
    assert client.submit("O-1").error == v.NOT_GREETED
    assert "unknown account" in client.request(lambda i: v.Hello(request_id=i, account_id="OTHER")).error


def test_reject_orders_drill_through_the_cli(venue):
    client = venue.client()
    client.hello()
    on = venue.drill("--reject-orders", "on")
    assert on.returncode == 0 and '"ok":true' in on.stdout
    assert client.submit("O-1").ok  # received...
    rejected = client.wait_events("O-1", 1)
    assert [(type(e), e.reason) for e in rejected] == [(v.OrderRejected, "venue drill: rejecting orders")]
    assert venue.drill("--reject-orders", "off").returncode == 0
    client.submit("O-2")
    assert [type(e) for e in client.wait_events("O-2", 2)] == [v.OrderAccepted, v.OrderFilled]


@pytest.mark.parametrize("seen", [True, False])
def test_a_hand_trade_fills_on_the_account_and_its_events_go_out_only_if_seen(venue, seen):
    node = venue.client()
    node.hello()
    quotes(venue.subscriber(), 0.2)  # the venue has a touch to trade at
    args = ["--hand-trade", f"SELL:{EUR}:200000"] + ([] if seen else ["--unseen"])
    done = venue.drill(*args)
    assert done.returncode == 0 and '"ok":true' in done.stdout, done.stderr
    position = next(p for p in node.request(lambda i: v.QueryPositions(request_id=i)).positions if p.instrument_id == EUR)
    assert (position.side, position.quantity) == ("SHORT", "200000")
    node.receive(0.3)
    hand = [e for e in node.events if _cid(e).startswith("HAND-")]
    assert [type(e) for e in hand] == ([v.OrderAccepted, v.OrderFilled] if seen else [])


def test_a_hand_trade_that_makes_no_sense_is_refused_with_the_reason(venue):
    assert venue.drill("--hand-trade", "BUY:EUR/USD.SIM:1.5").returncode == 1
    assert venue.drill("--hand-trade", "HOLD:EUR/USD.SIM:1").returncode == 2  # a usage error, before anything is sent


def orders(client: Client, **query) -> list[v.OrderState]:
    return client.request(lambda i: v.QueryOrders(request_id=i, **query)).orders


def test_ack_delay_holds_the_order_in_flight_but_known(venue):
    client = venue.client()
    client.hello()
    assert venue.faults(client, ack_delay_ms=400).ok
    sent, received = time.monotonic(), time.time_ns()
    assert client.submit("O-1").ok
    (held,) = orders(client, client_order_id="O-1")  # in flight: SUBMITTED, not unknown
    assert (held.status, held.quantity, held.filled_qty) == ("SUBMITTED", "100000", "0")
    assert held.venue_order_id and held.ts_accepted == held.ts_last and abs(held.ts_accepted - received) < 1e9
    assert orders(client) == orders(client, open_only=True) == [held]
    events = client.wait_events("O-1", 2)
    assert time.monotonic() - sent >= 0.35
    assert [type(e) for e in events] == [v.OrderAccepted, v.OrderFilled]
    assert events[0].order.venue_order_id == held.venue_order_id
    venue.faults(client, ack_delay_ms=0)
    sent = time.monotonic()
    client.submit("O-2")
    assert len(client.wait_events("O-2", 2)) == 2 and time.monotonic() - sent < 0.35


def test_a_cancel_reaches_an_order_the_ack_delay_holds(venue):
    client = venue.client()
    client.hello()
    venue.faults(client, ack_delay_ms=300)
    client.submit("O-1")
    assert client.request(lambda i: v.Cancel(request_id=i, client_order_id="O-1")).ok
    (canceled,) = client.wait_events("O-1", 1)
    assert isinstance(canceled, v.OrderCanceled) and canceled.order.status == "CANCELED"
    time.sleep(0.5)  # past the delay: it is never carried out
    assert len(client.wait_events("O-1", 2, timeout=0.2)) == 1
    assert [o.status for o in orders(client)] == ["CANCELED"] and orders(client, open_only=True) == []
    assert client.request(lambda i: v.QueryPositions(request_id=i)).positions == []


def test_query_one_order_and_fills_since(venue):
    client = venue.client()
    client.hello()
    client.submit("O-1")
    (_, first), = [(e.order, e.fill) for e in client.wait_events("O-1", 2) if isinstance(e, v.OrderFilled)]
    client.submit("O-2")
    client.wait_events("O-2", 2)
    assert [o.client_order_id for o in orders(client, client_order_id="O-2")] == ["O-2"]
    assert orders(client, client_order_id="nope") == [] and orders(client, open_only=True, client_order_id="O-2") == []
    fills = client.request(lambda i: v.QueryFills(request_id=i, since_ts=first.ts + 1)).fills
    assert [f.client_order_id for f in fills] == ["O-2"]


def test_reply_delay_carries_out_at_once_and_answers_late(venue):
    client = venue.client()
    client.hello()
    assert venue.drill("--reply-delay-ms", "400").returncode == 0
    sent = time.monotonic()
    request_id = client.send(lambda i: v.Submit(request_id=i, client_order_id="O-1", strategy_id="S-1",
                                                instrument_id=EUR, side="BUY", order_type="MARKET", quantity="1"))
    assert [type(e) for e in client.wait_events("O-1", 2, timeout=0.3)] == [v.OrderAccepted, v.OrderFilled]
    assert time.monotonic() - sent < 0.3  # carried out at once: the events overtake the reply
    reply = client.reply(request_id)
    assert reply.ok and time.monotonic() - sent >= 0.35
    sent = time.monotonic()
    assert venue.faults(client, reply_delay_ms=0).ok and time.monotonic() - sent < 0.3  # SetFaults: at once
    assert not venue.faults(client, reply_delay_ms=-1).ok


def test_ids_are_never_reused_by_a_restarted_venue(venue):
    def fill_ids() -> tuple[str, str]:
        client = venue.client()
        client.hello()
        client.submit("O-1")
        (fill,) = [e for e in client.wait_events("O-1", 2) if isinstance(e, v.OrderFilled)]
        return fill.order.venue_order_id, fill.fill.trade_id

    first = fill_ids()
    assert venue.process.stop() == 0
    venue.start()  # a new venue in the same place: its books start empty
    second = fill_ids()
    assert first[0].startswith("V-") and first[1].startswith("T-") and len(first[0]) <= 16
    assert first[0] != second[0] and first[1] != second[1]


def test_two_drop_connection_drills_in_a_row(venue):
    client = venue.client()
    client.hello()
    for _ in range(2):  # back to back: the second comes while the first drop is under way
        client.send(lambda i: v.SetFaults(request_id=i, drop_connection=True))
    time.sleep(1.0)
    assert venue.drill("--drop-connection").returncode == 0  # and once more after it
    time.sleep(1.0)
    fresh = venue.client()
    assert fresh.hello().ok and fresh.submit("O-1").ok  # the fixture checks that no task died


def test_a_venue_task_that_dies_is_logged():
    directory = Path(tempfile.mkdtemp(prefix="pv-"))
    book = Book()

    def broken(quote):
        raise RuntimeError("the quote task broke")

    book.on_quote = broken
    venue = Venue(book, "SIM-001", *endpoints_in(directory), interval_ms=10)
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
    assert any("venue task Venue._ticks died" in e and "the quote task broke" in e for e in errors), errors


def test_silent_means_no_quotes_no_events_no_replies_until_switched_off(venue):
    client = venue.client()
    client.hello()
    sub = venue.subscriber()
    assert quotes(sub, 0.3)
    assert venue.faults(client, silent=True).ok  # the switch itself is answered
    quotes(sub, 0.1)  # drain what was already on its way
    assert quotes(sub, 0.4) == []
    lost = client.send(lambda i: v.QueryPositions(request_id=i))
    assert client.reply(lost, timeout=0.4) is None
    assert venue.faults(client, silent=False).ok  # the one request answered while silent
    assert client.reply(lost, timeout=0.3) is None  # dropped, not delayed
    assert quotes(sub, 0.3)
    assert client.request(lambda i: v.QueryPositions(request_id=i)).ok


def test_drop_connection_cuts_the_sessions_and_the_venue_comes_back(venue):
    client = venue.client()
    client.hello()
    client.submit("O-1")
    client.wait_events("O-1", 2)
    assert venue.faults(client, drop_connection=True).ok  # answered before the drop
    time.sleep(1.0)  # the DEALER reconnects by itself to the new ROUTER
    reply = None
    for _ in range(10):  # a request lost in the gap is simply not answered
        if (reply := client.reply(client.send(lambda i: v.Submit(
                request_id=i, client_order_id="O-2", strategy_id="S-1", instrument_id=EUR, side="BUY",
                order_type="MARKET", quantity="1")), timeout=1.0)) is not None:
            break
    assert reply is not None and reply.error == v.NOT_GREETED  # the session was cut
    assert client.hello().ok
    positions = client.request(lambda i: v.QueryPositions(request_id=i)).positions
    assert [(p.side, p.quantity) for p in positions] == [("LONG", "100000")]


def test_garbage_gets_ok_false_or_is_dropped_and_the_venue_lives_on(venue):
    client = venue.client()
    client.hello()
    for frames, request_id in (
        ([b"not json"], 0),
        ([b'{"type": "nope", "request_id": 5}'], 5),
        ([b'{"type": "submit", "request_id": 6}'], 6),
        ([b'{"type": "hello", "request_id": 7, "account_id": "SIM-001", "extra": 1}'], 7),
        ([b'[1, 2, 3]'], 0),
        ([b"", b'{"type": "orders", "request_id": 8}'], 8),
        ([b'{"type": "orders", "request_id": "x"}'], 0),
    ):
        client.socket.send_multipart(frames)
        reply = client.reply(request_id, timeout=2.0)
        assert reply is not None and not reply.ok and "malformed" in reply.error, frames
    client.socket.send(b"x" * (2 << 20))  # over the size limit: the venue drops that connection
    assert client.hello().ok  # the DEALER reconnects by itself
    fresh = venue.client()
    assert fresh.hello().ok
    fresh.submit("B-2", qty="-5")
    assert [type(e) for e in fresh.wait_events("B-2", 1)] == [v.OrderRejected]
    canceled = fresh.request(lambda i: v.Cancel(request_id=i, client_order_id="nope"))
    assert canceled.ok and [e.command for e in fresh.wait_events("nope", 1)] == ["cancel"]
