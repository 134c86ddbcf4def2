"""The journal: append-only JSONL, one record a line, flushed and fsync'd before `record` returns.

Every transition, command, approval, refusal and fault goes through here; the terminal display
listens to the same records, so what an operator sees is what is on record.

Each record carries an `id` of the form "<ms>-<n>", strictly increasing in this file even if the
wall clock steps back: it is the record's Redis Stream ID too, so the file is the outbox a Redis
mirror ships from, and Redis itself refuses a record shipped twice (supervisor/redis_mirror.py).

Writing never fails the caller: nsup must go on supervising with a full or read-only disk. A record
that cannot be written is held in memory (at most HELD_MAX_RECORDS, HELD_MAX_BYTES; past that the
oldest go, counted), `problem` says why, and the records go to the file, in order, as soon as it
takes writes again (at the next record, or `make_durable`, which the daemon calls every second). Two
records tell the story: `journal_degraded` when the first write fails, `journal_restored` once
everything held is on file (how many, how many dropped, since when). A record whose guard needs it on
file first (an approval) is written with `record_durably`, which raises NotDurable instead of holding.

The file is where the path says: before each record the path's inode is compared with the open
file's. A journal deleted, renamed (rotated) or replaced underneath nsup is noticed there, a new file
is opened at the path, and `journal_replaced` names the records that went to the old one; a journal
truncated in place (copytruncate) is noticed by its size.
"""

from __future__ import annotations

import collections
import errno
import os
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import msgspec

from supervisor.protocol import NodeStatus

Listener = Callable[[dict], None]

HELD_MAX_RECORDS = 10_000
HELD_MAX_BYTES = 8 << 20
BATCH_BYTES = 1 << 20  # held records go back to the file this many bytes to a write (and one fsync)

_encoder = msgspec.json.Encoder()


class NotDurable(Exception):
    """A record that must be on file before anything acts on it could not be written; says why."""


