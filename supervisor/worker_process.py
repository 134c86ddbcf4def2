"""Spawns the node worker in its own session and sees its exit the moment it happens.

The worker is started with setsid so that it outlives a supervisor crash or upgrade (DESIGN.md,
the containerd-shim pattern). Its exit is seen through a pidfd on the event loop, not by polling.
This module never signals the worker: only supervisor.stop_gate does, with the guard in front.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path


class WorkerProcess:
    def __init__(self, pid: int, popen: subprocess.Popen | None = None):
        self._popen = popen  # None for a worker re-attached after a supervisor restart: not our child
        self.pid = pid
        self.argv: list[str] | None = list(popen.args) if popen is not None else None  # what it was exec'd with
        self.pidfd = os.pidfd_open(pid)
        loop = asyncio.get_running_loop()
        self.exited: asyncio.Future[int | None] = loop.create_future()  # None: the code is not ours to know
        loop.add_reader(self.pidfd, self._on_exit)

    @classmethod
    def attach(cls, pid: int) -> WorkerProcess:
        """A worker spawned by an earlier nsup. Its identity must have been verified first."""
        return cls(pid)

    @classmethod
    def spawn(cls, args: list[str], log_path: Path, spec: bytes = b"") -> WorkerProcess:
        """`spec` is written to the worker's stdin. Its stdout and stderr go to `log_path` until its own
        log pipe takes over (node_worker/log_pipe.py); to /dev/null if the file cannot be opened (a full
        or read-only disk): a worker must start all the same, it may have positions to close."""
        try:
            log = open(log_path, "ab")
        except OSError:
            log = open(os.devnull, "wb")
        with log:
            popen = subprocess.Popen(
                [sys.executable, "-m", "node_worker", *args],
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            popen.stdin.write(spec)
            popen.stdin.close()
        except BrokenPipeError:
            pass  # it died at once: its exit is seen like any other
        return cls(popen.pid, popen)

    def alive(self) -> bool:
        return not self.exited.done()

    def _on_exit(self) -> None:
        loop = asyncio.get_running_loop()
        loop.remove_reader(self.pidfd)
        code = self._popen.wait() if self._popen is not None else None
        os.close(self.pidfd)
        if not self.exited.done():
            self.exited.set_result(code)
