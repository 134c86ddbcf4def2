"""The Redis mirror: the journal as a Redis Stream, the persisted state and the live status as keys,
so that a desk reads a fleet of nodes in one place (`nsupctl --redis URL nodes`).

    [redis]                                        # optional; without it nothing touches Redis
    url = "redis://127.0.0.1:6379/0"               # redis://, rediss:// (TLS) or unix://
    name = "demo"                                  # this node in Redis (default: the state dir's last part)
    timeout_secs = 2.0                             # to connect, and for each command
    node_cache = false                             # also keep the node's NautilusTrader cache in this Redis
    stream_max_records = 1000000                   # the stream is trimmed (approximately) past this
    drain_secs = 2.0                               # at exit, the most nsup spends shipping what is left
    lease_secs = 10.0                              # the node's lease (supervisor/lease.py) expires this long
                                                   # after its last renewal; renewed every third of it

Redis is never in the lifecycle's path. The journal file is the outbox: `Journal.record` writes and
fsyncs the file and returns, and this thread ships each record under the record's own id. Stream
ids only grow, so Redis itself refuses a record shipped twice; a record not yet shipped when Redis
is down, slow, or nsup exits is shipped from the file by the next connection, of this nsup or the
next one. Keys, for a node called NAME:

    nsup:nodes           a set of the node names
    nsup:NAME:journal    a stream; each entry has kind, ts and record (the journal line, JSON)
    nsup:NAME:state      the persisted state (JSON); only ever replaced by a newer version
    nsup:NAME:status     the live status, as `nsupctl status` shows it, with host and updated_at
    nsup:NAME:relocated  journal id -> stream id, for the rare record that had to go in at the end

Where shipping stands is kept beside the journal (journal.jsonl.shipped, with the file's inode);
without it, when Redis lost its data, or when the journal file was replaced (rotated), the file is
walked again and only what the stream lacks is sent. Records the journal holds in memory because its
disk will not take them (supervisor/journal.py) are shipped too, from memory, after the file: Redis
then has them even if nsup dies before the disk comes back.
"""

from __future__ import annotations

import os
import random
import re
import socket
import threading
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated
from urllib.parse import unquote, urlsplit

import msgspec
from loguru import logger

from supervisor.journal import parse_id
from supervisor.persisted_state import PersistedState
from supervisor.persisted_state import decode as decode_state

PREFIX = "nsup"
NODES_KEY = f"{PREFIX}:nodes"
BATCH_RECORDS = 500
IDLE_WAKE_SECS = 5.0  # ships at least this often even if nobody wakes the thread
BACKOFF_SECS, BACKOFF_MAX_SECS = 0.1, 5.0
REDIS_SCHEMES = ("redis", "rediss", "unix")

# SET the state only if it is newer than the copy there: an nsup cut off from Redis for a while (or
# a stale one on another host) never overwrites what a newer session wrote.
_SET_IF_NEWER = """
local current = redis.call('GET', KEYS[1])
if current then
  local ok, decoded = pcall(cjson.decode, current)
  if ok and type(decoded) == 'table' and tonumber(decoded['version'])
     and tonumber(decoded['version']) >= tonumber(ARGV[2]) then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[1])
return 1
"""

# Redis runs a script whole: the stream cannot lose its data (a restart without it, a FLUSHALL) between
# the question "is the last record we settled still there?" and the XADDs that follow it. Asked apart,
# a loss in between left the stream starting part-way, and the records before it were then appended
# after it, out of order. The journal writes each line as {"ts":…,"kind":…,"id":…}: its first "id" is
# the record's own. A record relocated past the stream's end carries its journal id in journal_id.
_ADD_IF_SETTLED = """
local function journal_id(entry)
  local record
  for i = 1, #entry, 2 do
    if entry[i] == 'journal_id' then return entry[i + 1] end
    if entry[i] == 'record' then record = entry[i + 1] end
  end
  local _, at = string.find(record or '', '"id":"', 1, true)
  return at and string.match(record, '^[^"]*', at + 1)
end
if ARGV[1] ~= '' then
  local found = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
  if #found == 0 or journal_id(found[1][2]) ~= ARGV[2] then
    return false
  end
end
local placed = {}
for i = 4, #ARGV, 4 do
  placed[#placed + 1] = redis.pcall('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], ARGV[i],
                                    'kind', ARGV[i + 1], 'ts', ARGV[i + 2], 'record', ARGV[i + 3])
end
return placed
"""