class Journal:
    def __init__(self, path: Path, id_floor: tuple[int, int] = (0, 0)):
        """`id_floor`: new ids go above it, and above the file's last (a Redis stream's end, say)."""
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o640)
        self._listeners: list[Listener] = []
        self._lock = threading.Lock()  # ids must not repeat, whichever thread records
        self._last_id = max(last_record_id(path), id_floor)
        self._size = os.fstat(self._fd).st_size  # the file's length up to our last whole record
        self._unended = False  # the file ends in part of a line: the next write ends it first
        self._written: list[str] = []  # [first, last] id this nsup wrote into the open file
        self._lost_path: OSError | None = None  # the path's file went away and a new one cannot be made
        self._held: collections.deque[tuple[str, bytes]] = collections.deque()  # not on file yet, in id order
        self._held_bytes = 0
        self.problem: str | None = None  # why records are held, while they are
        self._degraded_at: str | None = None
        self._dropped: list = [0, None, None]  # how many held records were let go, the first and last id
        self._written_late = 0
        if self._size and os.pread(self._fd, 1, self._size - 1) != b"\n":
            self._unended = True  # ended with the first record written (the disk may be full now)
            self.record("fault", reason="the journal's last record was cut short (a crash or power loss mid-write); "
                        "it is skipped, every record before it is intact")

    def listen(self, listener: Listener) -> None:
        self._listeners.append(listener)

    # Writing ------------------------------------------------------------------------------------

    def record(self, kind: str, **fields) -> dict:
        """On file when this returns, or held (see the module's doc); never raises for the disk."""
        if "ts" in fields or "id" in fields:
            raise ValueError("the journal sets ts and id itself")
        with self._lock:
            news = self._follow_path()
            entry = self._entry(kind, fields)
            self._hold(entry)
            news += [entry, *self._drain()]
        self._announce(news)
        return entry

    def record_durably(self, kind: str, **fields) -> dict:
        """On file when this returns, with everything held before it; else NotDurable, and nothing
        of it is on record (its guard must not count it)."""
        if "ts" in fields or "id" in fields:
            raise ValueError("the journal sets ts and id itself")
        with self._lock:
            news = self._follow_path()
            news += self._drain()
            entry = None
            if not self._held:
                entry = self._entry(kind, fields)
                try:
                    self._write(_line(entry))
                    self._wrote(entry["id"])
                except OSError as exc:
                    news += self._degrade(exc)
                    entry = None
            problem = self.problem
        self._announce(news if entry is None else [*news, entry])
        if entry is None:
            raise NotDurable(f"the journal is not durable ({problem})")
        return entry

    def make_durable(self) -> str | None:
        """Writes what is held, if the file takes it now; returns why not, or None: all on file."""
        with self._lock:
            news = self._follow_path()
            news += self._drain()
            problem = self.problem
        self._announce(news)
        return problem

    def close(self) -> list[bytes]:
        """Writes what it can and closes; returns the records that never reached the file (the caller
        puts them where a person will find them: the log)."""
        self.make_durable()
        with self._lock:
            left = [line for _, line in self._held]
            os.close(self._fd)
        return left

    # What is held (the Redis mirror ships it too) --------------------------------------------------

    @property
    def held(self) -> int:
        return len(self._held)

    @property
    def held_bytes(self) -> int:
        return self._held_bytes

    def held_lines(self) -> list[tuple[str, bytes]]:
        """(id, line) of every record not on file yet, oldest first."""
        with self._lock:
            return list(self._held)

    # Inside, under the lock -------------------------------------------------------------------

    def _entry(self, kind: str, fields: dict | None = None, **more) -> dict:
        return {"ts": _now(), "kind": kind, "id": self._next_id(), **(fields or {}), **more}

    def _next_id(self) -> str:
        last_ms, last_n = self._last_id
        ms = max(time.time_ns() // 1_000_000, last_ms)
        self._last_id = (ms, last_n + 1 if ms == last_ms else 0)
        return "%d-%d" % self._last_id

    def _hold(self, entry: dict) -> None:
        line = _line(entry)
        self._held.append((entry["id"], line))
        self._held_bytes += len(line)
        while len(self._held) > HELD_MAX_RECORDS or self._held_bytes > HELD_MAX_BYTES:
            record_id, dropped = self._held.popleft()
            self._held_bytes -= len(dropped)
            count, first, _ = self._dropped
            self._dropped = [count + 1, first or record_id, record_id]

    def _drain(self) -> list[dict]:
        """Held records to the file, oldest first, in batches; the records this produced (degraded,
        restored), for the listeners."""
        while self._held:
            batch, size = [], 0
            for record_id, line in self._held:
                if batch and size + len(line) > BATCH_BYTES:
                    break
                batch.append(line)
                size += len(line)
            try:
                self._write(b"".join(batch))
            except OSError as exc:
                return self._degrade(exc)
            for _ in batch:
                record_id, line = self._held.popleft()
                self._held_bytes -= len(line)
                self._wrote(record_id)
                self._written_late += self.problem is not None
        if self.problem is None:
            return []
        count, first, last = self._dropped
        restored = self._entry("journal_restored", reason=(
            f"the journal takes writes again; {self._written_late} record(s) held in memory since {self._degraded_at} "
            f"({self.problem}) are on file above" + (f"; {count} were dropped (ids {first} to {last}), past the "
                                                     f"limit of {HELD_MAX_RECORDS} records or {HELD_MAX_BYTES} bytes"
                                                     if count else "")),
            since=self._degraded_at, was=self.problem, written_late=self._written_late, dropped=count,
            dropped_ids=[first, last] if count else None)
        self.problem, self._degraded_at, self._dropped, self._written_late = None, None, [0, None, None], 0
        self._hold(restored)
        return [restored, *self._drain()]

    def _degrade(self, exc: OSError) -> list[dict]:
        why = _why(exc)
        if self.problem is not None:
            self.problem = why  # the reason may change (ENOSPC, then EROFS): the latest stands
            return []
        self.problem, self._degraded_at = why, _now()
        marker = self._entry("journal_degraded", reason=(
            f"the journal cannot be written ({why}): records are held in memory (at most {HELD_MAX_RECORDS}) and "
            "written as soon as it can be; approvals are refused meanwhile; supervision goes on"), error=why)
        self._hold(marker)
        return [marker]

    def _write(self, data: bytes) -> None:
        """One write and one fsync; on any failure the file is cut back to its last whole record."""
        if self._lost_path is not None:
            raise self._lost_path
        if self._unended:
            data = b"\n" + data  # the part-line before it becomes a line of its own, which reading skips
        try:
            written = os.write(self._fd, data)
            if written != len(data):  # a short write: the disk filled up part of the way through
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            os.fsync(self._fd)
        except OSError:
            try:
                os.ftruncate(self._fd, self._size)  # shrinking needs no space
            except OSError:
                self._unended = True  # cannot cut it off: the next write ends it
            raise
        self._unended = False
        self._size = os.fstat(self._fd).st_size

    def _wrote(self, record_id: str) -> None:
        self._written = [self._written[0] if self._written else record_id, record_id]

    def _follow_path(self) -> list[dict]:
        """Is the file at the path still the one open? If it was deleted, renamed or replaced, a new one is
        opened at the path and `journal_replaced` held for it (first in it); if it was truncated, the
        same record says so. Returns that record, for the listeners."""
        try:
            at_path = os.stat(self.path)
        except FileNotFoundError:
            at_path = None
        except OSError:
            return []  # cannot tell: keep writing where we are
        mine = os.fstat(self._fd)
        if at_path is not None and (at_path.st_dev, at_path.st_ino) == (mine.st_dev, mine.st_ino):
            if mine.st_size < self._size:
                return self._replaced("truncated", f"truncated in place (from {self._size} to {mine.st_size} bytes; "
                                      "a copytruncate rotation?)", mine, mine, size=mine.st_size)
            self._size = mine.st_size
            return []
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o640)
        except OSError as exc:
            self._lost_path = OSError(exc.errno, f"the journal at {self.path} is gone and cannot be made again: "
                                                 f"{exc.strerror}")
            return []
        self._lost_path = None
        how = "deleted" if mine.st_nlink == 0 else "moved or replaced"
        os.close(self._fd)
        self._fd = fd
        now = os.fstat(fd)
        return self._replaced(how, f"{how} underneath nsup (a rotation, or a clean-up)", mine, now, size=now.st_size)

    def _replaced(self, how: str, what: str, old: os.stat_result, new: os.stat_result, size: int) -> list[dict]:
        ids = self._written or None
        where = (f"records {ids[0]} to {ids[1]} went to the old file" if ids else "nsup wrote nothing to the old file")
        if how == "deleted" and ids:
            where += " and are gone, unless Redis or a copy holds them"
        self._size, self._written = size, []
        self._unended = bool(size) and os.pread(self._fd, 1, size - 1) != b"\n"
        entry = self._entry("journal_replaced", how=how, path=str(self.path), previous_inode=old.st_ino,
                            inode=new.st_ino, ids_in_previous=ids,
                            reason=f"the journal at {self.path} was {what}: {where}; the journal goes on here")
        self._hold(entry)
        return [entry]

    def _announce(self, entries: list[dict]) -> None:
        for entry in entries:
            for listener in self._listeners:
                listener(entry)


def _line(entry: dict) -> bytes:
    return _encoder.encode(entry) + b"\n"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def _why(exc: OSError) -> str:
    name = errno.errorcode.get(exc.errno, "error") if exc.errno else type(exc).__name__
    return f"{name}: {exc.strerror or exc}"


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


def read_journal(path: Path, kinds: tuple[str, ...] = ()) -> list[dict]:
    """Every intact record (of these kinds only, if given: the others are not decoded); a torn last
    line (power loss mid-write) is skipped, not fatal."""
    wanted = [b'"kind":"%s"' % kind.encode() for kind in kinds]
    records = []
    with open(path, "rb") as f:
        for line in f:
            if wanted and not any(w in line for w in wanted):
                continue
            try:
                records.append(msgspec.json.decode(line))
            except msgspec.DecodeError:
                continue
    return records


def count_fields(status: NodeStatus | None) -> dict:
    """The three counts as every record carries them: flat fields, None when nothing is known yet."""
    counts = status.counts if status is not None else None
    return {f: getattr(counts, f) if counts else None for f in ("positions_open", "orders_inflight", "orders_open")}
