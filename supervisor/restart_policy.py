"""How often a lost worker may be replaced: at most `max_restarts` in `window_secs` (the Erlang/OTP
supervisor's restart intensity), with exponential backoff and jitter between tries (tenacity's),
and a clean slate once a worker has stayed up `stable_after_secs`. Past the bound: give up, loudly.
"""

from __future__ import annotations

import time
from collections import deque

import tenacity


class RestartPolicy:
    def __init__(self, max_restarts: int, window_secs: float, backoff_secs: float, backoff_max_secs: float,
                 stable_after_secs: float, clock=time.monotonic):
        self.max_restarts = max_restarts
        self.window_secs = window_secs
        self._stable_after_secs = stable_after_secs
        self._clock = clock
        self._wait = tenacity.wait_exponential_jitter(multiplier=backoff_secs, max=backoff_max_secs, jitter=backoff_secs)
        self._restarts: deque[float] = deque()
        self._failures_in_a_row = 0
        self._up_since: float | None = None

    def worker_up(self) -> None:
        self._up_since = self._clock()

    def next_delay(self) -> float | None:
        """Seconds to wait before the next restart, or None when the bound is spent."""
        now = self._clock()
        if self._up_since is not None and now - self._up_since >= self._stable_after_secs:
            self._restarts.clear()  # it ran long enough: this is a new failure, not a loop
            self._failures_in_a_row = 0
        self._up_since = None
        while self._restarts and now - self._restarts[0] > self.window_secs:
            self._restarts.popleft()
        if len(self._restarts) >= self.max_restarts:
            return None
        self._restarts.append(now)
        self._failures_in_a_row += 1
        state = tenacity.RetryCallState(None, None, (), {})
        state.attempt_number = self._failures_in_a_row
        return self._wait(state)
