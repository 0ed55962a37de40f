"""Redis losing the engine's state (restarted without persistence, flushed) is said loudly:
readiness fails, escalation_store_state_lost is 1, an error is logged; never silent paging."""

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry

from engine.api import keys
from engine.app import create_app
from engine.config import Settings
from engine.store.redis import RedisStore
from tests.integration.test_api import POLICIES, EngineTestServer

pytestmark = pytest.mark.redis


async def test_a_redis_that_comes_back_empty_fails_readiness_and_says_why(redis_url: str) -> None:
    registry = CollectorRegistry()
    app = create_app(Settings(redis_url=redis_url), POLICIES, notifiers={}, registry=registry)
    async with TestClient(EngineTestServer(app)) as client:
        assert (await client.get("/-/ready")).status == 200
        watch = app[keys.store_watch]
        await watch.check()  # as the background refresh does every 5 s
        assert (await client.get("/-/ready")).status == 200  # nothing lost: still ready
        store = app[keys.store]
        assert isinstance(store, RedisStore)
        await store.client.flushall()  # what a restart without AOF looks like
        await watch.check()
        resp = await client.get("/-/ready")
        assert resp.status == 503 and "store state lost" in await resp.text()
        assert registry.get_sample_value("escalation_store_state_lost") == 1
        assert (await client.get("/-/healthy")).status == 200  # alive: restart it, do not kill it in a loop


async def test_an_engine_started_on_a_fresh_redis_writes_the_epoch_and_is_ready(redis_url: str) -> None:
    app = create_app(Settings(redis_url=redis_url), POLICIES, notifiers={}, registry=CollectorRegistry())
    async with TestClient(EngineTestServer(app)) as client:
        assert app[keys.store_watch].known is not None
        assert await app[keys.store].epoch(create=False) == app[keys.store_watch].known
        assert (await client.get("/-/ready")).status == 200
