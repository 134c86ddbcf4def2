"""Ask every venue, not the node's cache, what is still open: the venue's books are the judge of flat.

The node's counts can disagree with the venue's (an order the node gave up on that the venue filled
late; events lost while disconnected). Every NautilusTrader LiveExecutionClient answers the same
reconciliation queries, so this works for any venue, the paper venue and real ones alike.
"""

from __future__ import annotations

from nautilus_trader.core.uuid import UUID4
from nautilus_trader.execution.messages import GenerateOrderStatusReports, GeneratePositionStatusReports
from nautilus_trader.live.node import TradingNode
from nautilus_trader.model.enums import PositionSide

from supervisor.protocol import Counts


async def venue_counts(node: TradingNode) -> Counts:
    """Open positions and open orders as the venues report them (orders in flight are the node's
    notion only, so that count is 0 here). Raises if a venue cannot answer: unknown is never flat."""
    now = node.kernel.clock.timestamp_ns()
    positions = orders = 0
    for client in node.kernel.exec_engine._clients.values():
        reports = await client.generate_position_status_reports(
            GeneratePositionStatusReports(instrument_id=None, start=None, end=None, command_id=UUID4(), ts_init=now)
        )
        positions += sum(1 for r in reports if r.position_side != PositionSide.FLAT)
        open_orders = await client.generate_order_status_reports(
            GenerateOrderStatusReports(instrument_id=None, start=None, end=None, open_only=True, command_id=UUID4(), ts_init=now)
        )
        orders += sum(1 for r in open_orders if r.order_status.name in ("ACCEPTED", "PARTIALLY_FILLED", "SUBMITTED", "TRIGGERED"))
    return Counts(positions_open=positions, orders_inflight=0, orders_open=orders)
