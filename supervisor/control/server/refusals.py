"""Refusals on record, coalesced, so that no client can grow the journal by asking badly.

Every refusal is on record, but not one record each: per client ("peer": its connection over ipc,
its CURVE key over tcp), command and kind of refusal (the control protocol's errno), the first in a
window is journaled at once, in full, and the rest as one record with their count (`repeated`) when
the window ends. A client that keeps finding new kinds is bounded too: past MAX_KINDS_PER_PEER kinds
in a window its refusals are counted together (a kind of its own), and past MAX_KINDS kinds from all
clients, everyone's others. So the refusal records of a window are at most 2 x MAX_KINDS + 2,
whatever comes in, and a flood of one kind from one client costs two records a window.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from datetime import datetime, timezone

WINDOW_SECS = 60.0
MAX_KINDS_PER_PEER = 8
MAX_KINDS = 64

Record = Callable[..., None]  # record(kind, **fields): the journal, with nsup's state and counts added


class RefusalRecords:
    def __init__(self, record: Record, window_secs: float = WINDOW_SECS):
        self._record = record
        self.window_secs = window_secs
        self._open: dict[tuple[str, str, int], list] = {}  # (peer, command, errno) -> [repeats, since, last fields]
        self._kinds_of: collections.Counter[str] = collections.Counter()
        self._flush_at: asyncio.TimerHandle | None = None

    def refuse(self, peer: str, command: str, errno: int, fields: dict) -> None:
        """One refusal (its `fields`: command, actor, reason, ...): on record now, or counted."""
        key = (peer, command, int(errno))
        if key not in self._open:
            if len(self._open) >= MAX_KINDS:
                key = ("*", "*", 0)  # everyone's other kinds, together
            elif self._kinds_of[peer] >= MAX_KINDS_PER_PEER:
                key = (peer, "*", 0)  # this client's other kinds, together
        tally = self._open.get(key)
        if tally is not None:
            tally[0] += 1
            tally[2] = fields
            return
        self._open[key] = [0, _now(), fields]
        self._kinds_of[peer] += 1
        self._record("refusal", **fields, peer=peer)
        self._flush_later()

    def flush(self) -> None:
        """The window ends: one record for each kind refused again since its first (nsup calls this at exit
        too, so that no count is lost)."""
        if self._flush_at is not None:
            self._flush_at.cancel()
            self._flush_at = None
        tallies, self._open = self._open, {}
        self._kinds_of.clear()
        for (peer, _, _), (repeats, since, fields) in tallies.items():
            if repeats:
                self._record("refusal", **{**fields, "reason": f"{repeats} more like this since {since}; the last: "
                                                              f"{fields.get('reason')}"},
                             peer=peer, repeated=repeats, since=since)

    def _flush_later(self) -> None:
        if self._flush_at is not None:
            return
        try:
            self._flush_at = asyncio.get_running_loop().call_later(self.window_secs, self.flush)
        except RuntimeError:
            pass  # no loop (a caller outside nsup's): flushed when asked


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")
