"""The journal: append-only JSONL, one record a line, flushed and fsync'd before `record` returns.

Every transition, command, approval, refusal and fault goes through here; the terminal display
listens to the same records, so what an operator sees is what is on record.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import msgspec

from supervisor.protocol import NodeStatus

Listener = Callable[[dict], None]

_encoder = msgspec.json.Encoder()


class Journal:
    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o640)
        self._listeners: list[Listener] = []
        if self._end_torn_line():
            self.record("fault", reason="the journal's last record was cut short (a crash or power loss mid-write); "
                        "it is skipped, every record before it is intact")

    def _end_torn_line(self) -> bool:
        """A record cut short by a crash is closed with a newline, so the next one stands on its own."""
        size = os.fstat(self._fd).st_size
        if size and os.pread(self._fd, 1, size - 1) != b"\n":
            os.write(self._fd, b"\n")
            os.fsync(self._fd)
            return True
        return False

    def listen(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def record(self, kind: str, **fields) -> dict:
        if "ts" in fields:
            raise ValueError("the journal sets ts itself")
        entry = {"ts": datetime.now(timezone.utc).isoformat(timespec="microseconds"), "kind": kind, **fields}
        os.write(self._fd, _encoder.encode(entry) + b"\n")  # one write: a line is never interleaved
        os.fsync(self._fd)
        for listener in self._listeners:
            listener(entry)
        return entry

    def close(self) -> None:
        os.close(self._fd)


def read_journal(path: Path) -> list[dict]:
    """Every intact record; a torn last line (power loss mid-write) is skipped, not fatal."""
    records = []
    with open(path, "rb") as f:
        for line in f:
            try:
                records.append(msgspec.json.decode(line))
            except msgspec.DecodeError:
                continue
    return records


def count_fields(status: NodeStatus | None) -> dict:
    """The three counts as every record carries them: flat fields, None when nothing is known yet."""
    counts = status.counts if status is not None else None
    return {f: getattr(counts, f) if counts else None for f in ("positions_open", "orders_inflight", "orders_open")}
