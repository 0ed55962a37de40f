"""Shared pytest fixtures."""

from collections.abc import Iterator

import pytest

from tests.servers import RedisCluster, RedisServer

# ---- real Redis servers (tests/servers.py) -------------------------------------------------------
# Sync fixtures on purpose: they own subprocesses, not event-loop resources, so they can be
# session-scoped without tying pytest-asyncio loops together. Never skipped: CI runs them.


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session server, emptied for this test."""
    redis_server.start()  # no-op unless a test stopped or killed it
    redis_server.flushall()
    return redis_server.url


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    with RedisCluster() as cluster:
        yield cluster


@pytest.fixture
def redis_cluster_url(redis_cluster: RedisCluster) -> str:
    """The session cluster, every master emptied for this test."""
    redis_cluster.flushall()
    return redis_cluster.url


# ---- end of real Redis servers --------------------------------------------------------------------
