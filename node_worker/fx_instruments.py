"""The FX pairs the demo trades, as NautilusTrader instruments: the same for the in-process feed and
the paper venue, whose matching assumes these precisions (price 5 decimals, size whole units)."""

from __future__ import annotations

from nautilus_trader.model.identifiers import Venue
from nautilus_trader.model.instruments import CurrencyPair
from nautilus_trader.test_kit.providers import TestInstrumentProvider


def fx_instruments(symbols, venue: str) -> list[CurrencyPair]:
    return [TestInstrumentProvider.default_fx_ccy(s, venue=Venue(venue)) for s in symbols]
