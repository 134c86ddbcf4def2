"""Ask every venue, not the node's cache, what is still open: the venue's books are the judge of flat.

The node's counts can disagree with the venue's (an order the node gave up on that the venue filled
late; events lost while disconnected). Every NautilusTrader LiveExecutionClient answers the same
reconciliation queries, so this works for any venue whose adapter answers them from the venue: the
paper venue, and real ones. A venue that cannot say is named, never counted as holding nothing:
NautilusTrader's sandbox answers from the node's own cache (its exchange shares it), so its answer
means nothing; and a query that fails says nothing either.
"""

from __future__ import annotations

from nautilus_trader.adapters.sandbox.execution import SandboxExecutionClient
from nautilus_trader.core.uuid import UUID4
from nautilus_trader.execution.messages import GenerateOrderStatusReports, GeneratePositionStatusReports
from nautilus_trader.live.node import TradingNode
from nautilus_trader.model.enums import PositionSide

from supervisor.protocol import Counts

OPEN_AT_THE_VENUE = ("ACCEPTED", "PARTIALLY_FILLED", "SUBMITTED", "TRIGGERED", "PENDING_UPDATE", "PENDING_CANCEL")
SANDBOX = "its reports come from the node's own cache (NautilusTrader's sandbox): it cannot say"


def unsayable(node: TradingNode) -> list[str]:
    """The venues whose adapter cannot say what they hold, each with why (as preflight and the venue
    check both print it)."""
    return [f"{client.id}: {why}" for client in node.kernel.exec_engine._clients.values()
            if (why := cannot_say(client)) is not None]


async def venue_counts(node: TradingNode) -> tuple[Counts, list[str]]:
    """Open positions and open orders as the venues report them (orders in flight are the node's
    notion only, so that count is 0 here), and the venues that could not say, with why. On an
    account the node shares, only its scope's instruments count (the reconciliation's own list)."""
    now = node.kernel.clock.timestamp_ns()
    in_scope = scope_of(node)
    positions = orders = 0
    unavailable = unsayable(node)
    for client in node.kernel.exec_engine._clients.values():
        if cannot_say(client) is not None:
            continue
        try:
            reports = await client.generate_position_status_reports(
                GeneratePositionStatusReports(instrument_id=None, start=None, end=None, command_id=UUID4(), ts_init=now))
            open_orders = await client.generate_order_status_reports(GenerateOrderStatusReports(
                instrument_id=None, start=None, end=None, open_only=True, command_id=UUID4(), ts_init=now))
        except Exception as exc:  # a venue that cannot answer is never taken to hold nothing
            unavailable.append(f"{client.id}: the query failed: {type(exc).__name__}: {exc}")
            continue
        positions += sum(1 for r in reports if r.position_side != PositionSide.FLAT and in_scope(r.instrument_id))
        orders += sum(1 for r in open_orders if r.order_status.name in OPEN_AT_THE_VENUE and in_scope(r.instrument_id))
    return Counts(positions_open=positions, orders_inflight=0, orders_open=orders), unavailable


def scope_of(node: TradingNode):
    """Whether an instrument is this node's: with reconciliation_instrument_ids set (nsup's [node]
    scope sets it), those only; else every instrument on its accounts."""
    instruments = set(node.kernel.exec_engine.reconciliation_instrument_ids)
    return (lambda instrument_id: instrument_id in instruments) if instruments else (lambda instrument_id: True)


def cannot_say(client) -> str | None:
    """Why this execution client cannot say what its venue holds, or None if it can."""
    return SANDBOX if isinstance(client, SandboxExecutionClient) else None
