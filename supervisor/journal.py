"""The journal: append-only JSONL, one record a line, flushed and fsync'd before `record` returns.

Every transition, command, approval, refusal and fault goes through here; the terminal display
listens to the same records, so what an operator sees is what is on record.

Each record carries an `id` of the form "<ms>-<n>", strictly increasing in this file even if the
wall clock steps back: it is the record's Redis Stream ID too, so the file is the outbox a Redis
mirror ships from, and Redis itself refuses a record shipped twice (supervisor/redis_mirror.py).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import msgspec

from supervisor.protocol import NodeStatus

Listener = Callable[[dict], None]

_encoder = msgspec.json.Encoder()


class Journal:
    def __init__(self, path: Path, id_floor: tuple[int, int] = (0, 0)):
        """`id_floor`: new ids go above it, and above the file's last (a Redis stream's end, say)."""
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o640)
        self._listeners: list[Listener] = []
        self._lock = threading.Lock()  # ids must not repeat, whichever thread records
        self._last_id = max(last_record_id(path), id_floor)
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
        if "ts" in fields or "id" in fields:
            raise ValueError("the journal sets ts and id itself")
        with self._lock:
            entry = {"ts": datetime.now(timezone.utc).isoformat(timespec="microseconds"), "kind": kind,
                     "id": self._next_id(), **fields}
            os.write(self._fd, _encoder.encode(entry) + b"\n")  # one write: a line is never interleaved
            os.fsync(self._fd)
        for listener in self._listeners:
            listener(entry)
        return entry

    def _next_id(self) -> str:
        last_ms, last_n = self._last_id
        ms = max(time.time_ns() // 1_000_000, last_ms)
        self._last_id = (ms, last_n + 1 if ms == last_ms else 0)
        return "%d-%d" % self._last_id

    def close(self) -> None:
        os.close(self._fd)


def parse_id(record_id: str) -> tuple[int, int]:
    ms, _, n = record_id.partition("-")
    return int(ms), int(n)


def last_record_id(path: Path, tail_bytes: int = 65_536) -> tuple[int, int]:
    """The id of the file's last record that has one, read from its tail; (0, 0) if none."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - tail_bytes))
            lines = f.read().split(b"\n")
    except FileNotFoundError:
        return (0, 0)
    for line in reversed(lines):
        try:
            return parse_id(msgspec.json.decode(line)["id"])
        except (msgspec.DecodeError, KeyError, TypeError, ValueError):
            continue
    return (0, 0)


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
