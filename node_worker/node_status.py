"""Reads a TradingNode into the protocol's NodeStatus. Must run on the node's event loop."""

from __future__ import annotations

import time

from nautilus_trader.live.node import TradingNode
from nautilus_trader.model.enums import PositionSide
from nautilus_trader.model.position import Position

from node_worker.closer import exiting, open_orders, owner
from supervisor.protocol import Counts, NodeStatus, OrderView, PositionView, StrategyView


def read_status(node: TradingNode, venue_counts: Counts | None = None, faults: list[str] | None = None,
                venue_unavailable: list[str] | None = None, log_problem: str | None = None,
                components: dict[str, str] | None = None, components_heard: int = 0) -> NodeStatus:
    """Counts: the node's own positions, orders in flight, and every other order that may still trade
    (open at a venue, emulated, held by an execution algorithm)."""
    cache = node.kernel.cache
    orders = open_orders(cache)
    inflight = cache.orders_inflight_count()
    return NodeStatus(
        node_state=node.trader.state.name,
        trading_state=node.kernel.risk_engine.trading_state.name,
        counts=Counts(
            positions_open=cache.positions_open_count(),
            orders_inflight=inflight,
            orders_open=len(orders) - inflight,
        ),
        strategies=[
            StrategyView(strategy_id=str(s.id), state=s.state.name, is_exiting=exiting(s))
            for s in node.trader.strategies()
        ],
        positions=[_position_view(node, p) for p in cache.positions_open()],
        ts=time.time(),
        venue_counts=venue_counts,
        data_age_secs=_data_age_secs(node),
        clients={str(c.id): c.is_connected for engine in (node.kernel.data_engine, node.kernel.exec_engine)
                 for c in engine._clients.values()},
        faults=faults or [],
        venue_unavailable=venue_unavailable or [],
        orders=[OrderView(str(o.client_order_id), str(o.instrument_id), o.side_string(), str(o.leaves_qty),
                          o.type_string(), o.status_string(), owner(o)) for o in orders],
        log_problem=log_problem,
        components=components or {},
        components_heard=components_heard,
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
