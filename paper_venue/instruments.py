"""What the paper venue can list: FX pairs, crypto perpetuals and equities, with the increments, fees
and margins of the real markets they stand for, and where each one's random walk starts.

A venue lists the symbols it is started with (`--instruments`); every instrument is on venue SIM,
e.g. "EUR/USD.SIM", "BTCUSDT-PERP.SIM", "AAPL.SIM". The node gets the definitions from the venue
itself (node_worker/paper/), so both sides always agree on them.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from nautilus_trader.model.currencies import USD
from nautilus_trader.model.identifiers import InstrumentId, Symbol, Venue
from nautilus_trader.model.instruments import CryptoPerpetual, CurrencyPair, Equity, Instrument
from nautilus_trader.model.objects import Currency, Money, Price, Quantity

from paper_venue.protocol import VENUE

# Each currency an account may settle in starts with this many units (JPY with 150 times as many).
STARTING_BALANCE = 10_000_000


@dataclass(frozen=True)
class Listing:
    instrument: Instrument
    start_price: Decimal  # where the random walk starts
    quote_size: Decimal  # the size shown on each side of every quote: an order larger fills in parts


def _fx(symbol: str, start: str) -> Listing:
    base, quote = symbol.split("/")
    precision = 3 if quote == "JPY" else 5
    pair = CurrencyPair(
        instrument_id=InstrumentId(Symbol(symbol), Venue(VENUE)), raw_symbol=Symbol(symbol),
        base_currency=Currency.from_str(base), quote_currency=Currency.from_str(quote),
        price_precision=precision, size_precision=0, price_increment=Price(10 ** -precision, precision),
        size_increment=Quantity.from_int(1), lot_size=Quantity.from_int(1000), min_quantity=Quantity.from_int(1000),
        max_quantity=Quantity.from_int(50_000_000), min_notional=Money(1_000, USD), max_notional=Money(100_000_000, USD),
        margin_init=Decimal("0.03"), margin_maint=Decimal("0.03"),
        maker_fee=Decimal("0.00002"), taker_fee=Decimal("0.00002"), ts_event=0, ts_init=0,
    )
    return Listing(pair, Decimal(start), Decimal(1_000_000))


def _perp(base: str, start: str, price_precision: int, size_precision: int, quote_size: str) -> Listing:
    symbol = f"{base}USDT-PERP"
    usdt = Currency.from_str("USDT")
    perp = CryptoPerpetual(
        instrument_id=InstrumentId(Symbol(symbol), Venue(VENUE)), raw_symbol=Symbol(symbol),
        base_currency=Currency.from_str(base), quote_currency=usdt, settlement_currency=usdt, is_inverse=False,
        price_precision=price_precision, size_precision=size_precision,
        price_increment=Price(10 ** -price_precision, price_precision),
        size_increment=Quantity(10 ** -size_precision, size_precision),
        min_quantity=Quantity(10 ** -size_precision, size_precision), max_quantity=Quantity.from_int(1000),
        min_notional=Money(5, usdt), margin_init=Decimal("0.05"), margin_maint=Decimal("0.025"),
        maker_fee=Decimal("0.0002"), taker_fee=Decimal("0.0004"), ts_event=0, ts_init=0,
    )
    return Listing(perp, Decimal(start), Decimal(quote_size))


def _equity(symbol: str, start: str) -> Listing:
    stock = Equity(
        instrument_id=InstrumentId(Symbol(symbol), Venue(VENUE)), raw_symbol=Symbol(symbol), currency=USD,
        price_precision=2, price_increment=Price.from_str("0.01"), lot_size=Quantity.from_int(1),
        min_quantity=Quantity.from_int(1), max_quantity=Quantity.from_int(1_000_000),
        margin_init=Decimal("0.25"), margin_maint=Decimal("0.25"),
        maker_fee=Decimal(0), taker_fee=Decimal(0), ts_event=0, ts_init=0,
    )
    return Listing(stock, Decimal(start), Decimal(5_000))


CATALOGUE: dict[str, Listing] = {
    listing.instrument.id.symbol.value: listing
    for listing in (
        _fx("EUR/USD", "1.10000"), _fx("GBP/USD", "1.27000"), _fx("AUD/USD", "0.66000"), _fx("USD/JPY", "150.000"),
        _perp("BTC", "60000.0", 1, 3, "5.000"), _perp("ETH", "3000.00", 2, 3, "50.000"),
        _equity("AAPL", "190.00"), _equity("MSFT", "420.00"),
    )
}


def listings(symbols) -> list[Listing]:
    """The catalogue's listings for these symbols, in their order; ValueError names an unknown one."""
    symbols = list(symbols)
    unknown = [s for s in symbols if s not in CATALOGUE]
    if unknown:
        raise ValueError(f"unknown instrument(s) {', '.join(unknown)}; the paper venue lists {', '.join(CATALOGUE)}")
    return [CATALOGUE[s] for s in dict.fromkeys(symbols)]


def instruments(symbols) -> list[Instrument]:
    return [listing.instrument for listing in listings(symbols)]


def starting_balances(instruments_listed: list[Instrument]) -> list[Money]:
    """A balance in every currency these instruments settle in (USD always): an account can trade them all."""
    currencies = {"USD": USD} | {i.get_settlement_currency().code: i.get_settlement_currency() for i in instruments_listed}
    return [Money(STARTING_BALANCE * (150 if code == "JPY" else 1), currency) for code, currency in currencies.items()]
