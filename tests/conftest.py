"""Fixtures every test folder may use, and the hypothesis profiles.

HYPOTHESIS_PROFILE=ci (the default): derandomized, so a failure in CI reproduces run for run.
HYPOTHESIS_PROFILE=nightly: fresh draws each run, and more of them where a test asks for the
profile's size (test_guard_stateful.py does).
"""

import os

from hypothesis import settings

from tests.prometheus_server import prometheus_server  # noqa: F401 (a fixture)
from tests.redis_server import redis_server  # noqa: F401 (a fixture)

settings.register_profile("ci", derandomize=True)
settings.register_profile("nightly", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
