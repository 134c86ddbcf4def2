"""Messages on their way to Telegram: a bounded queue and one thread that sends them.

`put` never blocks: the bridge reads events and operators' commands whatever Telegram does. While
the Bot API is slow or down, messages wait; past `size` the oldest are dropped and counted, and the
first message that gets through after that says how many were lost. A failed send is tried again
(backoff up to RETRY_MAX_SECS), so an outage loses only what the queue cannot hold.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable

from loguru import logger

from telegram_bridge.bot_api import BotApiError

RETRY_FIRST_SECS = 1.0
RETRY_MAX_SECS = 30.0


class Outbox:
    def __init__(self, send: Callable[[int, str], None], size: int):
        self._send = send  # (chat_id, text); raises BotApiError
        self._queue: collections.deque[tuple[int, str]] = collections.deque()  # (chat_id, text)
        self._in_flight: tuple[int, str] | None = None  # being sent: not in the queue, never dropped
        self._size = size
        self._cv = threading.Condition()
        self._closed = False
        self.sent = 0
        self.dropped = 0
        self._dropped_unsaid = 0  # dropped since the last message that got through
        self._thread = threading.Thread(target=self._run, name="telegram-outbox", daemon=True)
        self._thread.start()

    def put(self, chat_id: int, text: str) -> None:
        with self._cv:
            if len(self._queue) >= self._size:
                self._queue.popleft()
                self._count_dropped()
            self._queue.append((chat_id, text))
            self._cv.notify()

    def waiting(self) -> int:
        """Messages not sent yet, the one being sent included."""
        with self._cv:
            return len(self._queue) + (self._in_flight is not None)

    def close(self, drain_secs: float = 2.0) -> None:
        """Up to `drain_secs` for what waits to go out; what is left is logged as not sent."""
        with self._cv:
            self._cv.wait_for(lambda: not self._queue and self._in_flight is None, timeout=drain_secs)
            self._closed = True
            left = len(self._queue) + (self._in_flight is not None)
            self._cv.notify_all()
        if left:
            logger.warning("telegram: {} message(s) not sent at exit (the Bot API is slow or down)", left)

    def _run(self) -> None:
        retry = RETRY_FIRST_SECS
        while True:
            with self._cv:
                self._cv.wait_for(lambda: self._queue or self._closed)
                if self._closed:
                    return
                self._in_flight = self._queue.popleft()
                chat_id, text = self._in_flight
                dropped = self._dropped_unsaid
            if dropped:
                text = f"({dropped} earlier message(s) dropped while Telegram was unreachable)\n{text}"
            try:
                self._send(chat_id, text)
            except BotApiError as exc:
                logger.warning("telegram: a message is not sent yet ({}); next try in {:g}s", exc, retry)
                with self._cv:
                    self._requeue()
                    self._cv.wait_for(lambda: self._closed, timeout=retry)
                retry = min(retry * 2, RETRY_MAX_SECS)
                continue
            retry = RETRY_FIRST_SECS
            with self._cv:
                self._in_flight = None
                self._dropped_unsaid -= dropped
                self.sent += 1
                self._cv.notify_all()

    def _requeue(self) -> None:
        """The message that failed goes first again; if the queue filled meanwhile, it is the oldest: dropped."""
        if len(self._queue) >= self._size:
            self._count_dropped()
        else:
            self._queue.appendleft(self._in_flight)
        self._in_flight = None

    def _count_dropped(self) -> None:
        self.dropped += 1
        self._dropped_unsaid += 1
