"""The paper venue's market: a random walk per instrument, its quotes and trades, and time bars of them.

Every step each instrument's mid moves -1, 0 or +1 tick and its half-spread is 1 or 2 ticks; a quote
shows the listing's quote_size on both sides, and about every other step a trade prints at the bid or
the ask. Bars are built venue-side, as a real venue's bar feed would be: one-second bars of BID, ASK,
MID and LAST prices are kept for `history_secs` (filled at start with a walk that ends where the
live one begins), and a bar of any whole number of seconds, minutes or hours is made of them. Bars
close on multiples of their step since the epoch; a bar's volume is what traded in it. MID prices
have one decimal more than the instrument's, as NautilusTrader's own quote bars do.
"""

from __future__ import annotations

import itertools
import random
from collections import deque
from dataclasses import dataclass, field

from nautilus_trader.model.data import Bar, BarType, QuoteTick, TradeTick
from nautilus_trader.model.enums import AggressorSide, BarAggregation, PriceType
from nautilus_trader.model.identifiers import TradeId
from nautilus_trader.model.instruments import Instrument
from nautilus_trader.model.objects import Price, Quantity

from paper_venue.instruments import Listing

NANOS = 1_000_000_000
HISTORY_STEPS_PER_SEC = 4  # walk steps per second of the back-filled history
BAR_AGGREGATIONS = (BarAggregation.SECOND, BarAggregation.MINUTE, BarAggregation.HOUR)
PRICE_TYPES = (PriceType.BID, PriceType.ASK, PriceType.MID, PriceType.LAST)


class UnsupportedData(ValueError):
    """A bar type, or data, the venue does not serve; the message says why."""


@dataclass
class _Ohlc:
    """In half ticks, so that a MID price is a whole number too."""

    open: int
    high: int
    low: int
    close: int

    def update(self, price: int) -> None:
        self.high, self.low, self.close = max(self.high, price), min(self.low, price), price


@dataclass
class _Second:
    """One instrument's prices in one second; `ohlc` per price type (LAST only once something traded)."""

    ohlc: dict[PriceType, _Ohlc] = field(default_factory=dict)
    volume: int = 0  # in hundredths of the quote size

    def update(self, price_type: PriceType, price: int) -> None:
        if (bar := self.ohlc.get(price_type)) is None:
            self.ohlc[price_type] = _Ohlc(price, price, price, price)
        else:
            bar.update(price)


