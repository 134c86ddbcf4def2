"""What a restarted nsup needs to carry on where a crashed one stopped: written atomically
(temp file, fsync, rename), so it is always a whole record, never a torn one.

The worker's identity is its pid, its start time (from /proc, in clock ticks since boot) and its
command line: all three must match before a new nsup treats a live process as its worker, so that
a reused pid never makes nsup signal a stranger.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import msgspec


class WorkerIdentity(msgspec.Struct, frozen=True):
    pid: int
    start_time: int
    cmdline: list[str]

    @classmethod
    def of(cls, pid: int) -> WorkerIdentity | None:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return None
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] == "Z":
            return None  # a zombie is gone
        return cls(pid, int(fields[19]), [part.decode(errors="replace") for part in cmdline if part])

    def still_running(self) -> bool:
        return WorkerIdentity.of(self.pid) == self


class PersistedState(msgspec.Struct):
    state: str
    worker: WorkerIdentity | None = None
    trader_id: str | None = None
    shutdown_requested: bool = False
    shutdown_actor: str = ""
    paused: bool = False
    restarts: int = 0

    def vouches_for_a_live_worker(self) -> bool:
        """An unfinished session whose worker is still the very process it spawned: nsup re-attaches."""
        return self.state not in ("STOPPED", "ABORTED") and self.worker is not None and self.worker.still_running()


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
    with open(temporary, "wb") as f:
        f.write(msgspec.json.encode(state))
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)


def load(path: Path) -> PersistedState | None:
    try:
        return msgspec.json.decode(path.read_bytes(), type=PersistedState)
    except FileNotFoundError:
        return None
    except msgspec.MsgspecError as exc:
        raise ValueError(f"{path} is damaged: {exc}") from None
