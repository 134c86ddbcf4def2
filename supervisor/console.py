"""What the operator sees: loguru on the terminal (or JSON lines with --log-json).

It listens to the journal, so every transition, refusal and fault on screen is one on record, and to
the worker's status, printing a line whenever the lifecycle state, trading state or counts change.
"""

from __future__ import annotations

import sys

import msgspec
from loguru import logger

from supervisor.protocol import NodeStatus

_LEVELS = {
    "transition": "SUCCESS", "refusal": "WARNING", "fault": "ERROR", "halt_stuck": "CRITICAL",
    "hung_with_exposure": "CRITICAL", "venue_disagrees": "CRITICAL", "health": "WARNING", "hung": "ERROR",
}


def setup_logging(json_lines: bool) -> None:
    logger.remove()
    if json_lines:
        logger.add(sys.stderr, serialize=True, level="INFO")
    else:
        logger.add(sys.stderr, level="INFO", format="<green>{time:HH:mm:ss.SSS}</green> <level>{level: <8}</level> {message}")


class Console:
    def __init__(self) -> None:
        self._last_line: tuple | None = None

    def on_record(self, entry: dict) -> None:
        kind = entry["kind"]
        level = _LEVELS.get(kind)
        if level is None:
            return
        bound = logger.bind(journal=entry)
        if kind == "transition":
            bound.log(level, "{source} -> {dest} ({trigger}) positions={positions_open} inflight={orders_inflight} open={orders_open}", **entry)
        elif kind == "health":
            bound.log("INFO" if entry["health"] == "ok" else level, "HEALTH: {} (was {})", entry["health"], entry["was"])
        else:
            bound.log(level, "{}: {}", kind.upper(), entry.get("reason", entry.get("result", "")))
            for p in entry.get("positions", ()):
                bound.log(level, "  open: {} {} {} unrealized {}", p.instrument_id, p.side, p.quantity, p.unrealized_pnl)

    def on_status(self, lifecycle_state: str, status: NodeStatus) -> None:
        c = status.counts
        line = (lifecycle_state, status.trading_state, c.positions_open, c.orders_inflight, c.orders_open)
        if line == self._last_line:
            return
        self._last_line = line
        positions = ", ".join(f"{p.instrument_id} {p.side} {p.quantity} pnl {p.unrealized_pnl}" for p in status.positions)
        logger.bind(status=dict(
            state=lifecycle_state, trading_state=status.trading_state, positions_open=c.positions_open,
            orders_inflight=c.orders_inflight, orders_open=c.orders_open,
            positions=[msgspec.structs.asdict(p) for p in status.positions],
        )).info(
            "[{}] trading={} positions={} inflight={} open={}{}",
            *line, f"  ({positions})" if positions else "",
        )
