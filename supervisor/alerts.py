"""Alerts: journal records an operator must hear about, pushed to a webhook and/or a command.

    [alerts]                                       # optional; off unless webhook_url or command is set
    webhook_url = "https://hooks.example.com/nsup" # HTTP POST, Content-Type: application/json
    command = "/usr/local/bin/page-desk --node mynode"   # argv (shlex-split, no shell); the record on stdin
    timeout_secs = 5.0                             # each POST, and the command
    retries = 3                                    # POSTs after the first one fails (5xx, 408, 429, network)
    backoff_secs = 0.5                             # the wait before the first retry, doubling
    queue_size = 1000                              # alerts waiting; past that the oldest is dropped
    kinds = ["transition", "fault", "refusal", "approval", "halt_stuck", "hung", "hung_with_exposure",
             "venue_disagrees", "health", "redis", "reconciliation_mismatch", "venue_check_unavailable",
             "journal_degraded", "journal_replaced", "state_not_durable", "component_state",
             "lease_lost"]

What is sent is the record as the journal holds it (`ts`, `kind` and its fields), as one JSON
object, plus `origin` when the Alerter was given one (host, state dir: which nsup is speaking).
"""

from __future__ import annotations

import asyncio
import collections
import os
import shlex
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from typing import Annotated, Any, NamedTuple
from urllib.parse import urlsplit

import msgspec
from loguru import logger
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

DEFAULT_KINDS = (
    "transition", "fault", "refusal", "approval", "halt_stuck", "hung", "hung_with_exposure", "venue_disagrees", "health",
    "redis", "reconciliation_mismatch", "venue_check_unavailable", "journal_degraded", "journal_replaced",
    "state_not_durable", "component_state", "lease_lost",
)
FAILURE_KIND = "alert_failed"  # the kind to journal a failed alert under; never itself alerted on
MAX_BACKOFF_SECS = 30.0
DRAIN_SECS = 2.0
_RETRYABLE_STATUS = frozenset({408, 429})  # and every 5xx

Kind = Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z_]*$")]


