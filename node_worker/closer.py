"""nsup's closer: whatever of the node's is still open, whoever owns it, is cancelled or closed.

The strategies' own market_exit() comes first; this is what it leaves behind (what a strategy still
exiting handles itself is left to it, so that no position is closed twice). An order found at
reconciliation that no strategy claims, an order held by an execution algorithm (a TWAP's parent) or
by the order emulator, a contingent child, a position on an instrument no strategy trades: each is
cancelled, or closed with a reduce-only market order, by a strategy of nsup's own (NsupCloser), which
the worker adds to every node. What it sends is named in the answer (order and position ids), for
the journal.

Positions are closed at the venue's own granularity. On a HEDGING account each position is its own.
On a NETTING account the venue holds one net position per instrument, while NautilusTrader keeps one
per strategy: two strategies long and short the same size are flat at the venue, and a reduce-only
close of either would be refused there as flipping it. So the closer sends orders for the net only,
each against one of the node's positions on the net's side (so the node's books stay right), and
leaves the rest to the venue check: a position the node's cache shows and the venue does not hold is
a disagreement, not exposure (docs/design.md).

The node reconciles with its venues first (when no order is in flight), so that what only the venue
holds (a fill the node missed, an order placed by hand) is in the cache, and closed like any other.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal

from nautilus_trader.config import StrategyConfig
from nautilus_trader.model.enums import OrderSide
from nautilus_trader.model.identifiers import InstrumentId
from nautilus_trader.model.objects import Quantity
from nautilus_trader.model.orders import Order
from nautilus_trader.model.position import Position
from nautilus_trader.trading.strategy import Strategy

from node_worker.entry_gate import hedging

RECONCILE_TIMEOUT_SECS = 10.0
CLOSE_WITHIN_SECS = 5.0  # passes after the reconciliation: exits end and fills come back within this, or nsup asks again
PASS_SECS = 0.2


class NsupCloserConfig(StrategyConfig, frozen=True):
    order_id_tag: str = "NSUP"


async def close_everything(node) -> list[str]:
    """Reconciles the node with its venues, cancels every open order and closes every position the
    node holds; returns what was sent. Runs on the node's loop, within about CLOSE_WITHIN_SECS after
    the reconciliation. On an account another node shares, the node's cache holds only its own (the
    reconciliation keeps to its [node] scope), so the other node's positions are never this one's."""
    engine, cache = node.kernel.exec_engine, node.kernel.cache
    if not cache.orders_inflight():  # with orders in flight their own events will tell
        await engine.reconcile_execution_state(timeout_secs=RECONCILE_TIMEOUT_SECS)
    closer = next(s for s in node.trader.strategies() if isinstance(s, NsupCloser))
    exiting_now = _exiting_ids(node)
    actions = [closer.cancel(order) for order in open_orders(cache) if _left_behind(order, exiting_now)]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + CLOSE_WITHIN_SECS
    tried: set = set()  # each position (HEDGING) or instrument (NETTING) once per call: a refused close waits for nsup
    while True:
        sent, waiting = closer.close_what_is_left(engine, _exiting_ids(node), tried)
        actions += sent
        if not (sent or waiting) or loop.time() > deadline:
            return [a for a in actions if a]
        await asyncio.sleep(PASS_SECS)  # fills come back, exits end; then what is left is closed


def users_strategies(node) -> list[Strategy]:
    """The node's strategies but nsup's own closer: theirs are the market exits nsup asks for (the
    closer's position is the offset of what it closed, not something to exit again)."""
    return [s for s in node.trader.strategies() if not isinstance(s, NsupCloser)]


def exiting(strategy: Strategy) -> bool:
    """Its market exit is under way and can still get somewhere. NautilusTrader checks an exit only
    while the strategy is RUNNING, and degrade() and fault() leave `is_exiting()` set: a strategy
    DEGRADED or FAULTED mid-exit would otherwise hold the node off flat for good, and keep nsup's closer
    off its positions. Its orders and positions are the closer's, as any strategy's that is not exiting."""
    return strategy.is_exiting() and strategy.is_running


def _exiting_ids(node) -> set:
    return {s.id for s in users_strategies(node) if exiting(s)}


class NsupCloser(Strategy):
    """Trades nothing of its own: it only cancels and closes what the node holds, on nsup's word."""

    def __init__(self):
        super().__init__(NsupCloserConfig())

    def cancel(self, order: Order) -> str | None:
        if order.is_pending_cancel:
            return None
        self.cancel_order(order)
        return (f"cancel {order.client_order_id} {order.instrument_id} {order.side_string()} {order.leaves_qty} "
                f"{order.type_string()} ({owner(order)})")

    def close_what_is_left(self, engine, exiting: set, tried: set) -> tuple[list[str], bool]:
        """One pass: closes what no strategy is closing, per instrument; returns what it sent, and
        whether an instrument had to wait (a strategy still exiting there, or an order of the closer's
        in flight), so that the caller passes again once fills are back.

        The risk engine judges a close under REDUCING by the instrument's net (a SELL is denied while
        net short), so only positions on the net's side are closed in one pass (all of them, when the
        net is zero); the other side's go in the next one, once the net has moved."""
        sent, waiting = [], False
        for instrument_id, positions in _by_instrument(self.cache.positions_open()).items():
            busy = ({p.strategy_id for p in positions} & exiting
                    or self.cache.orders_inflight(instrument_id=instrument_id, strategy_id=self.id))
            if busy:
                waiting = True
                continue
            net = sum((p.signed_decimal_qty() for p in positions), Decimal(0))
            if hedging(engine._routing_map, instrument_id.venue):  # the venue's account: its granularity
                now = [p for p in positions if (net == 0 or p.is_long == (net > 0)) and p.id not in tried]
                tried.update(p.id for p in now)
                sent += [self.close(p, p.quantity, position_id=p.id) for p in now]
            elif instrument_id not in tried:
                tried.add(instrument_id)
                sent += self._close_the_net(positions, net)
        return sent, waiting

    def _close_the_net(self, positions: list[Position], net: Decimal) -> list[str]:
        """NETTING: the venue holds the net only; orders against the positions on its side, to the net."""
        on_its_side = sorted((p for p in positions if p.signed_decimal_qty() * net > 0), key=lambda p: -p.quantity)
        left, actions = abs(net), []
        for position in on_its_side:
            if left <= 0:
                break
            size = min(position.quantity.as_decimal(), left)
            actions.append(self.close(position, Quantity(size, position.size_precision)))
            left -= size
        return actions

    def close(self, position: Position, quantity: Quantity, position_id=None) -> str:
        """A reduce-only market order against `position`. On HEDGING it names the position; on NETTING
        NautilusTrader books every order of a strategy to that strategy's own net position (another's
        id is denied), so the fill lands in this closer's position, which then offsets the one closed:
        the instrument's net, the venue's granularity, is what goes to zero."""
        side = OrderSide.SELL if position.is_long else OrderSide.BUY
        order = self.order_factory.market(position.instrument_id, side, quantity, reduce_only=True)
        self.submit_order(order, position_id=position_id)
        return (f"close {position.id} {position.instrument_id} {position.side.name} {quantity} of {position.quantity} "
                f"({position.strategy_id}): {order.client_order_id} {order.side_string()} reduce-only")


def open_orders(cache) -> list[Order]:
    """Every order that may still trade: open at a venue, in flight, emulated, or held by an execution
    algorithm."""
    held_locally = [o for o in cache.orders_emulated() if o.is_emulated]  # the cache's indexes: no pass over
    held_locally += [o for algorithm in cache.exec_algorithm_ids()     # every order of the session
                     for o in cache.orders_for_exec_algorithm(algorithm) if o.is_active_local]
    orders = {o.client_order_id: o for o in [*cache.orders_open(), *cache.orders_inflight(), *held_locally]}
    return list(orders.values())


def _left_behind(order: Order, exiting: set) -> bool:
    """Not the business of a strategy's market exit still running: its venue orders are. What an
    execution algorithm or the emulator holds, market_exit() leaves alone (NautilusTrader 1.231)."""
    return order.strategy_id not in exiting or order.is_active_local


def owner(order: Order) -> str:
    algorithm = f", via {order.exec_algorithm_id}" if order.exec_algorithm_id is not None else ""
    return f"{order.strategy_id}{algorithm}"


def _by_instrument(positions: list[Position]) -> dict[InstrumentId, list[Position]]:
    grouped: dict[InstrumentId, list[Position]] = {}
    for position in positions:
        grouped.setdefault(position.instrument_id, []).append(position)
    return grouped
