"""The mirror's promise as a property: whatever Redis and nsup do, in any order (Redis killed,
paused, back, or back without its data; nsup restarted mid-outage, or without its progress file),
the stream is always an in-order prefix of the journal, and once Redis is back and a mirror runs,
it is the whole journal: nothing lost, nothing twice."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from supervisor.journal import read_journal
from tests.redis_server import RedisServer
from tests.unit.test_redis_mirror import start_mirror, stream_records, wait_until


class MirrorUnderFaults(RuleBasedStateMachine):
    @initialize()
    def begin(self):
        self.directory = Path(tempfile.mkdtemp(prefix="nsup-mirror-"))
        self.journal_path = self.directory / "journal.jsonl"
        self.server = RedisServer(self.directory / "redis").start()
        self.up, self.paused = True, False
        self.mirror, self.journal = start_mirror(self.server.url, self.journal_path, timeout_secs=0.3, drain_secs=0.2)

    @rule(count=st.integers(1, 30))
    def record(self, count):
        for _ in range(count):
            self.journal.record("command", n=len(self._written()))

    @precondition(lambda self: self.up)
    @rule()
    def kill_redis(self):
        self.server.kill()
        self.up = self.paused = False

    @precondition(lambda self: not self.up)
    @rule()
    def start_redis(self):
        self.server.start()
        self.up = True

    @precondition(lambda self: self.up and not self.paused)
    @rule()
    def pause_redis(self):
        self.server.pause()
        self.paused = True

    @precondition(lambda self: self.paused)
    @rule()
    def resume_redis(self):
        self.server.resume()
        self.paused = False

    @precondition(lambda self: self.up and not self.paused)
    @rule()
    def redis_loses_its_data(self):
        """Restarted without persistence, flushed, failed over to an empty replica: all the same."""
        self.server.client().flushall()

    @rule()
    def lose_the_progress_file(self):
        (self.directory / "journal.jsonl.shipped").unlink(missing_ok=True)

    @rule()
    def restart_nsup(self):
        self.mirror.close()
        self.journal.close()
        # With Redis down or paused the new nsup cannot read where the stream ends: it still must not
        # lose a record or ship one twice.
        self.mirror, self.journal = start_mirror(self.server.url, self.journal_path, timeout_secs=0.3, drain_secs=0.2)

    def _written(self) -> list[dict]:
        return read_journal(self.journal_path)

    @invariant()
    def the_stream_is_an_in_order_prefix_of_the_journal(self):
        if not hasattr(self, "server") or not self.up or self.paused:
            return
        stream, journal = stream_records(self.server), self._written()
        assert stream == journal[: len(stream)]

    def teardown(self):
        try:
            if self.paused:
                self.server.resume()
            if not self.up:
                self.server.start()
            wait_until(lambda: stream_records(self.server) == self._written(), timeout=15,
                       what="the stream to hold the whole journal once Redis is back")
        finally:
            self.mirror.close()
            self.journal.close()
            self.server.kill()
            shutil.rmtree(self.directory, ignore_errors=True)


MirrorUnderFaults.TestCase.settings = settings(
    max_examples=12, stateful_step_count=12, deadline=None, suppress_health_check=[HealthCheck.too_slow],
)
test_mirror_under_faults = MirrorUnderFaults.TestCase
