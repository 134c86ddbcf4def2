"""Shared builders and hypothesis strategies for NodeStatus reads (not a test module)."""

from __future__ import annotations

import math

import msgspec
from hypothesis import strategies as st

from supervisor import protocol as p
from supervisor.lifecycle import FlatReads

TRADING_STATES = ("ACTIVE", "REDUCING", "HALTED")


def status(
    positions: int = 0,
    inflight: int = 0,
    open_: int = 0,
    exiting: bool = False,
    trading_state: str = "HALTED",
    ts: float = 1_700_000_000.0,
    venue_counts: p.Counts | None = None,
) -> p.NodeStatus:
    """One status read; flat by default."""
    return p.NodeStatus(
        venue_counts=venue_counts,
        node_state="RUNNING",
        trading_state=trading_state,
        counts=p.Counts(positions, inflight, open_),
        strategies=[
            p.StrategyView("EMACross-001", "RUNNING", False),
            p.StrategyView("Demo-002", "RUNNING", exiting),
        ],
        positions=[p.PositionView("EURUSD.SIM", "LONG", "1000", "1.20 USD")] if positions else [],
        ts=ts,
    )


# Biased towards zero so that flat reads are common and the interesting boundary is explored.
small_counts = st.sampled_from([0, 0, 0, 0, 1, 2, 7])
counts = st.builds(p.Counts, small_counts, small_counts, small_counts)
strategy_views = st.builds(
    p.StrategyView,
    strategy_id=st.sampled_from(["EMACross-001", "Demo-002", "X-003"]),
    state=st.sampled_from(["RUNNING", "STOPPED", "DEGRADED"]),
    is_exiting=st.sampled_from([False, False, False, True]),
)
position_views = st.builds(
    p.PositionView,
    instrument_id=st.sampled_from(["EURUSD.SIM", "BTCUSDT.BINANCE"]),
    side=st.sampled_from(["LONG", "SHORT"]),
    quantity=st.sampled_from(["1", "1000", "0.5"]),
    unrealized_pnl=st.sampled_from(["0 USD", "-3.20 USD"]),
)
timestamps = st.floats(min_value=0, max_value=4e9, allow_nan=False, allow_infinity=False)


def node_statuses(ts=timestamps) -> st.SearchStrategy[p.NodeStatus]:
    return st.builds(
        p.NodeStatus,
        node_state=st.sampled_from(["BUILT", "RUNNING", "STOPPED"]),
        trading_state=st.sampled_from(TRADING_STATES),
        counts=counts,
        strategies=st.lists(strategy_views, max_size=3),
        positions=st.lists(position_views, max_size=2),
        ts=ts,
        venue_counts=st.none() | counts,
        components=st.dictionaries(st.sampled_from(["EMACross-001", "DataEngine"]), st.sampled_from(["DEGRADED", "FAULTED"]),
                                   max_size=2),
    )


def flat_reads(span_secs: float, n: int = 2, last: str = "HALTED") -> FlatReads:
    """Verified-flat evidence as the daemon builds it: flat reads, the last HALTED, span on nsup's clock."""
    reads = [status(trading_state="REDUCING", ts=1_700_000_000.0 + i) for i in range(n - 1)]
    return FlatReads((*reads, status(trading_state=last, ts=1_700_000_000.0 + n, venue_counts=VENUES_FLAT)), span_secs)


VENUES_FLAT = p.Counts(0, 0, 0)


spans = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([0.0, 0.1, 0.5, 1.0, -1.0])


def any_flat_reads(max_size: int = 4) -> st.SearchStrategy[FlatReads]:
    """Random evidence: random reads, random span (negative, NaN and infinite included)."""
    return st.builds(FlatReads, reads=st.lists(node_statuses(), max_size=max_size).map(tuple), span_secs=spans)


