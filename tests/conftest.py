"""Fixtures every test folder may use."""

from tests.redis_server import redis_server  # noqa: F401 (a fixture)
