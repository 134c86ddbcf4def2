"""How often a lost worker may be replaced: at most `max_restarts` in `window_secs` (the Erlang/OTP
supervisor's restart intensity), and a clean slate once a worker has stayed up `stable_after_secs`.
Past the bound: give up, loudly.

The first restart goes at once: one crash is not a loop, and a node that may hold positions should
be managed again as soon as it can be. Backoff is for a crash loop: from the second restart in a row,
exponential with jitter (tenacity's), `backoff_secs` the first wait.
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
        if self._failures_in_a_row == 1:
            return 0.0
        state = tenacity.RetryCallState(None, None, (), {})
        state.attempt_number = self._failures_in_a_row - 1  # the second restart waits what tenacity's first try would
        return self._wait(state)