class _Instrument:
    """One instrument's walk, its current second, and its closed seconds (newest last)."""

    def __init__(self, listing: Listing, rng: random.Random, history_secs: int):
        self.listing = listing
        self.instrument = listing.instrument
        self.half_tick = listing.instrument.price_increment.as_decimal() / 2
        self.mid = int(listing.start_price / listing.instrument.price_increment.as_decimal()) * 2  # half ticks
        self.rng = rng
        self.second: int | None = None  # the second being built (seconds since the epoch)
        self.current = _Second()
        self.closed: deque[tuple[int, _Second]] = deque(maxlen=history_secs)
        self.last_close: dict[PriceType, int] = {}

    def move(self, ts: int) -> tuple[int, int, int | None, int]:
        """One step of the walk at ts, into the current second: bid, ask, the traded price (None: no
        trade; a buyer takes the ask, a seller hits the bid) and its size, all in half ticks and
        hundredths of the quote size."""
        self.roll(ts // NANOS)
        rng = self.rng
        self.mid += 2 * rng.choice((-1, 0, 1))
        half_spread = 2 * rng.choice((1, 2))
        bid, ask = self.mid - half_spread, self.mid + half_spread
        second = self.current
        second.update(PriceType.BID, bid)
        second.update(PriceType.ASK, ask)
        second.update(PriceType.MID, self.mid)
        if rng.random() >= 0.5:
            return bid, ask, None, 0
        traded, size = ask if rng.random() < 0.5 else bid, rng.randint(1, 10)
        second.update(PriceType.LAST, traded)
        second.volume += size
        return bid, ask, traded, size

    def step(self, ts: int, trade_ids) -> list[QuoteTick | TradeTick]:
        bid, ask, traded, size = self.move(ts)
        instrument, price = self.instrument, self.price
        quote_size = instrument.make_qty(self.listing.quote_size)
        ticks: list[QuoteTick | TradeTick] = [QuoteTick(instrument.id, price(bid), price(ask), quote_size, quote_size, ts, ts)]
        if traded is not None:
            aggressor = AggressorSide.BUYER if traded == ask else AggressorSide.SELLER
            ticks.append(TradeTick(instrument.id, price(traded), self.size(size), aggressor, TradeId(next(trade_ids)), ts, ts))
        return ticks

    def price(self, half_ticks: int, precision: int | None = None) -> Price:
        return Price(half_ticks * self.half_tick, self.instrument.price_precision if precision is None else precision)

    def size(self, hundredths: int) -> Quantity:
        return self.instrument.make_qty(self.listing.quote_size * hundredths / 100)

    def roll(self, second: int) -> list[int]:
        """Closes the seconds before `second`; a second without prices repeats the last close. Returns
        the seconds closed."""
        if self.second is None:
            self.second = second
        closed = []
        while self.second < second:
            for price_type in PRICE_TYPES:
                if price_type not in self.current.ohlc and price_type in self.last_close:
                    close = self.last_close[price_type]
                    self.current.ohlc[price_type] = _Ohlc(close, close, close, close)
            for price_type, ohlc in self.current.ohlc.items():
                self.last_close[price_type] = ohlc.close
            self.second += 1
            self.closed.append((self.second, self.current))  # a second is stamped with its close
            closed.append(self.second)
            self.current = _Second()
        return closed


class Market:
    def __init__(self, listings: list[Listing], seed: int | None, history_secs: int, now_ns: int, epoch: str):
        rng = random.Random(seed)
        self.history_secs = history_secs
        self._instruments = {str(l.instrument.id): _Instrument(l, rng, history_secs) for l in listings}
        self._trade_ids = (f"{epoch}-{n}" for n in itertools.count(1))
        self._subscribed: set[BarType] = set()
        self._backfill(now_ns)

    @property
    def instruments(self) -> list[Instrument]:
        return [i.instrument for i in self._instruments.values()]

    def _backfill(self, now_ns: int) -> None:
        start = now_ns // NANOS - self.history_secs
        for n in range(self.history_secs * HISTORY_STEPS_PER_SEC):
            ts = start * NANOS + n * NANOS // HISTORY_STEPS_PER_SEC
            for instrument in self._instruments.values():
                instrument.move(ts)

    def step(self, ts: int) -> tuple[list[QuoteTick | TradeTick], list[Bar]]:
        """One step of every walk at `ts`: the quotes and trades, and the subscribed bars that closed."""
        ticks: list[QuoteTick | TradeTick] = []
        bars: list[Bar] = []
        for instrument in self._instruments.values():
            closed = instrument.roll(ts // NANOS)
            for bar_type in self._subscribed:
                if closed and bar_type.instrument_id == instrument.instrument.id:
                    bars += _bars_closing(bar_type, instrument, closed)
            ticks += instrument.step(ts, self._trade_ids)
        return ticks, bars

    def subscribe(self, bar_type: BarType) -> None:
        self._check(bar_type)
        self._subscribed.add(bar_type)

    def unsubscribe(self, bar_type: BarType) -> None:
        self._subscribed.discard(bar_type)

    def history(self, bar_type: BarType, start_ns: int | None, end_ns: int | None, limit: int = 0) -> list[Bar]:
        """The closed bars with start_ns <= close <= end_ns (None: unbounded), oldest first; with a limit
        only the newest `limit` of them."""
        instrument, _ = self._check(bar_type)
        closes = [second for second, _ in instrument.closed
                  if (start_ns is None or second * NANOS >= start_ns) and (end_ns is None or second * NANOS <= end_ns)]
        bars = _bars_closing(bar_type, instrument, closes)
        return bars[-limit:] if limit else bars

    def _check(self, bar_type: BarType) -> tuple[_Instrument, int]:
        instrument = self._instruments.get(str(bar_type.instrument_id))
        if instrument is None:
            raise UnsupportedData(f"{bar_type}: the venue does not list {bar_type.instrument_id}")
        spec = bar_type.spec
        if spec.aggregation not in BAR_AGGREGATIONS or spec.price_type not in PRICE_TYPES:
            raise UnsupportedData(f"{bar_type}: the venue serves time bars (SECOND, MINUTE, HOUR) of BID, ASK, MID "
                                  f"or LAST prices only")
        step = int(spec.timedelta.total_seconds())
        if step > self.history_secs:
            raise UnsupportedData(f"{bar_type}: longer than the venue's bar history of {self.history_secs}s")
        return instrument, step


def _bars_closing(bar_type: BarType, instrument: _Instrument, closes: list[int]) -> list[Bar]:
    """The bars of bar_type that close at these seconds, made of the kept seconds; a bar they cover only
    in part, or that has no price of its type, is left out."""
    step = int(bar_type.spec.timedelta.total_seconds())
    price_type = bar_type.spec.price_type
    precision = instrument.instrument.price_precision + (1 if price_type == PriceType.MID else 0)
    seconds = list(instrument.closed)  # consecutive: a second without prices is kept too
    bars = []
    for close in closes:
        end = close - seconds[0][0] + 1 if seconds else 0  # the index after `close`
        if close % step or not step <= end <= len(seconds):
            continue
        parts = [s.ohlc[price_type] for _, s in seconds[end - step:end] if price_type in s.ohlc]
        if parts:
            bars.append(Bar(
                bar_type, instrument.price(parts[0].open, precision), instrument.price(max(p.high for p in parts), precision),
                instrument.price(min(p.low for p in parts), precision), instrument.price(parts[-1].close, precision),
                instrument.size(sum(s.volume for _, s in seconds[end - step:end])), close * NANOS, close * NANOS,
            ))
    return bars
