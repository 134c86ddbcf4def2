"""Reads a TradingNode into the protocol's NodeStatus. Must run on the node's event loop."""

from __future__ import annotations

import time

from nautilus_trader.live.node import TradingNode
from nautilus_trader.model.enums import PositionSide
from nautilus_trader.model.position import Position

from supervisor.protocol import Counts, NodeStatus, PositionView, StrategyView


def read_status(node: TradingNode, venue_counts: Counts | None = None, faults: list[str] | None = None,
                log_problem: str | None = None) -> NodeStatus:
    cache = node.kernel.cache
    return NodeStatus(
        node_state=node.trader.state.name,
        trading_state=node.kernel.risk_engine.trading_state.name,
        counts=Counts(
            positions_open=cache.positions_open_count(),
            orders_inflight=cache.orders_inflight_count(),
            orders_open=cache.orders_open_count(),
        ),
        strategies=[
            StrategyView(strategy_id=str(s.id), state=s.state.name, is_exiting=s.is_exiting())
            for s in node.trader.strategies()
        ],
        positions=[_position_view(node, p) for p in cache.positions_open()],
        ts=time.time(),
        venue_counts=venue_counts,
        data_age_secs=_data_age_secs(node),
        clients={str(c.id): c.is_connected for engine in (node.kernel.data_engine, node.kernel.exec_engine)
                 for c in engine._clients.values()},
        faults=faults or [],
        log_problem=log_problem,
    )


def _data_age_secs(node: TradingNode) -> float | None:
    cache = node.kernel.cache
    quotes = [q for q in (cache.quote_tick(i) for i in cache.instrument_ids()) if q is not None]
    if not quotes:
        return None
    return (node.kernel.clock.timestamp_ns() - max(q.ts_init for q in quotes)) / 1e9


def _position_view(node: TradingNode, position: Position) -> PositionView:
    quote = node.kernel.cache.quote_tick(position.instrument_id)
    if quote is None:
        pnl = "unknown (no quote yet)"
    else:
        # A long closes at the bid, a short at the ask: that is the price the exit would see.
        price = quote.bid_price if position.side == PositionSide.LONG else quote.ask_price
        pnl = str(position.unrealized_pnl(price))
    return PositionView(
        instrument_id=str(position.instrument_id),
        side=position.side.name,
        quantity=str(position.quantity),
        unrealized_pnl=pnl,
    )
