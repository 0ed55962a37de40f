"""Fixtures shared by the integration tests: the engine in process (from test_api), and a
RedisStore on the test's redis-server."""

from collections.abc import AsyncIterator

import pytest

from engine.store.connect import connect
from engine.store.redis import RedisStore
from tests.integration.test_api import engine

__all__ = ["engine", "store"]


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[RedisStore]:
    s = RedisStore(await connect(redis_url))
    yield s
    await s.close()
