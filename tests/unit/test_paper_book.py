"""The paper venue's books: matching at the touch, order rules, netting positions, cash; and invariants
that hold over any sequence of submits, cancels, modifies and quotes (hypothesis)."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from paper_venue import protocol as v
from paper_venue.book import Book

EUR = "EUR/USD.SIM"
GBP = "GBP/USD.SIM"
EURGBP = "EUR/GBP.SIM"  # quoted in GBP


def quote(book: Book, bid: str, ask: str, instrument: str = EUR, ts: int = 1) -> list[v.Event]:
    return book.on_quote(v.Quote(instrument, bid, ask, "1000000", "1000000", ts))


def order(cid: str, side: str = "BUY", qty: str | int = 1, price: str | None = None, instrument: str = EUR,
          tif: str = "GTC", reduce_only: bool = False) -> v.Submit:
    order_type = "MARKET" if price is None else "LIMIT"
    return v.Submit(
        request_id=1, client_order_id=cid, strategy_id="S-1", instrument_id=instrument, side=side,
        order_type=order_type, quantity=str(qty), price=price, time_in_force=tif, reduce_only=reduce_only,
    )


def submit(book: Book, cid: str, side: str, qty: str | int, price: str | None = None, instrument: str = EUR,
           tif: str = "GTC", reduce_only: bool = False, ts: int = 2) -> list[v.Event]:
    return book.submit(order(cid, side, qty, price, instrument, tif, reduce_only), ts)


def kinds(events: list[v.Event]) -> list[str]:
    return [type(e).__name__ for e in events]


def position(book: Book, instrument: str = EUR) -> v.Position:
    return next(p for p in book.positions() if p.instrument_id == instrument)


def market_book(**kw) -> Book:
    book = Book(**kw)
    quote(book, "1.09998", "1.10002")
    return book


def test_market_orders_fill_in_full_at_the_touch():
    book = market_book(epoch="k3x")
    buy = submit(book, "B", "BUY", 100_000)
    assert kinds(buy) == ["OrderAccepted", "OrderFilled"]
    assert buy[0].order.status == "ACCEPTED" and buy[0].order.venue_order_id == "V-k3x-1"
    fill = buy[1].fill
    assert (fill.price, fill.quantity, fill.side, fill.trade_id, fill.currency) == (
        "1.10002", "100000", "BUY", "T-k3x-1", "USD")
    assert fill.commission == "2.20"  # 0.00002 * 100000 * 1.10002 = 2.200040 -> 2.20
    assert buy[1].order.status == "FILLED" and buy[1].order.filled_qty == "100000" and buy[1].order.avg_px == "1.10002"
    sell = submit(book, "S", "SELL", 50_000)
    assert sell[1].fill.price == "1.09998"
    assert (sell[1].order.venue_order_id, sell[1].fill.trade_id) == ("V-k3x-2", "T-k3x-2")


def test_market_order_without_a_quote_is_rejected_and_not_kept():
    book = Book()
    quote(book, "1.19998", "1.20002", GBP)
    events = submit(book, "B", "BUY", 100_000)
    assert kinds(events) == ["OrderRejected"] and events[0].reason == "no market"
    assert book.orders() == [] and book.positions() == []


def test_limit_crossing_on_submit_fills_at_once_at_the_touch():
    book = market_book()
    buy = submit(book, "B", "BUY", 1000, price="1.10010")
    assert kinds(buy) == ["OrderAccepted", "OrderFilled"] and buy[1].fill.price == "1.10002"
    sell = submit(book, "S", "SELL", 1000, price="1.09990")
    assert kinds(sell) == ["OrderAccepted", "OrderFilled"] and sell[1].fill.price == "1.09998"


def test_limit_rests_then_fills_on_the_first_crossing_quote_at_the_touch():
    book = market_book()
    events = submit(book, "B", "BUY", 1000, price="1.10000")
    assert kinds(events) == ["OrderAccepted"]
    assert [o.client_order_id for o in book.orders(open_only=True)] == ["B"]
    assert quote(book, "1.09997", "1.10001") == []  # the ask is still above the limit
    filled = quote(book, "1.09995", "1.09999", ts=7)  # gapped through: fills at the ask, better than the limit
    assert kinds(filled) == ["OrderFilled"]
    assert filled[0].fill.price == "1.09999" and filled[0].fill.ts == 7 and filled[0].order.ts_last == 7
    assert book.orders(open_only=True) == [] and book.orders()[0].status == "FILLED"
    assert quote(book, "1.09990", "1.09992") == []  # a filled order never fills again


def test_resting_sell_fills_when_the_bid_reaches_it_and_other_instruments_do_not_touch_it():
    book = market_book()
    submit(book, "S", "SELL", 1000, price="1.10004")
    assert quote(book, "1.20010", "1.20014", GBP) == []
    assert kinds(quote(book, "1.10004", "1.10006")) == ["OrderFilled"]


def test_limit_without_a_quote_rests():
    book = Book()
    assert kinds(submit(book, "B", "BUY", 1000, price="1.10000")) == ["OrderAccepted"]
    assert kinds(quote(book, "1.09990", "1.09995")) == ["OrderFilled"]


def test_ioc_and_fok_limits_that_cannot_fill_are_canceled():
    book = market_book()
    for cid, tif in (("I", "IOC"), ("F", "FOK")):
        events = submit(book, cid, "BUY", 1000, price="1.10000", tif=tif)
        assert kinds(events) == ["OrderAccepted", "OrderCanceled"] and events[1].order.status == "CANCELED"
    assert quote(book, "1.09990", "1.09995") == []
    assert kinds(submit(book, "I2", "BUY", 1000, price="1.10000", tif="IOC")) == ["OrderAccepted", "OrderFilled"]


def test_invalid_orders_are_rejected_with_a_reason():
    book = market_book()
    cases = {
        ("BUY", "0", None, EUR): "invalid quantity",
        ("BUY", "1.5", None, EUR): "whole units",
        ("BUY", "abc", None, EUR): "invalid quantity",
        ("BUY", "100", "1.100001", EUR): "tick",
        ("BUY", "100", "-1", EUR): "invalid price",
        ("HOLD", "100", None, EUR): "invalid side",
        ("BUY", "100", None, "XAU/USD.SIM"): "unknown instrument",
    }
    for n, ((side, qty, price, instrument), reason) in enumerate(cases.items()):
        events = submit(book, f"X{n}", side, qty, price=price, instrument=instrument)
        assert kinds(events) == ["OrderRejected"] and reason in events[0].reason, (events, reason)
    assert book.orders() == []


def test_duplicate_client_order_id_is_rejected_and_leaves_the_first_alone():
    book = market_book()
    submit(book, "B", "BUY", 1000, price="1.10000")
    events = submit(book, "B", "SELL", 5000)
    assert kinds(events) == ["OrderRejected"] and "duplicate" in events[0].reason
    assert [(o.side, o.status) for o in book.orders()] == [("BUY", "ACCEPTED")]
    assert book.positions() == []


def test_reduce_only_rules():
    book = market_book()
    assert "reduce-only" in submit(book, "R0", "SELL", 1000, reduce_only=True)[0].reason  # nothing to reduce
    submit(book, "B", "BUY", 1000)
    assert "reduce-only" in submit(book, "R1", "BUY", 500, reduce_only=True)[0].reason  # would increase
    assert "reduce-only" in submit(book, "R2", "SELL", 1500, reduce_only=True)[0].reason  # would flip
    assert kinds(submit(book, "R3", "SELL", 400, reduce_only=True)) == ["OrderAccepted", "OrderFilled"]
    assert position(book).quantity == "600"
    # Two resting reduce-only sells worth more than the position: the second no longer reduces, so it is canceled.
    submit(book, "R4", "SELL", 600, price="1.10010", reduce_only=True)
    submit(book, "R5", "SELL", 600, price="1.10010", reduce_only=True)
    events = quote(book, "1.10010", "1.10012")
    assert kinds(events) == ["OrderFilled", "OrderCanceled"]
    assert events[1].order.client_order_id == "R5"
    assert position(book).side == "FLAT"


def test_netting_position_open_add_reduce_flip_and_close():
    book = market_book()
    submit(book, "1", "BUY", 100_000)  # open LONG at 1.10002
    quote(book, "1.10004", "1.10008")
    submit(book, "2", "BUY", 100_000)  # add at 1.10008: avg 1.10005
    p = position(book)
    assert (p.side, p.quantity, p.avg_px, p.venue_position_id) == ("LONG", "200000", "1.10005", "SIM-EURUSD")
    submit(book, "3", "SELL", 50_000)  # reduce at 1.10004: the avg stays
    assert (position(book).quantity, position(book).avg_px) == ("150000", "1.10005")
    submit(book, "4", "SELL", 250_000)  # flip: 100000 SHORT opened at the fill price
    assert (position(book).side, position(book).quantity, position(book).avg_px) == ("SHORT", "100000", "1.10004")
    quote(book, "1.10000", "1.10002", ts=9)
    submit(book, "5", "BUY", 100_000, ts=9)  # close
    p = position(book)
    assert (p.side, p.quantity, p.avg_px, p.ts) == ("FLAT", "0", "0.00000", 9)
    assert book.signed_position(EUR) == 0


def test_average_price_keeps_the_decimals_it_needs_and_cash_counts_pnl_and_commission():
    book = market_book()
    submit(book, "1", "BUY", 1)
    quote(book, "1.10000", "1.10003")
    submit(book, "2", "BUY", 1)
    assert position(book).avg_px == "1.100025"
    quote(book, "1.10102", "1.10104")
    submit(book, "3", "SELL", 2)  # realizes 2 * (1.10102 - 1.100025) = 0.00199; commission rounds to 0.00
    assert book.balances() == [v.Balance("USD", "10000000.00", "10000000.00", "0.00")]
    book2 = market_book()
    submit(book2, "1", "BUY", 1_000_000)  # commission 22.00
    quote(book2, "1.10102", "1.10104")
    submit(book2, "2", "SELL", 1_000_000)  # +1000.00 realized, commission 22.02
    assert book2.balances()[0].total == f"{Decimal(10_000_000) + 1000 - 22 - Decimal('22.02'):.2f}"


def test_cancel_rules():
    book = market_book()
    submit(book, "L", "BUY", 1000, price="1.09000")
    canceled = book.cancel(v.Cancel(request_id=1, client_order_id="L"), 5)
    assert kinds(canceled) == ["OrderCanceled"] and canceled[0].order.status == "CANCELED"
    for cid in ("L", "nope"):  # closed, unknown
        events = book.cancel(v.Cancel(request_id=1, client_order_id=cid), 6)
        assert kinds(events) == ["CommandRejected"] and events[0].command == "cancel"
    assert quote(book, "1.08990", "1.08995") == []  # a canceled order never fills
    submit(book, "M", "BUY", 1000)
    assert "FILLED" in book.cancel(v.Cancel(request_id=1, client_order_id="M"), 7)[0].reason


def test_ids_carry_the_epoch_so_another_book_never_reuses_them():
    first, second = market_book(epoch="a"), market_book(epoch="b")
    ids = [(e.order.venue_order_id, e.fill.trade_id) for book in (first, second) for e in submit(book, "B", "BUY", 1)
           if isinstance(e, v.OrderFilled)]
    assert ids == [("V-a-1", "T-a-1"), ("V-b-1", "T-b-1")]


def test_a_received_order_is_submitted_until_carried_out():
    book = market_book()
    cmd = order("H", qty=1000, price="1.09000")
    assert book.receive(cmd, 5) == []
    (held,) = book.orders(client_order_id="H")
    assert (held.status, held.quantity, held.price, held.filled_qty, held.ts_accepted, held.ts_last) == (
        "SUBMITTED", "1000", "1.09000", "0", 5, 5)
    assert held.venue_order_id.startswith("V-")
    assert book.orders(open_only=True) == [held]
    assert kinds(submit(book, "H", "SELL", 5)) == ["OrderRejected"]  # its client_order_id is taken
    assert kinds(book.modify(v.Modify(request_id=1, client_order_id="H", price="1.09001"), 6)) == ["CommandRejected"]
    assert quote(book, "1.08000", "1.08001") == []  # not matched before it is carried out
    accepted = book.carry_out(cmd, 7)
    assert kinds(accepted) == ["OrderAccepted", "OrderFilled"]
    assert accepted[0].order.venue_order_id == held.venue_order_id and accepted[0].order.ts_accepted == 7
    assert book.carry_out(cmd, 8) == []  # once only


def test_a_received_order_canceled_before_it_is_carried_out_never_is():
    book = market_book()
    cmd = order("H", qty=1000)
    book.receive(cmd, 5)
    canceled = book.cancel(v.Cancel(request_id=1, client_order_id="H"), 6)
    assert kinds(canceled) == ["OrderCanceled"]
    assert (canceled[0].order.status, canceled[0].order.ts_accepted, canceled[0].order.ts_last) == ("CANCELED", 5, 6)
    assert book.carry_out(cmd, 7) == [] and book.positions() == []
    assert [o.status for o in book.orders()] == ["CANCELED"] and book.orders(open_only=True) == []


def test_a_received_order_rejected_when_carried_out_is_forgotten():
    book = market_book()
    cmd = order("H", qty="abc")
    book.receive(cmd, 5)
    assert book.orders()[0].quantity == "abc"  # as the Submit gave it
    assert kinds(book.carry_out(cmd, 6)) == ["OrderRejected"] and book.orders() == []
    other = order("J")
    book.receive(other, 7)
    assert [e.reason for e in book.carry_out(other, 8, refuse="drill")] == ["drill"] and book.orders() == []


def test_orders_by_client_order_id_and_fills_since():
    book = market_book()
    submit(book, "A", "BUY", 1, ts=3)
    submit(book, "B", "BUY", 1, ts=5)
    submit(book, "L", "BUY", 1, price="1.09000", ts=6)
    assert [o.client_order_id for o in book.orders(client_order_id="B")] == ["B"]
    assert book.orders(client_order_id="nope") == [] and book.orders(open_only=True, client_order_id="B") == []
    assert [o.client_order_id for o in book.orders(open_only=True, client_order_id="L")] == ["L"]
    assert [f.client_order_id for f in book.fills(since_ts=4)] == ["B"]
    assert [f.client_order_id for f in book.fills(since_ts=5)] == ["B"] and book.fills(since_ts=6) == []


def test_history_is_bounded_closed_orders_far_back_and_old_fills_are_dropped():
    book = market_book(keep_orders=10, keep_fills=5)
    submit(book, "L", "BUY", 1, price="1.09000")  # stays open: never pruned
    for n in range(30):
        submit(book, f"M{n}", "BUY", 1)
    orders = [o.client_order_id for o in book.orders()]
    assert orders[0] == "L" and orders[-10:] == [f"M{n}" for n in range(20, 30)] and len(orders) <= 12
    assert [f.client_order_id for f in book.fills()] == [f"M{n}" for n in range(25, 30)]
    assert position(book).quantity == "30"  # the books themselves forget nothing
    assert "unknown" in book.cancel(v.Cancel(request_id=1, client_order_id="M0"), 9)[0].reason
    assert kinds(book.cancel(v.Cancel(request_id=1, client_order_id="L"), 9)) == ["OrderCanceled"]


def test_modify_rules():
    book = market_book()
    submit(book, "L", "BUY", 1000, price="1.09000")

    def modify(cid="L", quantity=None, price=None):
        return book.modify(v.Modify(request_id=1, client_order_id=cid, quantity=quantity, price=price), 8)

    updated = modify(quantity="2000")
    assert kinds(updated) == ["OrderUpdated"] and updated[0].order.quantity == "2000" and updated[0].order.price == "1.09000"
    assert kinds(modify(price="1.09500")) == ["OrderUpdated"] and book.orders()[0].price == "1.09500"
    for bad in (dict(quantity="0"), dict(price="x"), dict(cid="nope", price="1.09")):
        events = modify(**bad)
        assert kinds(events) == ["CommandRejected"] and events[0].command == "modify", bad
    crossing = modify(price="1.10005")  # now crosses the ask: updated, then filled at the ask
    assert kinds(crossing) == ["OrderUpdated", "OrderFilled"] and crossing[1].fill.price == "1.10002"
    assert "FILLED" in modify(price="1.09")[0].reason


numbers = st.text(max_size=12) | st.sampled_from(["1e999999", "NaN", "-0", "Infinity", "1E+3", " 5 ", "0.000001"])


@settings(max_examples=300, deadline=None)
@given(numbers, st.none() | numbers, st.none() | numbers)
def test_any_quantity_or_price_text_is_rejected_or_taken_never_raises(qty, price, new_qty):
    book = market_book()
    events = submit(book, "X", "SELL", qty, price=price)
    assert kinds(events) in (["OrderRejected"], ["OrderAccepted"], ["OrderAccepted", "OrderFilled"])
    modified = book.modify(v.Modify(request_id=1, client_order_id="X", quantity=new_qty, price=price), 3)
    assert kinds(modified)[0] in ("OrderUpdated", "CommandRejected")


# Invariants over any sequence ------------------------------------------------------------------------

prices = st.integers(109_990, 110_010).map(lambda t: f"{Decimal(t) / 100_000:.5f}")
operations = st.lists(st.one_of(
    st.tuples(st.just("submit"), st.sampled_from(["BUY", "SELL"]), st.integers(1, 5).map(lambda n: n * 1000),
              st.none() | prices, st.sampled_from(["GTC", "IOC", "FOK", "DAY"]), st.booleans(), st.sampled_from([EUR, EURGBP])),
    st.tuples(st.just("cancel"), st.integers(0, 30)),
    st.tuples(st.just("modify"), st.integers(0, 30), st.none() | st.integers(1, 6).map(lambda n: str(n * 1000)), st.none() | prices),
    st.tuples(st.just("quote"), st.integers(109_990, 110_010), st.integers(1, 2), st.sampled_from([EUR, EURGBP])),
), min_size=5, max_size=60)


@settings(max_examples=500, deadline=None)
@given(operations)
def test_invariants_hold_over_any_sequence(ops):
    book = Book(symbols=("EUR/USD", "EUR/GBP"))
    ops = [("quote", 110_000, 1, EUR), ("quote", 110_000, 1, EURGBP), *ops]  # a market from the start
    closed: set[str] = set()
    for n, op in enumerate(ops):
        ts = n + 1
        if op[0] == "submit":
            _, side, qty, price, tif, reduce_only, instrument = op
            events = submit(book, f"O{n}", side, qty, price, instrument, tif, reduce_only, ts)
        elif op[0] == "cancel":
            events = book.cancel(v.Cancel(request_id=1, client_order_id=f"O{op[1]}"), ts)
        elif op[0] == "modify":
            events = book.modify(v.Modify(request_id=1, client_order_id=f"O{op[1]}", quantity=op[2], price=op[3]), ts)
        else:
            _, mid, half, instrument = op
            px = lambda t: f"{Decimal(t) / 100_000:.5f}"  # noqa: E731
            events = book.on_quote(v.Quote(instrument, px(mid - half), px(mid + half), "1000000", "1000000", ts))
        for event in events:
            cid = event.order.client_order_id if hasattr(event, "order") else event.client_order_id
            if isinstance(event, v.OrderFilled):
                assert cid not in closed, "a closed order filled again"
            if hasattr(event, "order") and event.order.status in ("FILLED", "CANCELED"):
                closed.add(cid)
        for order in book.orders():
            assert Decimal(order.filled_qty) <= Decimal(order.quantity)
            assert (order.status == "FILLED") == (order.filled_qty == order.quantity)
        assert {o.client_order_id for o in book.orders(open_only=True)} == {
            o.client_order_id for o in book.orders() if o.status in ("ACCEPTED", "PARTIALLY_FILLED")}
        for p in book.positions():
            signed = sum(Decimal(f.quantity) * (1 if f.side == "BUY" else -1)
                         for f in book.fills() if f.instrument_id == p.instrument_id)
            assert signed == book.signed_position(p.instrument_id)
            assert Decimal(p.quantity) == abs(signed)
            assert (p.side == "FLAT") == (p.quantity == "0")
            if p.side == "FLAT":
                assert Decimal(p.avg_px) == 0
        assert {f.instrument_id for f in book.fills()} == {p.instrument_id for p in book.positions()}
