"""Fixtures every test folder may use."""

from tests.redis_server import redis_server  # noqa: F401 (a fixture)
from tests.prometheus_server import prometheus_server  # noqa: F401 (a fixture)