class AlertsSection(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    webhook_url: Annotated[str, msgspec.Meta(pattern=r"^https?://[^\s/]+")] | None = None
    command: str | None = None
    timeout_secs: Annotated[float, msgspec.Meta(gt=0, le=300)] = 5.0
    retries: Annotated[int, msgspec.Meta(ge=0, le=10)] = 3
    backoff_secs: Annotated[float, msgspec.Meta(gt=0, le=60)] = 0.5
    queue_size: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 1000
    kinds: tuple[Kind, ...] = DEFAULT_KINDS

    def __post_init__(self):
        if self.command is not None:
            try:
                argv = shlex.split(self.command)
            except ValueError as exc:
                raise ValueError(f"command: cannot be split into arguments: {exc}") from None
            if not argv:
                raise ValueError("command: empty")
        if not self.kinds:
            raise ValueError("kinds: empty; leave it out for the default kinds")
        if FAILURE_KIND in self.kinds:
            raise ValueError(f"kinds: {FAILURE_KIND} cannot be alerted on (a failing alert would alert again)")

    @property
    def enabled(self) -> bool:
        return self.webhook_url is not None or self.command is not None


class _Stopped(Exception):
    """close() gave up on the alert being delivered."""


class _CommandFailed(Exception):
    """The command exited non-zero; the message says how."""


class _Alert(NamedTuple):
    kind: str
    ts: str
    body: bytes
    loop: asyncio.AbstractEventLoop | None  # where on_failure runs for this alert


def _enc_hook(obj: Any) -> Any:
    return str(obj)  # e.g. a Path: an alert with a stringified field beats no alert


class Alerter:
    """A journal listener that delivers alerting records from a background thread.

    `on_record` never blocks and never raises: it filters by kind, encodes the record and puts it on
    a bounded queue, returning in microseconds. A daemon thread takes alerts off the queue one at a
    time and delivers each to the webhook (with retries and exponential backoff, tenacity) and to
    the command (once, no shell, killed by subprocess at the timeout). When the queue is full, the
    OLDEST waiting alert is dropped, with a logged warning, so that the newest news gets through.

    A failed delivery (or a drop) is logged (loguru) and never raised. It is also passed to
    `on_failure` (one line of text), on the event loop that was running when the record was
    journaled (call_soon_threadsafe), so the daemon can journal it from its own loop: journal it as
    `FAILURE_KIND`. A record journaled outside a running loop, or whose loop has since closed, gets
    the log line only. Webhook URLs are logged as scheme://host only: their paths often carry tokens.

    `close()` lets the queue drain for a moment, then stops; what is still waiting is logged.
    """

    def __init__(self, config: AlertsSection, on_failure: Callable[[str], None] | None = None,
                 origin: Mapping[str, Any] | None = None):
        if not config.enabled:
            raise ValueError("alerts: neither webhook_url nor command is set")
        self.config = config
        self._kinds = frozenset(config.kinds)
        self._argv = shlex.split(config.command) if config.command else None
        self._url = config.webhook_url
        self._url_shown = _shown(config.webhook_url) if config.webhook_url else None
        self._origin = dict(origin) if origin else None
        self._on_failure = on_failure
        self._encoder = msgspec.json.Encoder(enc_hook=_enc_hook)
        self._queue: collections.deque[_Alert] = collections.deque()
        self._cv = threading.Condition()
        self._busy = False
        self._closed = False
        self._stop = threading.Event()
        self.delivered = 0  # alerts delivered everywhere they were to go
        self.failed = 0
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="nsup-alerts", daemon=True)
        self._thread.start()

    # The caller's side: the journal, on the asyncio loop --------------------------------------

    def on_record(self, record: dict) -> None:
        kind = record.get("kind")
        if kind not in self._kinds:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        try:
            body = self._encoder.encode({**record, "origin": self._origin} if self._origin else record)
        except Exception as exc:  # noqa: BLE001 - a record we cannot encode must not stop the journal
            logger.error("alert for {} not sent: the record cannot be encoded: {}", kind, exc)
            return
        alert = _Alert(kind, str(record.get("ts", "")), body, loop)
        dropped = None
        with self._cv:
            if self._closed:
                logger.warning("alert for {} not sent: alerts are closed", kind)
                return
            if len(self._queue) >= self.config.queue_size:
                dropped = self._queue.popleft()
                self.dropped += 1
            self._queue.append(alert)
            self._cv.notify()
        if dropped is not None:
            self._failure(dropped, f"alert queue full ({self.config.queue_size}): dropped the oldest waiting alert, "
                          f"{dropped.kind} of {dropped.ts}", level="WARNING")

    def close(self, drain_secs: float = DRAIN_SECS) -> None:
        """Wait up to `drain_secs` for the waiting alerts to go out, then stop the thread."""
        deadline = time.monotonic() + drain_secs
        with self._cv:
            self._closed = True
            while (self._queue or self._busy) and (left := deadline - time.monotonic()) > 0:
                self._cv.wait(left)
            abandoned = len(self._queue) + self._busy
            self._queue.clear()
            self._stop.set()
            self._cv.notify_all()
        if abandoned:
            logger.warning("alerts closed with {} alert(s) not delivered", abandoned)
        self._thread.join(timeout=1.0)  # a delivery still in flight is a daemon thread: it dies with nsup

    # The worker thread ------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._queue and not self._stop.is_set():
                    self._cv.wait()
                if self._stop.is_set():
                    return
                alert = self._queue.popleft()
                self._busy = True
            try:
                self._deliver(alert)
            except Exception as exc:  # noqa: BLE001 - a bug here must not end alerting
                logger.exception("alert for {} failed unexpectedly: {}", alert.kind, exc)
            finally:
                with self._cv:
                    self._busy = False
                    self._cv.notify_all()

    def _deliver(self, alert: _Alert) -> None:
        ok = True
        if self._url is not None:
            try:
                self._post_with_retries(alert.body)
            except _Stopped:
                ok = False
                self._failure(alert, f"webhook {self._url_shown}: {alert.kind} alert abandoned at close")
            except Exception as exc:  # noqa: BLE001
                ok = False
                self._failure(alert, f"webhook {self._url_shown}: {alert.kind} alert not delivered "
                              f"({_tries(self.config.retries, exc)}): {_describe(exc)}")
        if self._argv is not None:
            try:
                self._run_command(alert)
            except Exception as exc:  # noqa: BLE001
                ok = False
                self._failure(alert, f"command {self._argv[0]}: {alert.kind} alert not delivered: {_describe(exc)}")
        if ok:
            self.delivered += 1

    def _post_with_retries(self, body: bytes) -> None:
        retrying = Retrying(
            stop=stop_after_attempt(1 + self.config.retries),
            wait=wait_exponential(multiplier=self.config.backoff_secs, max=MAX_BACKOFF_SECS),
            retry=retry_if_exception(_retryable),
            sleep=self._sleep,
            before_sleep=lambda state: logger.warning(
                "webhook {}: try {} failed ({}); trying again in {:.2f}s", self._url_shown, state.attempt_number,
                _describe(state.outcome.exception()), state.next_action.sleep),
            reraise=True,
        )
        retrying(self._post, body)

    def _post(self, body: bytes) -> None:
        import urllib.request  # here, not at import: nsup starts light, and this is the alert thread

        request = urllib.request.Request(self._url, data=body, method="POST", headers={
            "Content-Type": "application/json", "User-Agent": "nsup-alerts"})
        with _opener().open(request, timeout=self.config.timeout_secs) as response:
            response.read(65536)

    def _sleep(self, secs: float) -> None:
        if self._stop.wait(secs):
            raise _Stopped

    def _run_command(self, alert: _Alert) -> None:
        done = subprocess.run(
            self._argv, input=alert.body, capture_output=True, timeout=self.config.timeout_secs,
            env={**os.environ, "NSUP_ALERT_KIND": alert.kind},
            start_new_session=True,  # a Ctrl-C to nsup's terminal must not cut short the alert about it
        )
        if done.returncode != 0:
            err = done.stderr.decode(errors="replace").strip().splitlines()
            raise _CommandFailed(f"exit code {done.returncode}" + (f": {err[-1][:200]}" if err else ""))

    def _failure(self, alert: _Alert, message: str, level: str = "ERROR") -> None:
        logger.log(level, "alerts: {}", message)
        if level == "ERROR":
            self.failed += 1
        if self._on_failure is None or alert.loop is None:
            return
        try:
            alert.loop.call_soon_threadsafe(self._call_on_failure, message)
        except RuntimeError:
            pass  # the loop is closed: the log line above is all there is

    def _call_on_failure(self, message: str) -> None:
        try:
            self._on_failure(message)
        except Exception as exc:  # noqa: BLE001 - e.g. a journal that cannot be written
            logger.error("alerts: reporting a failed alert failed too: {}", exc)


def _opener():
    """urllib without redirects: a POST redirected would arrive as a GET without the alert."""
    import urllib.request

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, req, fp, code, msg, headers, newurl):
            return None  # urllib then raises HTTPError for the 3xx

    return urllib.request.build_opener(NoRedirect)


def _retryable(exc: BaseException) -> bool:
    """5xx, 408, 429 and network trouble are tried again; another 4xx or 3xx would only fail again."""
    import urllib.error

    if isinstance(exc, urllib.error.HTTPError):
        return exc.code >= 500 or exc.code in _RETRYABLE_STATUS
    return isinstance(exc, OSError)  # URLError, timeouts, refused connections are all OSErrors


def _describe(exc: BaseException) -> str:
    import urllib.error

    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return f"{type(exc.reason).__name__}: {exc.reason}"
    if isinstance(exc, subprocess.TimeoutExpired):
        return f"no exit within {exc.timeout:g}s (ended)"
    if isinstance(exc, _CommandFailed):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _tries(retries: int, exc: BaseException) -> str:
    return f"after {1 + retries} tries" if _retryable(exc) else "not retried"


def _shown(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


