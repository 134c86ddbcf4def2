"""What a restarted nsup needs to carry on where a crashed one stopped: written atomically
(temp file, fsync, rename), so it is always a whole record, never a torn one. With a Redis mirror a
copy goes to Redis too, and a new nsup carries on from whichever copy is newer (its `version`), so
a node whose state dir was lost, or moved to another host, still finishes what it was doing.

The worker's identity is its pid, its start time (from /proc, in clock ticks since boot) and its
command line: all three must match before a new nsup treats a live process as its worker, so that
a reused pid never makes nsup signal a stranger.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import time
from pathlib import Path

import msgspec
from loguru import logger

from supervisor.intent import StopRequest
from supervisor.schedule import Done


class WorkerIdentity(msgspec.Struct, frozen=True):
    pid: int
    start_time: int
    cmdline: list[str]

    @classmethod
    def of(cls, pid: int, argv: list[str] | None = None) -> WorkerIdentity | None:
        """The live process `pid` as /proc shows it; None if it is gone. `argv`: the command line a child
        just spawned was exec'd with, taken instead of /proc's. Popen returns once the exec is past its
        point of no return, before the kernel has put the new program's argv in place: /proc then shows
        no command line (a quarter of spawns on a loaded 2-core machine), and a restarted nsup would
        not know its own worker."""
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            if argv is None:
                argv = [part.decode(errors="replace") for part in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")]
        except OSError:
            return None
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] == "Z":
            return None  # a zombie is gone
        return cls(pid, int(fields[19]), [part for part in argv if part])

    def still_running(self) -> bool:
        return WorkerIdentity.of(self.pid) == self

    @property
    def link_endpoint(self) -> str:
        """The socket the worker was told to reach its nsup on (its --link argument)."""
        return self.cmdline[self.cmdline.index("--link") + 1]


def boot_id() -> str:
    """This boot of this machine: a pid and a start time mean something within one boot only."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


class PersistedState(msgspec.Struct):
    state: str
    worker: WorkerIdentity | None = None
    trader_id: str | None = None
    stop: StopRequest | None = None
    paused: bool = False
    restarts: int = 0
    schedule_done: list[Done] = []  # the scheduled actions acted on today (supervisor/scheduler.py)
    # The newer copy (file or Redis) wins: at least one more than the last, and never below the
    # wall clock in ms, so a session that started without reading Redis still writes above it.
    version: int = 0
    host: str = ""  # where it was written, for people
    boot_id: str = ""  # where it was written, for the worker identity
    node: str = ""  # node_fingerprint(config) of the node it is about

    def vouches_for_a_live_worker(self, lock_path: Path) -> bool:
        """An unfinished session whose worker is still the very process it spawned, on this boot of
        this machine, for this node (its command line names our lock file): nsup re-attaches."""
        return (self.state not in ("STOPPED", "ABORTED") and self.worker is not None
                and self.boot_id in ("", boot_id()) and str(lock_path) in self.worker.cmdline
                and self.worker.still_running())


class StateStore:
    """The one owner of the persisted state: state.json, and its copy in Redis when mirrored.

    Saving never fails the caller: with a full or read-only disk nsup must go on supervising. The
    state that could not be written is kept and written again by `retry` (the daemon's durability
    tick) or the next save; `problem` says why meanwhile. The Redis copy is offered either way."""

    def __init__(self, path: Path, mirror=None, node: str = ""):
        self.path = path
        self.mirror = mirror  # supervisor.redis_mirror.RedisMirror, or None
        self.node = node  # node_fingerprint(config): a Redis copy about another node is refused
        self.version = 0
        self.source = "none"  # where the loaded state came from: "local", "redis" or "none"
        self.local_damage: str | None = None
        self.problem: str | None = None  # why state.json does not hold the latest state
        self._unsaved: PersistedState | None = None

    def load(self) -> PersistedState | None:
        """The newer of the local file and the Redis copy. A damaged local file is an error unless
        Redis has a copy; an unreachable Redis leaves the local file (the mirror says why). A newer
        Redis copy about another node (two nodes given one name) is a ValueError."""
        try:
            local, damage = load(self.path), None
        except ValueError as exc:
            local, damage = None, exc
        try:
            remote = self.mirror.load_state() if self.mirror is not None else None
        except ValueError as exc:  # damaged in Redis: the local file decides, if there is one
            if local is None:
                raise
            logger.warning("{}; carrying on from the local file", exc)
            remote = None
        copies = [(copy, source) for copy, source in ((local, "local"), (remote, "redis")) if copy is not None]
        if not copies:
            if damage is not None:
                raise damage
            return None
        chosen, self.source = max(copies, key=lambda pair: pair[0].version)
        if self.source == "redis" and chosen.node and self.node and chosen.node != self.node:
            raise ValueError(f"the state in Redis ({self.mirror.keys.state}, written on {chosen.host or 'an unknown host'}) "
                             "is about another node (another factory or params): give this node its own [redis] name")
        if damage is not None:
            self.local_damage = str(damage)
            logger.warning("{}; carrying on from the copy in Redis", damage)
        self.version = chosen.version
        return chosen

    def save(self, state: PersistedState) -> None:
        self.version = max(self.version + 1, time.time_ns() // 1_000_000)
        state = msgspec.structs.replace(state, version=self.version, host=socket.gethostname(), boot_id=boot_id(),
                                        node=self.node)
        if self.mirror is not None:
            self.mirror.offer_state(state)
        self._unsaved = state
        self.retry()

    def retry(self) -> str | None:
        """Writes the state not yet on file, if any; returns why it could not, or None."""
        if self._unsaved is None:
            return None
        try:
            save(self.path, self._unsaved)
        except OSError as exc:
            self.problem = f"{errno.errorcode.get(exc.errno, 'error')}: {exc.strerror or exc}"
            return self.problem
        self._unsaved = self.problem = None
        return None


def worker_lock_held(path: Path) -> bool:
    """A worker holds its lock file for as long as it lives (node_worker/worker.py)."""
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def save(path: Path, state: PersistedState) -> None:
    temporary = path.with_suffix(".tmp")
    try:
        with open(temporary, "wb") as f:
            f.write(msgspec.json.encode(state))
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except OSError:
        with contextlib.suppress(OSError):
            temporary.unlink()  # a part-written state.tmp holds space a full disk needs
        raise
    directory = os.open(path.parent, os.O_RDONLY)  # the rename itself survives a power cut
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def load(path: Path) -> PersistedState | None:
    try:
        return decode(path.read_bytes())
    except FileNotFoundError:
        return None
    except msgspec.MsgspecError as exc:
        raise ValueError(f"{path} is damaged: {exc}") from None


def decode(raw: bytes) -> PersistedState:
    """A persisted state, from this nsup or from an older one (the worker outlives an upgrade: the new
    nsup must carry on from what the old one wrote). Raises msgspec's errors on damage."""
    fields = msgspec.json.decode(raw)
    if isinstance(fields, dict) and "shutdown_requested" in fields:  # before the stop was one value
        requested, actor = fields.pop("shutdown_requested"), fields.pop("shutdown_actor", "")
        fields["stop"] = {"actor": actor, "final": actor.startswith("signal:")} if requested else None
    return msgspec.convert(fields, PersistedState)
