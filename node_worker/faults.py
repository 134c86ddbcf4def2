"""What went wrong that the operator must hear of, not only the log file: orders a venue rejected, and
requests an adapter could not serve (a subscription to data it does not have, an unsupported order
command, a request that failed).

Adapters report with report_fault() on the node's message bus; order rejections are picked up from
the order events every strategy receives. Each kind of fault is told to nsup once as a Notice (the
journal's `worker_notice`) when it first appears, and every fault of the last RECENT_SECS is in the
status, where it makes the health `degraded` (supervisor/protocol.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from nautilus_trader.model.events import OrderModifyRejected, OrderRejected

FAULT_TOPIC = "nsup.fault"
RECENT_SECS = 60.0


def report_fault(msgbus, text: str) -> None:
    """For adapters: puts a fault on the node's message bus, where the worker's FaultWatch hears it."""
    msgbus.publish(FAULT_TOPIC, text)


class FaultWatch:
    def __init__(self, msgbus, loop: asyncio.AbstractEventLoop, notify: Callable[[str], None]):
        self._loop = loop
        self._notify = notify
        self._recent: dict[str, tuple[float, int]] = {}  # kind of fault -> (last seen, times seen)
        msgbus.subscribe(FAULT_TOPIC, self._on_fault)
        msgbus.subscribe("events.order.*", self._on_order_event)

    def recent(self) -> list[str]:
        """The faults of the last RECENT_SECS, oldest first, each with how often it happened."""
        now = time.monotonic()
        self._recent = {k: seen for k, seen in self._recent.items() if now - seen[0] < RECENT_SECS}
        return [f"{k} ({n}x)" if n > 1 else k for k, (_, n) in self._recent.items()]

    def _on_order_event(self, event) -> None:
        if isinstance(event, OrderRejected):
            self._on_fault(f"{event.instrument_id} order rejected: {event.reason}")
        elif isinstance(event, OrderModifyRejected):
            self._on_fault(f"{event.instrument_id} order modify rejected: {event.reason}")

    def _on_fault(self, text: str) -> None:
        # Strategies and timers may run on another thread: only the loop talks to nsup.
        self._loop.call_soon_threadsafe(self._record, text)

    def _record(self, text: str) -> None:
        self.recent()  # forgets the old ones first: a fault seen again after a quiet spell is news again
        _, count = self._recent.pop(text, (0.0, 0))
        self._recent[text] = (time.monotonic(), count + 1)
        if count == 0:
            self._notify(f"fault: {text}")