class RedisSection(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    url: str | None = None
    name: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.@-]{1,100}$")] | None = None
    timeout_secs: Annotated[float, msgspec.Meta(gt=0, le=60)] = 2.0
    node_cache: bool = False
    stream_max_records: Annotated[int, msgspec.Meta(ge=1000, le=1_000_000_000)] = 1_000_000
    drain_secs: Annotated[float, msgspec.Meta(ge=0, le=60)] = 2.0
    lease_secs: Annotated[float, msgspec.Meta(ge=1, le=300)] = 10.0

    def __post_init__(self):
        if self.url is None:
            if self.node_cache:
                raise ValueError("node_cache: needs url")
            return
        parts = urlsplit(self.url)
        if parts.query or parts.fragment:
            raise ValueError("url: no ?options: the timeouts come from timeout_secs, and nsup must bound them")
        if parts.scheme not in REDIS_SCHEMES:
            raise ValueError(f"url: expected redis://HOST:PORT/DB, rediss://… or unix://PATH, not {redacted(self.url)!r}")
        try:
            parts.port  # noqa: B018 (raises on a bad port)
        except ValueError as exc:
            raise ValueError(f"url: bad port in {redacted(self.url)!r}: {exc}") from None
        if parts.scheme != "unix" and not re.fullmatch(r"/?\d*", parts.path):
            raise ValueError(f"url: the path is the database number (redis://HOST:PORT/0), not {parts.path!r}")
        if self.node_cache:
            if parts.scheme == "unix":
                raise ValueError("node_cache: NautilusTrader's cache connects by host and port, not a unix socket")
            if parts.path.strip("/") not in ("", "0"):
                raise ValueError("node_cache: NautilusTrader's cache always uses database 0; use a url without a database number")

    @property
    def enabled(self) -> bool:
        return self.url is not None


