"""What the operator sees: loguru on the terminal (or JSON lines with --log-json).

It listens to the journal, so every transition, refusal and fault on screen is one on record, and to
the worker's status, printing a line whenever the lifecycle state, trading state or counts change.

No traceback reaches the terminal: an exception logged anywhere in nsup shows as one line, its type
and message, and its traceback goes on record (`journal_tracebacks`: a `fault` with `traceback`).
"""

from __future__ import annotations

import asyncio
import functools
import sys
import threading
import traceback

import msgspec
from loguru import logger

from supervisor.protocol import NodeStatus

_LEVELS = {
    "transition": "SUCCESS", "refusal": "WARNING", "fault": "ERROR", "halt_stuck": "CRITICAL",
    "hung_with_exposure": "CRITICAL", "venue_disagrees": "CRITICAL", "health": "WARNING", "hung": "ERROR",
    "component_state": "WARNING",
    "journal_degraded": "CRITICAL", "journal_restored": "WARNING", "journal_replaced": "ERROR",
    "state_not_durable": "CRITICAL", "state_durable": "WARNING", "scheduled": "INFO",
}


def setup_logging(json_lines: bool) -> None:
    logger.remove()
    if json_lines:
        logger.add(sys.stderr, serialize=True, level="INFO", format=_one_line("{message}"))
    else:
        logger.add(sys.stderr, level="INFO",
                   format=_one_line("<green>{time:HH:mm:ss.SSS}</green> <level>{level: <8}</level> {message}"))


def _one_line(layout: str):
    """A loguru format that ends an exception's line with its type and message; a format given as a
    function gets no traceback appended (one given as a string would)."""
    def line(record) -> str:
        exc = record["exception"]
        record["extra"]["error"] = f" [{exc.type.__name__}: {exc.value}]" if exc is not None and exc.type else ""
        return layout + "{extra[error]}\n"

    return line


def journal_tracebacks(journal) -> int:
    """Every exception logged in nsup goes on record with its traceback, as a `fault`. Returns the sink's
    id (logger.remove). From another thread the record is made on nsup's loop, if one runs."""
    main_loop = None
    try:
        main_loop = asyncio.get_running_loop()
    except RuntimeError:
        pass

    def sink(message) -> None:
        record = message.record
        exc = record["exception"]
        fields = {"reason": f"{record['message']} ({exc.type.__name__}: {exc.value})",
                  "traceback": "".join(traceback.format_exception(exc.type, exc.value, exc.traceback)),
                  "where": f"{record['name']}:{record['function']}:{record['line']}"}
        write = functools.partial(journal.record, "fault", **fields)
        loop = _running_loop() or main_loop
        if loop is not None and threading.current_thread() is not threading.main_thread():
            try:
                loop.call_soon_threadsafe(write)
                return
            except RuntimeError:
                pass  # that loop has closed: record it from here
        elif loop is not None:
            loop.call_soon(write)  # not inside the logging call: the record's own listeners log too
            return
        write()

    return logger.add(sink, level="ERROR", filter=lambda record: record["exception"] is not None and
                      record["exception"].type is not None, format="{message}", catch=True)


def _running_loop():
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


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
        elif kind == "component_state":
            level = {"FAULTED": "ERROR", "DEGRADED": "WARNING"}.get(entry["dest"], "INFO")
            bound.log(level, "COMPONENT: {component} ({component_type}) {source} -> {dest}", **entry)
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
