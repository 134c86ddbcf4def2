"""A disk that will not take writes, for tests of one piece (not a test module).

While `error` is set, every write and fsync to a file under `root` fails with it, as a full (ENOSPC)
or read-only (EROFS) disk does, and a write may land part of its bytes first (`partial`), as ENOSPC
does; everything else is untouched. It patches os.write and os.fsync: the journal writes with them,
and state.json is fsync'd with os.fsync. tests/e2e fill a real tmpfs instead.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


class Disk:
    def __init__(self, root: Path):
        self.root = str(root)
        self.error: int | None = None
        self.partial = False
        self.writes_too = True  # False: writes land, fsyncs fail (EIO after the page cache took them)
        self.failed = 0  # writes and fsyncs refused so far

    def _ours(self, fd: int) -> bool:
        try:
            return os.readlink(f"/proc/self/fd/{fd}").startswith(self.root)
        except OSError:
            return False

    @contextlib.contextmanager
    def installed(self):
        real_write, real_fsync = os.write, os.fsync

        def write(fd, data):
            if self.error is not None and self.writes_too and self._ours(fd):
                self.failed += 1
                if self.partial:
                    real_write(fd, bytes(data)[: len(data) // 2])
                raise OSError(self.error, os.strerror(self.error))
            return real_write(fd, data)

        def fsync(fd):
            if self.error is not None and self._ours(fd):
                self.failed += 1
                raise OSError(self.error, os.strerror(self.error))
            return real_fsync(fd)

        os.write, os.fsync = write, fsync
        try:
            yield self
        finally:
            os.write, os.fsync = real_write, real_fsync