def redacted(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return url.replace(f":{parts.password}@", ":***@", 1)


def node_cache_database(section: RedisSection) -> dict | None:
    """The NautilusTrader DatabaseConfig fields for the worker's cache (None: the cache stays in memory).

    NautilusTrader's defaults wait minutes for an unreachable Redis (DESIGN.md); these wait
    `timeout_secs` (whole seconds, at least one) and retry once."""
    if not section.node_cache:
        return None
    parts = urlsplit(section.url)
    timeout = max(1, round(section.timeout_secs))
    return {
        "type": "redis", "host": parts.hostname or "127.0.0.1", "port": parts.port or 6379,
        "username": unquote(parts.username) if parts.username else None,
        "password": unquote(parts.password) if parts.password else None, "ssl": parts.scheme == "rediss",
        "connection_timeout": timeout, "response_timeout": timeout, "number_of_retries": 1, "max_delay": timeout,
    }


class Keys:
    def __init__(self, name: str):
        self.name = name
        self.journal = f"{PREFIX}:{name}:journal"
        self.state = f"{PREFIX}:{name}:state"
        self.status = f"{PREFIX}:{name}:status"
        self.relocated = f"{PREFIX}:{name}:relocated"


def connect(url: str | None, timeout_secs: float, **where):
    """A client for `url` (or host=, port=, ...) that gives up after `timeout_secs` and never retries
    by itself (redis-py's default retries would multiply every timeout by four): callers decide."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    options = {"socket_connect_timeout": timeout_secs, "socket_timeout": timeout_secs, "retry": Retry(NoBackoff(), 0)}
    return redis.Redis.from_url(url, **options) if url is not None else redis.Redis(**where, **options)


def redis_errors() -> tuple[type[Exception], ...]:
    import redis

    return (redis.RedisError, OSError)


class RedisMirror:
    """Ships the journal file to the stream and the latest state and status to their keys, from its
    own thread. `report_changes` says where to report Redis coming and going."""

    def __init__(self, section: RedisSection, name: str, journal_path: Path):
        self.section = section
        self.keys = Keys(name)
        self.journal_path = journal_path
        self.reachable: bool | None = None
        self.reason = ""  # why it is unreachable
        self.shipped = 0  # records this mirror put in the stream
        self.stream_end: tuple[int, int] = (0, 0)  # the stream's last id when nsup started: new ids go above it
        self._wake, self._closing = threading.Event(), threading.Event()
        self._lock = threading.Lock()  # guards the pending snapshots
        self._pending_state: PersistedState | None = None
        self._pending_status: bytes | None = None
        self._sent_state: PersistedState | None = None  # sent again if Redis comes back without it
        self._sent_status: bytes | None = None
        # Where shipping resumes: the file offset after the last record known to be in the stream, and
        # that record's stream id and journal id. Kept in a side file so a new nsup does not start over.
        self._progress_path = journal_path.with_name(journal_path.name + ".shipped")
        self._offset, self._settled, self._inode = self._read_progress()
        self._progress_failing = False
        self._held: Callable[[], list[tuple[str, bytes]]] | None = None  # the journal's records not on file
        self._held_shipped: tuple[int, int] = (0, 0)  # the last of them shipped from memory
        self._thread: threading.Thread | None = None
        self._on_change: Callable[[bool, str], None] | None = None
        self._loop = None

    # --- the calling side (nsup's main thread and loop) -----------------------------------------

    def load_state(self) -> PersistedState | None:
        """The copy of the persisted state in Redis; None if there is none or Redis does not answer.
        Also notes where the stream ends (so that this session's journal ids follow it, even from a
        fresh state dir on a host whose clock is behind)."""
        client = None
        try:
            client = connect(self.section.url, self.section.timeout_secs)
            pipe = client.pipeline(transaction=False)
            raw, top = pipe.get(self.keys.state).xrevrange(self.keys.journal, count=1).execute()
        except redis_errors() as exc:
            self._set_reachable(False, _reason(exc))
            return None
        finally:
            if client is not None:
                client.close()
        self.stream_end = parse_id(top[0][0].decode()) if top else (0, 0)
        if raw is None:
            return None
        try:
            return decode_state(raw)
        except msgspec.MsgspecError as exc:
            raise ValueError(f"the state in Redis ({self.keys.state}) is damaged: {exc}") from None

    def follow(self, held: Callable[[], list[tuple[str, bytes]]]) -> None:
        """Ship the records `held()` lists too (a Journal's held_lines): those its disk did not take."""
        self._held = held

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="redis-mirror", daemon=True)
        self._thread.start()

    def report_changes(self, on_change: Callable[[bool, str], None], loop) -> None:
        """From now on `on_change(reachable, reason)` runs on `loop` whenever Redis comes or goes; if
        it is unreachable already, at once."""
        self._on_change, self._loop = on_change, loop
        if self.reachable is False:
            loop.call_soon_threadsafe(on_change, False, self.reason)

    def wake(self, _record: dict | None = None) -> None:
        """A journal listener: a record was written, ship it."""
        self._wake.set()

    def offer_state(self, state: PersistedState) -> None:
        with self._lock:
            self._pending_state = state
        self._wake.set()

    def offer_status(self, status: dict) -> None:
        snapshot = {**status, "node": self.keys.name, "host": socket.gethostname(),
                    "updated_at": datetime.now(timezone.utc).isoformat(timespec="milliseconds")}
        with self._lock:
            self._pending_status = msgspec.json.encode(snapshot)
        self._wake.set()

    def close(self) -> bool:
        """Ship what is left for at most `drain_secs`; True if everything reached Redis. What did not
        stays in the journal file and goes with the next start."""
        self._closing.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(self.section.drain_secs)
        caught_up = self._thread is None or not self._thread.is_alive()
        if not caught_up:
            logger.warning("Redis did not take the rest of the journal within {:g}s; it stays in {} and is "
                           "shipped when nsup next starts", self.section.drain_secs, self.journal_path)
        return caught_up

    # --- the mirror's thread --------------------------------------------------------------------

    def _run(self) -> None:
        client, failures = None, 0
        while True:
            self._wake.clear()  # first: a record or close() after this point wakes the next round
            last_round = self._closing.is_set()  # close() comes after the last record: this round ships it
            try:
                if client is None:
                    client = connect(self.section.url, self.section.timeout_secs)
                    client.sadd(NODES_KEY, self.keys.name)
                self._check_progress(client)
                self._ship_snapshots(client)
                while self._ship_batch(client):
                    pass
                self._ship_held(client)
            except Exception as exc:  # noqa: BLE001 (a bug of ours must not end the mirror either)
                if client is not None:
                    client.close()
                client, failures = None, failures + 1
                if not isinstance(exc, redis_errors()) and _reason(exc) != self.reason:  # a bug: its traceback, once
                    logger.opt(exception=exc).error("the Redis mirror failed; it tries again")
                self._set_reachable(False, _reason(exc))
                if last_round or self._closing.is_set():
                    return  # the rest waits in the file; close() is not held up by retries
                self._closing.wait(min(BACKOFF_MAX_SECS, BACKOFF_SECS * 2 ** min(failures, 10)) * random.uniform(0.5, 1))
                continue
            failures = 0
            self._set_reachable(True, "")
            if last_round:
                return
            self._wake.wait(IDLE_WAKE_SECS)

    def _check_progress(self, client) -> None:
        """Is the last record we shipped still in the stream? Redis may have come back without its
        data (redis-py reconnects by itself, so this is asked every round, not only on connect).
        If not, the whole file is walked again: what the stream holds is settled, the rest shipped."""
        if self._settled is not None and self._ship(client, []) is None:
            self._walk_again(client)

    def _walk_again(self, client) -> None:
        logger.warning("the stream {} no longer holds the journal records shipped to it (Redis restarted without "
                       "its data?): checking the whole journal against it", self.keys.journal)
        self._offset, self._settled = 0, None
        client.sadd(NODES_KEY, self.keys.name)
        with self._lock:
            self._pending_state = self._pending_state or self._sent_state
            self._pending_status = self._pending_status or self._sent_status

    def _ship_snapshots(self, client) -> None:
        """The state and the status go first: a backlog of records must not keep them out."""
        with self._lock:
            state, status = self._pending_state, self._pending_status
            self._pending_state = self._pending_status = None
        try:
            if state is not None:
                client.eval(_SET_IF_NEWER, 1, self.keys.state, msgspec.json.encode(state), state.version)
                self._sent_state = state
            if status is not None:
                client.set(self.keys.status, status)
                self._sent_status = status
        except BaseException:
            with self._lock:  # not lost: sent with the next round, unless a newer one came meanwhile
                self._pending_state = self._pending_state or state
                self._pending_status = self._pending_status or status
            raise

    def _ship_batch(self, client) -> bool:
        """Up to BATCH_RECORDS whole lines from the offset; False when there was nothing new."""
        lines = self._read_lines()
        if not lines:
            return False
        shipped = self._ship(client, lines)
        if shipped is None:
            self._walk_again(client)
            return True
        for line, settled in zip(lines, shipped):
            self._settled = settled or self._settled
            self._offset += len(line)
        self._write_progress()
        return True

    def _ship_held(self, client) -> None:
        """The journal's records that are not on file yet, once each. When its disk takes them again
        they are shipped from the file too, and found in the stream already (same id, same line)."""
        held = [(parse_id(record_id), line) for record_id, line in self._held()] if self._held else []
        fresh = [(record_id, line) for record_id, line in held if record_id > self._held_shipped]
        if fresh:
            if self._ship(client, [line for _, line in fresh]) is not None:
                self._held_shipped = fresh[-1][0]

    def _ship(self, client, lines: list[bytes]) -> list[tuple[str, str] | None] | None:
        """XADD each line under its journal id, if the record settled last is still in the stream (None
        if it is not: Redis lost its data); per line, (stream id, journal id) where it now is in the
        stream, or None for a line there is nothing to ship of. Raises if Redis failed one: what is
        resent next round is refused as present, never added twice."""
        entries = [_entry(line) for line in lines]
        args = [*(self._settled or ("", "")), self.section.stream_max_records]
        for record_id, fields in filter(None, entries):
            args += [record_id, fields["kind"], fields["ts"], fields["record"]]
        results = client.eval(_ADD_IF_SETTLED, 1, self.keys.journal, *args)
        if results is None:
            return None
        results = iter(results)
        outcomes = [next(results) if entry is not None else None for entry in entries]
        refused = [entry for entry, outcome in zip(entries, outcomes) if _already_past(outcome)]
        placed = self._place_refused(client, refused) if refused else {}
        where = []
        for entry, outcome in zip(entries, outcomes):
            if entry is None:
                where.append(None)
                continue
            if isinstance(outcome, Exception) and not _already_past(outcome):
                raise outcome
            where.append((placed.get(entry[0]) if _already_past(outcome) else outcome.decode(), entry[0]))
            self.shipped += not _already_past(outcome)
        return where

    def _place_refused(self, client, refused: list[tuple[str, dict]]) -> dict[str, str]:
        """XADDs refused because the stream is already past their ids: each is either there already
        (shipped before, by this nsup or an earlier one), or the stream moved on without it (a clock
        step, a stream from another host); then it goes in at the end, marked with its journal id,
        once (the relocated hash remembers where)."""
        pipe = client.pipeline(transaction=False)
        for record_id, _fields in refused:
            pipe.xrange(self.keys.journal, min=record_id, max=record_id)
            pipe.hget(self.keys.relocated, record_id)
        answers = pipe.execute()
        placed = {}
        for (record_id, fields), found, moved in zip(refused, answers[::2], answers[1::2]):
            if found and found[0][1].get(b"record") == fields["record"]:
                placed[record_id] = record_id
            elif moved is not None:
                placed[record_id] = moved.decode()
            else:
                logger.warning("journal record {} is older than the stream's end (a clock step, or a stream written "
                               "on another host): appended at the end, with its id in journal_id", record_id)
                stream_id = client.xadd(self.keys.journal, {**fields, "journal_id": record_id},
                                        maxlen=self.section.stream_max_records, approximate=True).decode()
                client.hset(self.keys.relocated, record_id, stream_id)
                placed[record_id] = stream_id
                self.shipped += 1
        return placed

    def _read_lines(self) -> list[bytes]:
        lines = []
        try:
            with open(self.journal_path, "rb") as journal:
                inode = os.fstat(journal.fileno()).st_ino
                if self._offset > journal.seek(0, os.SEEK_END) or inode != (self._inode or inode):
                    self._offset, self._settled = 0, None  # the file was replaced: walk it from the start
                self._inode = inode
                journal.seek(self._offset)
                for line in journal:
                    if not line.endswith(b"\n") or len(lines) == BATCH_RECORDS:
                        break
                    lines.append(line)
        except FileNotFoundError:
            pass  # no journal yet: nothing to ship
        return lines

    def _read_progress(self) -> tuple[int, tuple[str, str] | None, int | None]:
        try:
            progress = msgspec.json.decode(self._progress_path.read_bytes())
            settled = (str(progress["stream_id"]), str(progress["journal_id"]))
            return int(progress["offset"]), settled, progress.get("inode")
        except (OSError, msgspec.DecodeError, KeyError, TypeError, ValueError, AttributeError):
            return 0, None, None  # none, or unreadable: walk the file; what Redis has is settled, not sent twice

    def _write_progress(self) -> None:
        """No fsync, and a disk that will not take it is no failure of the mirror's: a stale side file only
        means records are settled again, never sent twice."""
        if self._settled is None:
            return
        temporary = self._progress_path.with_suffix(".tmp")
        stream_id, journal_id = self._settled
        try:
            temporary.write_bytes(msgspec.json.encode({"offset": self._offset, "stream_id": stream_id,
                                                       "journal_id": journal_id, "inode": self._inode}))
            os.replace(temporary, self._progress_path)
        except OSError as exc:
            if not self._progress_failing:
                logger.warning("where the Redis mirror stands cannot be written to {} ({}); shipping goes on",
                               self._progress_path, exc)
            self._progress_failing = True
        else:
            self._progress_failing = False

    def _set_reachable(self, reachable: bool, reason: str) -> None:
        if reachable == self.reachable:
            return
        was, self.reachable, self.reason = self.reachable, reachable, reason
        if reachable:
            logger.info("Redis ({}) takes the journal as {}", redacted(self.section.url), self.keys.journal)
        else:
            logger.warning("Redis ({}) is unreachable: {}; the journal goes on in {} and reaches Redis when it is back",
                           redacted(self.section.url), reason, self.journal_path)
        if self._on_change is not None and self._loop is not None and (was is not None or not reachable):
            try:
                self._loop.call_soon_threadsafe(self._on_change, reachable, reason)
            except RuntimeError:
                pass  # the loop has closed: nsup is exiting, and the log says it


def _entry(line: bytes) -> tuple[str, dict] | None:
    """(journal id, stream fields) of a journal line; None for a line there is nothing to ship of
    (one torn by a crash and closed off by the journal)."""
    try:
        record = msgspec.json.decode(line)
        parse_id(record["id"])
        return record["id"], {"kind": record["kind"], "ts": record["ts"], "record": line.rstrip(b"\n")}
    except (msgspec.DecodeError, KeyError, TypeError, ValueError, AttributeError):
        return None


def _already_past(outcome) -> bool:
    return isinstance(outcome, Exception) and "equal or smaller" in str(outcome)


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
