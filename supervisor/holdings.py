"""What a node holds (its open positions and orders), what its last session ended with, and the
start-up reconciliation report that compares the two.

Every session's end is journaled with what its node held last (`session_end`). At the next start,
once the node has reconciled with its venues, what it found is compared with that: anything else
(a position or order nobody left there: activity by hand at the venue, a fill after the last record)
is a mismatch, journaled with both views, shown in status and alerted. Pure: the daemon journals.
"""

from __future__ import annotations

from decimal import Decimal

import msgspec

from supervisor.protocol import NodeStatus, OrderView, PositionView

SESSION_END = "session_end"  # the journal kind that carries a session's last holdings
MISMATCH = "reconciliation_mismatch"


class Holdings(msgspec.Struct, frozen=True):
    positions: list[PositionView] = []
    orders: list[OrderView] = []

    @classmethod
    def of(cls, status: NodeStatus) -> Holdings:
        return cls(positions=list(status.positions), orders=list(status.orders))

    def is_flat(self) -> bool:
        """Nothing open, and no net position on any instrument (two strategies long and short one
        instrument on a NETTING account are flat at the venue, however many positions the node kept)."""
        return not self.net() and not self.orders

    def net(self) -> dict[str, Decimal]:
        """The signed quantity per instrument: the venue's own granularity on a NETTING account, and
        what reconciliation restores on any (position ids may be new after it)."""
        net: dict[str, Decimal] = {}
        for p in self.positions:
            signed = Decimal(p.quantity) * (-1 if p.side == "SHORT" else 1)
            net[p.instrument_id] = net.get(p.instrument_id, Decimal(0)) + signed
        return {instrument: qty for instrument, qty in net.items() if qty != 0}

    def as_record(self) -> dict:
        return msgspec.to_builtins(self)


ENDED_WITH_KINDS = (SESSION_END, "worker_spawned")  # the records ended_with() reads; the rest need no decoding


def ended_with(records: list[dict]) -> Holdings | None:
    """What the last session ended with, from the journal: None when it is unknown (a worker was
    spawned and its end never recorded: nsup died first; or its node ran and was never heard). No
    earlier session is nothing held: a new node's accounts are flat."""
    last = next((r for r in reversed(records) if r.get("kind") in ENDED_WITH_KINDS), None)
    if last is None:
        return Holdings()
    if last["kind"] != SESSION_END or last.get("positions") is None:
        return None
    return msgspec.convert({"positions": last["positions"], "orders": last["orders"]}, Holdings)


def differences(ended: Holdings | None, found: Holdings) -> list[str]:
    """What the node found that the last session did not leave, and what it left that is gone; one
    line each. An unknown end is compared as flat: anything found then is named."""
    known = ended is not None
    ended = ended or Holdings()
    lines = []
    was, now = ended.net(), found.net()
    for instrument in sorted(was.keys() | now.keys()):
        if was.get(instrument, 0) != now.get(instrument, 0):
            lines.append(f"{instrument}: the last session ended with {_signed(was.get(instrument))}, the venue has "
                         f"{_signed(now.get(instrument))}" if known else
                         f"{instrument}: the venue has {_signed(now.get(instrument))}, and the last session's end is "
                         "not on record")
    left = {o.client_order_id: o for o in ended.orders}
    for order in found.orders:
        if order.client_order_id not in left:
            lines.append(f"order {order.client_order_id} {order.instrument_id} {order.side} {order.quantity} "
                         f"{order.order_type} ({order.owner}) is open, and the last session did not leave it")
    for order_id in left.keys() - {o.client_order_id for o in found.orders}:
        lines.append(f"order {order_id}, open when the last session ended, is no longer open")
    return lines


def _signed(quantity: Decimal | None) -> str:
    if not quantity:
        return "nothing"
    return f"{'LONG' if quantity > 0 else 'SHORT'} {abs(quantity)}"
