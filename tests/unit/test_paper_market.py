"""The paper venue's market, in process: quotes and trades on the instruments' increments, and bars of
any whole step made of the one-second bars it keeps, live and as history."""

from __future__ import annotations

import pytest
from nautilus_trader.model.data import BarType, QuoteTick, TradeTick

from paper_venue.instruments import listings
from paper_venue.market import NANOS, Market, UnsupportedData

T0 = 1_800_000_000 * NANOS  # on a whole minute


def market(history_secs: int = 120) -> Market:
    return Market(listings(["EUR/USD", "BTCUSDT-PERP", "AAPL"]), seed=7, history_secs=history_secs, now_ns=T0,
                  epoch="test")


def bars(m: Market, text: str, **kw):
    return m.history(BarType.from_str(text), kw.get("start"), kw.get("end"), kw.get("limit", 0))


def test_quotes_and_trades_are_on_each_instruments_increments():
    ticks, _ = market().step(T0 + 1)
    quotes = {str(t.instrument_id): t for t in ticks if isinstance(t, QuoteTick)}
    assert set(quotes) == {"EUR/USD.SIM", "BTCUSDT-PERP.SIM", "AAPL.SIM"}
    assert (quotes["EUR/USD.SIM"].bid_price.precision, quotes["BTCUSDT-PERP.SIM"].bid_price.precision,
            quotes["AAPL.SIM"].bid_price.precision) == (5, 1, 2)
    assert all(q.bid_price < q.ask_price for q in quotes.values())
    m = market()
    trades = [t for n in range(20) for t in m.step(T0 + n * NANOS // 10)[0] if isinstance(t, TradeTick)]
    assert trades and all(t.size.as_double() > 0 for t in trades)


def test_a_longer_bar_is_made_of_the_one_second_bars_in_it():
    m = market()
    seconds = bars(m, "AAPL.SIM-1-SECOND-LAST-EXTERNAL")
    fives = bars(m, "AAPL.SIM-5-SECOND-LAST-EXTERNAL")
    # the second closing at T0 is still being built: 119 closed, and the 5-second bars they cover in full
    assert len(seconds) == 119 and len(fives) == 23 and all(b.ts_event % (5 * NANOS) == 0 for b in fives)
    for five in fives:
        inside = [b for b in seconds if five.ts_event - 5 * NANOS < b.ts_event <= five.ts_event]
        assert len(inside) == 5
        assert (five.open, five.close) == (inside[0].open, inside[-1].close)
        assert five.high == max(b.high for b in inside) and five.low == min(b.low for b in inside)
        assert five.volume.as_double() == pytest.approx(sum(b.volume.as_double() for b in inside))


def test_history_is_filtered_by_time_and_limited_to_the_newest():
    m = market()
    assert [b.ts_event for b in bars(m, "EUR/USD.SIM-1-SECOND-BID-EXTERNAL", limit=3)] == [
        T0 - 3 * NANOS, T0 - 2 * NANOS, T0 - NANOS]
    window = bars(m, "EUR/USD.SIM-1-SECOND-BID-EXTERNAL", start=T0 - 10 * NANOS, end=T0 - 5 * NANOS)
    assert [b.ts_event for b in window] == [T0 - s * NANOS for s in range(10, 4, -1)]
    (minute,) = bars(m, "EUR/USD.SIM-1-MINUTE-BID-EXTERNAL")  # the other is kept only in part, or not closed
    assert minute.ts_event == T0 - 60 * NANOS
    mid = bars(m, "EUR/USD.SIM-1-SECOND-MID-EXTERNAL", limit=1)[0]
    assert mid.open.precision == 6  # one decimal more, as NautilusTrader's own quote bars


def test_subscribed_bars_are_published_as_they_close():
    m = market()
    m.subscribe(BarType.from_str("EUR/USD.SIM-2-SECOND-ASK-EXTERNAL"))
    published = [bar for n in range(1, 41) for bar in m.step(T0 + n * NANOS // 10)[1]]
    assert [b.ts_event for b in published] == [T0, T0 + 2 * NANOS, T0 + 4 * NANOS]
    m.unsubscribe(BarType.from_str("EUR/USD.SIM-2-SECOND-ASK-EXTERNAL"))
    assert [bar for n in range(41, 61) for bar in m.step(T0 + n * NANOS // 10)[1]] == []


@pytest.mark.parametrize("text, says", [
    ("EUR/USD.SIM-100-TICK-MID-EXTERNAL", "time bars"),
    ("EUR/USD.SIM-1-DAY-MID-EXTERNAL", "time bars"),
    ("EUR/USD.SIM-5-MINUTE-MID-EXTERNAL", "longer than the venue's bar history"),
    ("GBP/USD.SIM-1-SECOND-MID-EXTERNAL", "does not list GBP/USD.SIM"),
])
def test_bars_the_venue_cannot_make_are_refused_with_the_reason(text, says):
    with pytest.raises(UnsupportedData, match=says):
        market().subscribe(BarType.from_str(text))
