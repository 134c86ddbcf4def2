"""The paper venue's wire protocol, in one screen.

Two sockets. A ROUTER for requests (the adapter's DEALER sends, the venue answers each with a
Reply carrying the same request_id) and for order events, which the venue pushes to every session
that said Hello for the account. A PUB for quotes: two frames, the instrument id and the Quote.
Quantities and prices travel as decimal strings, times as nanoseconds since the epoch.
"""

from __future__ import annotations

import msgspec

VENUE_PROTOCOL_VERSION = 1
VENUE = "SIM"
NOT_GREETED = "say hello first"  # the error a Submit, Cancel or Modify gets from a session that did not say Hello


class Quote(msgspec.Struct, frozen=True):
    instrument_id: str  # "EUR/USD.SIM"
    bid: str
    ask: str
    bid_size: str
    ask_size: str
    ts: int


# Adapter -> venue. Every request has an id; the Reply repeats it.
class _Request(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", forbid_unknown_fields=True):
    request_id: int


class Hello(_Request, tag="hello"):
    account_id: str  # "SIM-001"; the session then receives this account's order events


class Submit(_Request, tag="submit"):
    client_order_id: str
    strategy_id: str
    instrument_id: str
    side: str  # "BUY" | "SELL"
    order_type: str  # "MARKET" | "LIMIT"
    quantity: str
    price: str | None = None  # LIMIT only
    time_in_force: str = "GTC"  # "GTC" | "IOC" | "FOK" | "DAY"
    reduce_only: bool = False


class Cancel(_Request, tag="cancel"):
    client_order_id: str


class Modify(_Request, tag="modify"):
    client_order_id: str
    quantity: str | None = None
    price: str | None = None


class QueryOrders(_Request, tag="orders"):
    open_only: bool = False  # only those not yet closed: SUBMITTED, ACCEPTED, PARTIALLY_FILLED
    client_order_id: str | None = None  # only this one (an empty list if the venue does not know it)


class QueryFills(_Request, tag="fills"):
    since_ts: int = 0  # only fills with ts >= since_ts


class QueryPositions(_Request, tag="positions"):
    pass


class QueryAccount(_Request, tag="account"):
    pass


class SetFaults(_Request, tag="set_faults"):
    """Drills an operator switches on while running. None leaves a setting as it is."""

    reject_orders: bool | None = None  # every new order is rejected
    ack_delay_ms: int | None = None  # acceptance (and so fills) come this much later
    reply_delay_ms: int | None = None  # requests are carried out at once, their Reply is sent this much later
    drop_connection: bool | None = None  # the request socket is closed and bound again: sessions are cut
    silent: bool | None = None  # no quotes, no events, no replies


class HandTrade(_Request, tag="hand_trade"):
    """A trade by hand at the venue on the account (a trader on the broker's website): a market order
    filled at the touch. Seen: its events go to the account's sessions, as any order's do, and the
    node learns of an order it did not send. Unseen: its events are lost on the wire, and the venue
    holds what the node does not know. For drills and tests that make the node and the venue disagree."""

    instrument_id: str
    side: str  # "BUY" | "SELL"
    quantity: str
    seen: bool = True


Request = (Hello | Submit | Cancel | Modify | QueryOrders | QueryFills | QueryPositions | QueryAccount | SetFaults
           | HandTrade)


# Venue state, as queries return it and events carry it.
class OrderState(msgspec.Struct, frozen=True):
    client_order_id: str
    venue_order_id: str  # "V-<epoch>-<n>", given when the venue receives the order; never reused, restarts included
    strategy_id: str
    instrument_id: str
    side: str
    order_type: str
    quantity: str  # quantity and price: as the Submit gave them while SUBMITTED (and if canceled then)
    filled_qty: str
    avg_px: str | None
    price: str | None
    time_in_force: str
    reduce_only: bool
    status: str  # "SUBMITTED" | "ACCEPTED" | "PARTIALLY_FILLED" | "FILLED" | "CANCELED"
    ts_accepted: int  # while SUBMITTED (and if canceled before accepted): when the venue received it
    ts_last: int


class Fill(msgspec.Struct, frozen=True):
    trade_id: str  # "T-<epoch>-<n>", never reused
    client_order_id: str
    venue_order_id: str
    instrument_id: str
    side: str
    quantity: str
    price: str
    commission: str  # in the quote currency
    currency: str
    ts: int


class Position(msgspec.Struct, frozen=True):
    instrument_id: str
    venue_position_id: str
    side: str  # "LONG" | "SHORT" | "FLAT"
    quantity: str  # absolute
    avg_px: str
    ts: int


class Balance(msgspec.Struct, frozen=True):
    currency: str
    total: str
    free: str
    locked: str


class Reply(msgspec.Struct, frozen=True, tag="reply"):
    request_id: int
    ok: bool
    error: str | None = None
    orders: list[OrderState] | None = None
    fills: list[Fill] | None = None
    positions: list[Position] | None = None
    balances: list[Balance] | None = None
    instruments: list[str] | None = None  # with Hello
    quotes_endpoint: str | None = None  # with Hello


# Venue -> adapter, pushed to the account's sessions.
class OrderAccepted(msgspec.Struct, frozen=True, tag="accepted"):
    order: OrderState


class OrderRejected(msgspec.Struct, frozen=True, tag="rejected"):
    client_order_id: str
    reason: str
    ts: int


class OrderFilled(msgspec.Struct, frozen=True, tag="filled"):
    order: OrderState  # after the fill
    fill: Fill


class OrderCanceled(msgspec.Struct, frozen=True, tag="canceled"):
    order: OrderState


class OrderUpdated(msgspec.Struct, frozen=True, tag="updated"):
    order: OrderState


class CommandRejected(msgspec.Struct, frozen=True, tag="command_rejected"):
    """A cancel or modify the venue would not carry out."""

    client_order_id: str
    command: str  # "cancel" | "modify"
    reason: str
    ts: int


Event = OrderAccepted | OrderRejected | OrderFilled | OrderCanceled | OrderUpdated | CommandRejected
FromVenue = Reply | Event

_encoder = msgspec.json.Encoder()
request_decoder = msgspec.json.Decoder(Request)
from_venue_decoder = msgspec.json.Decoder(FromVenue)
quote_decoder = msgspec.json.Decoder(Quote)


def encode(message) -> bytes:
    return _encoder.encode(message)