@st.composite
def verified_flat_reads(draw, interval: float) -> FlatReads:
    """Evidence DESIGN.md calls verified flat: 2+ reads, all flat, the last HALTED, span >= interval.
    The worker's own timestamps are arbitrary: the span is measured on nsup's clock."""
    n = draw(st.integers(min_value=2, max_value=4))
    states = [draw(st.sampled_from(TRADING_STATES)) for _ in range(n - 1)] + ["HALTED"]
    reads = [status(trading_state=s, ts=draw(timestamps)) for s in states]
    reads[-1] = msgspec.structs.replace(reads[-1], venue_counts=VENUES_FLAT)  # the venues asked, last
    return FlatReads(tuple(reads), interval + draw(st.floats(min_value=0, max_value=3)))


@st.composite
def nearly_flat_reads(draw, interval: float) -> FlatReads | None:
    """Verified-flat evidence with exactly one thing spoiled: what the guard must still refuse."""
    evidence = draw(verified_flat_reads(interval))
    reads, span = list(evidence.reads), evidence.span_secs
    spoil = draw(st.sampled_from(["not_halted", "too_short", "count", "exiting", "one_read", "nan_span", "none",
                                  "venue_unasked", "venue_holds", "venue_cannot_say"]))
    i = draw(st.integers(0, len(reads) - 1))
    if spoil == "not_halted":
        reads[-1] = msgspec.structs.replace(reads[-1], trading_state=draw(st.sampled_from(["ACTIVE", "REDUCING"])))
    elif spoil == "too_short":
        span = interval * draw(st.floats(min_value=-1, max_value=0.999))
    elif spoil == "count":  # an order still open or in flight (a position alone is the venue's to judge)
        field = draw(st.sampled_from(["orders_inflight", "orders_open"]))
        reads[i] = msgspec.structs.replace(reads[i], counts=msgspec.structs.replace(reads[i].counts, **{field: 1}))
    elif spoil == "exiting":
        reads[i] = msgspec.structs.replace(reads[i], strategies=[p.StrategyView("S-009", "RUNNING", True)])
    elif spoil == "one_read":
        reads = reads[-1:]
    elif spoil == "nan_span":
        span = math.nan
    elif spoil == "venue_unasked":
        reads[-1] = msgspec.structs.replace(reads[-1], venue_counts=None)
    elif spoil == "venue_cannot_say":
        reads[-1] = msgspec.structs.replace(reads[-1], venue_unavailable=["SIM: the query failed"])
    elif spoil == "venue_holds":
        field = draw(st.sampled_from(["positions_open", "orders_open"]))
        reads[-1] = msgspec.structs.replace(reads[-1], venue_counts=msgspec.structs.replace(VENUES_FLAT, **{field: 1}))
    else:
        return None
    return FlatReads(tuple(reads), span)


def is_flat_oracle(read: p.NodeStatus) -> bool:
    """Written from DESIGN.md, not from NodeStatus.is_flat."""
    c = read.counts
    return (c.positions_open, c.orders_inflight, c.orders_open) == (0, 0, 0) and all(
        s.is_exiting is False for s in read.strategies
    )


def is_settled_oracle(read: p.NodeStatus) -> bool:
    """Nothing of the node's can still trade: no order open or in flight, no strategy exiting."""
    c = read.counts
    return (c.orders_inflight, c.orders_open) == (0, 0) and all(s.is_exiting is False for s in read.strategies)


def verified_flat_oracle(evidence: FlatReads | None, interval: float, trust_cache: bool = False) -> bool:
    """docs/design.md: two (or more) reads, the first and last at least `interval` apart, in which
    nothing can trade; HALTED and the venues asked on the last. The venues all answering and holding
    nothing settles the positions: the cache's are then a disagreement. A venue that cannot say leaves
    it to the cache, which must then be flat, and only where the config trusts it."""
    if not isinstance(evidence, FlatReads) or len(evidence.reads) < 2:
        return False
    if any(not is_settled_oracle(r) for r in evidence.reads):
        return False
    last = evidence.reads[-1]
    venues = last.venue_counts
    if venues is None or (venues.positions_open, venues.orders_inflight, venues.orders_open) != (0, 0, 0):
        return False
    if last.venue_unavailable and not (trust_cache and all(is_flat_oracle(r) for r in evidence.reads)):
        return False
    return last.trading_state == "HALTED" and not (evidence.span_secs < interval or math.isnan(evidence.span_secs))
