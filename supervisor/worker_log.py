"""The worker's own cause of a failure, read from its log (worker.log): NautilusTrader's adapters say
why they could not connect only there, in their last ERROR line.

A cause that retrying will not heal (the venue refuses the connection, the credentials are wrong) is
said plainly, so that an operator does not wait out the restart bound for it.
"""

from __future__ import annotations

import re
from pathlib import Path

TAIL_BYTES = 256 * 1024
# NautilusTrader's "2026-12-01T23:18:26.859693448Z [ERROR] TRADER.Component: text", and the worker's own
# "2026-12-01T23:18:26.860Z [nsup-worker] ERROR text".
ERROR_LINE = re.compile(r"^\S+Z (?:\[ERROR\]|\[nsup-worker\] (?:ERROR|CRITICAL)) (?P<text>.+)$")
TIMESTAMPED = re.compile(r"^\d{4}-\d\d-\d\dT\S+Z ")
MAX_CHARS = 500
QUERY = re.compile(r"\?[^\s)]*")
NOT_HEALED_BY_RETRYING = re.compile(
    r"connection refused|authenticat|unauthori[sz]ed|forbidden|invalid api|api[- ]key|signature|permission denied"
    r"|\b401\b|\b403\b", re.IGNORECASE)


def log_size(path: Path) -> int:
    """Where this worker's lines will begin (the log is appended to across workers)."""
    try:
        return path.stat().st_size
    except OSError:
        return 0


def last_error(path: Path, since: int) -> str | None:
    """The last ERROR line written after offset `since`, without its timestamp; None if there is none."""
    try:
        with open(path, "rb") as log:
            start = max(since, log.seek(0, 2) - TAIL_BYTES)
            log.seek(start)
            lines = log.read().decode(errors="replace").splitlines()
    except OSError:
        return None
    last = current = None  # current: an ERROR line's text, and the last of its own next lines
    for line in lines:
        if TIMESTAMPED.match(line):
            last = _joined(current) or last
            m = ERROR_LINE.match(line)
            current = [m["text"].strip(), None] if m else None
        elif current is not None and line.strip():
            current[1] = line.strip()  # a traceback's last line is its exception: the cause itself
    last = _joined(current) or last
    return last[:MAX_CHARS] if last is not None else None


def _joined(error: list | None) -> str | None:
    if error is None:
        return None
    text, more = error
    joined = f"{text}: {more}" if more else text
    return QUERY.sub("", joined)  # a URL's query (timestamps, signatures) says nothing of the cause


def cause_of(path: Path, since: int) -> str:
    """'; the node's last error: ...' (and whether retrying can heal it), or '' when it logged none."""
    error = last_error(path, since)
    if error is None:
        return ""
    plainly = "; retrying will not heal this: check the venue's address and the credentials" \
        if NOT_HEALED_BY_RETRYING.search(error) else ""
    return f"; the node's last error: {error}{plainly}"
