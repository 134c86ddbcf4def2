"""The paper venue's wire protocol, in one screen. It imports no NautilusTrader: nsup's own tools (the
launcher, `nsup demo`'s end report, the drills) read it without it.

Two sockets. A ROUTER for requests (the adapter's DEALER sends, the venue answers each with a
Reply carrying the same request_id) and for order events, which the venue pushes to the sessions
that said Hello for the account as the order's trader (every session of the account, for an order of
no trader connected: a hand trade). A PUB for market data: two frames, the topic ("quote.<instrument>",
"trade.<instrument>", "bar.<bar type>") and the object.

Trading payloads are NautilusTrader's own objects as their to_dict() JSON (a `type` field names the
class): the commands a node's execution engine sends, the order events and reports a venue sends
back, instruments, quotes, trades and bars. Both ends run the same pinned NautilusTrader, so nothing
is lost or translated on the way (paper_venue/codec.py). Everything else is plain JSON below.
"""

from __future__ import annotations

import msgspec

VENUE = "SIM"
NOT_GREETED = "say hello first"  # the error an Execute gets from a session that has not said Hello for its account
OMS_TYPES = ("NETTING", "HEDGING")


# Adapter -> venue. Every request has an id; the Reply repeats it.
class _Request(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", forbid_unknown_fields=True):
    request_id: int


class Hello(_Request, tag="hello"):
    """Claims the account for the trader (see paper_venue/account.py; a shared account is every trader's
    at once); the session then receives the events of the trader's orders, and of orders of no trader
    connected (a hand trade). Idempotent: the adapter says it every second."""

    account_id: str  # "SIM-001"
    trader_id: str
    oms_type: str  # what the node expects; refused if the account's is another


class Execute(_Request, tag="execute"):
    """A NautilusTrader trading command: SubmitOrder, SubmitOrderList, ModifyOrder, CancelOrder,
    CancelAllOrders or BatchCancelOrders. ok means received; what becomes of it arrives as events."""

    account_id: str
    command: msgspec.Raw


class QueryReports(_Request, tag="reports"):
    """NautilusTrader execution reports, in `items`: "orders" (OrderStatusReport), "fills" (FillReport)
    or "positions" (PositionStatusReport). account_id None: every account's."""

    kind: str
    account_id: str | None = None
    instrument_id: str | None = None
    open_only: bool = False  # orders: only those not closed (held contingent orders included)
    client_order_id: str | None = None  # orders: only this one
    venue_order_id: str | None = None  # orders and fills: only this one's
    since_ns: int = 0  # fills: only those at or after


class QueryAccount(_Request, tag="account"):
    """The account's last AccountState, in `items`."""

    account_id: str


class QueryInstruments(_Request, tag="instruments"):
    """Every instrument the venue lists, in `items`; no Hello needed."""


class SubscribeBars(_Request, tag="subscribe_bars"):
    """From now on the venue publishes this bar type's bars as they close; refused if it cannot."""

    bar_type: str  # e.g. "EUR/USD.SIM-1-MINUTE-MID-EXTERNAL"


class UnsubscribeBars(_Request, tag="unsubscribe_bars"):
    bar_type: str


class RequestBars(_Request, tag="bars"):
    """Closed bars from the venue's history, oldest first, in `items`; refused if it cannot."""

    bar_type: str
    start_ns: int | None = None
    end_ns: int | None = None
    limit: int = 0  # 0: all; else the newest `limit`


class SetFaults(_Request, tag="set_faults"):
    """Drills an operator switches on while running. None leaves a setting as it is."""

    reject_orders: bool | None = None  # every new order is rejected
    ack_delay_ms: int | None = None  # new orders reach the matching engine this much later
    reply_delay_ms: int | None = None  # requests are carried out at once, their Reply is sent this much later
    drop_connection: bool | None = None  # the request socket is closed and bound again: sessions are cut
    silent: bool | None = None  # no market data, no events, no replies


class HandTrade(_Request, tag="hand_trade"):
    """A drill: someone trades on an account by hand at the venue (a trader on the broker's website), a
    market order at the touch. Seen: its events go to every session of the account, and each node
    learns of an order it never sent. Unseen: they are lost on the wire, and the venue holds what
    the node does not know. On a NETTING account it moves the account's one net position, which the
    node's own orders trade too. Answered at once, like SetFaults; ok=False says why not."""

    instrument_id: str  # "EUR/USD.SIM"
    side: str  # "BUY" or "SELL"
    quantity: str  # a multiple of the instrument's size increment, e.g. "100000"
    seen: bool = True
    account_id: str | None = None  # None: the venue's only account (refused if it has several)


Request = (Hello | Execute | QueryReports | QueryAccount | QueryInstruments | SubscribeBars | UnsubscribeBars
           | RequestBars | SetFaults | HandTrade)


class Reply(msgspec.Struct, frozen=True, tag="reply"):
    request_id: int
    ok: bool
    error: str | None = None
    items: list[msgspec.Raw] | None = None  # NautilusTrader objects, as the request says
    quotes_endpoint: str | None = None  # with Hello and QueryInstruments: where market data is published


# Venue -> adapter, pushed to the account's sessions.
class OrderEvent(msgspec.Struct, frozen=True, tag="event"):
    account_id: str
    event: msgspec.Raw  # a NautilusTrader order event: OrderAccepted, OrderFilled, OrderCanceled, ...


FromVenue = Reply | OrderEvent


# What nsup's tools read of a PositionStatusReport or an OrderStatusReport, without NautilusTrader.
class Holding(msgspec.Struct, frozen=True):
    account_id: str
    instrument_id: str
    position_side: int  # NautilusTrader's PositionSide: 1 FLAT, 2 LONG, 3 SHORT
    quantity: str
    avg_px_open: str | None = None
    venue_position_id: str | None = None

    @property
    def side(self) -> str:
        return {2: "LONG", 3: "SHORT"}.get(self.position_side, "FLAT")


class OrderHeld(msgspec.Struct, frozen=True):
    account_id: str
    instrument_id: str
    client_order_id: str | None
    quantity: str
    filled_qty: str


_encoder = msgspec.json.Encoder()
request_decoder = msgspec.json.Decoder(Request)
from_venue_decoder = msgspec.json.Decoder(FromVenue)


def encode(message) -> bytes:
    return _encoder.encode(message)
