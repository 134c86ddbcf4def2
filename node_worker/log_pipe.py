"""The worker's stdout and stderr reach worker.log through a pipe, never straight to the file.

NautilusTrader's Rust logger writes to stdout and reports a failed write on stderr; when both are a
file on a full or read-only disk, that report fails too and Rust aborts the process (SIGABRT,
measured on 1.231): a node with positions open, gone for a log line. So fds 1 and 2 become a pipe,
which never fails while it is read, and a thread of the worker's own reads it into worker.log. What
the file will not take is dropped and counted; `problem` says why (the worker's status carries it to
nsup), and once the file takes writes again a line says how much is missing.

The thread only reads and writes bytes (both release the GIL), so the node's loop is never held up by
it; a pipe of 1 MiB absorbs what comes while it waits for the GIL. Should it fail all the same, fds 1
and 2 go to /dev/null, so that no writer ever blocks on a pipe nobody reads.
"""

from __future__ import annotations

import errno
import fcntl
import os
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path

PIPE_BYTES = 1 << 20
READ_BYTES = 1 << 16


class LogPipe:
    def __init__(self, path: Path):
        self.path = path
        self.problem: str | None = None  # why the log is not being written, while it is not
        self.dropped_bytes = 0  # since the problem began
        self._since: str | None = None
        self._fd: int | None = None
        read_fd, write_fd = os.pipe()
        try:
            fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        except OSError:
            pass  # the default 64 KiB (a lower pipe-max-size): only less slack
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(write_fd, 1)
        os.dup2(write_fd, 2)
        os.close(write_fd)
        self._read_fd = read_fd
        self._thread = threading.Thread(target=self._run, name="worker-log", daemon=True)
        self._thread.start()

    def describe(self) -> str | None:
        """For the worker's status: None while the log is written."""
        if self.problem is None:
            return None
        return f"{self.problem} since {self._since}; {self.dropped_bytes} bytes of log dropped"

    def close(self, timeout_secs: float = 1.0) -> None:
        """At exit: the rest of what was written goes to the file (as far as it will take it)."""
        sys.stdout.flush()
        sys.stderr.flush()
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)  # the pipe's last writers are gone: the thread reads to its end
        os.dup2(devnull, 2)
        os.close(devnull)
        self._thread.join(timeout_secs)

    def _run(self) -> None:
        try:
            while data := os.read(self._read_fd, READ_BYTES):
                self._write(data)
        except BaseException as exc:  # noqa: BLE001 (nothing may leave the node's writers blocked)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            self.problem = f"the log's reader failed ({type(exc).__name__}: {exc}); the rest goes to /dev/null"
            self._since = self._since or _now()

    def _write(self, data: bytes) -> None:
        try:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            if self.problem is not None:
                self._all(f"{_now()} [nsup-worker] WARNING {self.dropped_bytes} bytes of this log were dropped since "
                          f"{self._since}: {self.problem}\n".encode())
                self.problem, self.dropped_bytes, self._since = None, 0, None
            self._all(data)
        except OSError as exc:
            if self.problem is None:
                self._since = _now()
            self.problem = f"{errno.errorcode.get(exc.errno, 'error')}: {exc.strerror or exc}"
            self.dropped_bytes += len(data)

    def _all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view):]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")
