"""Open the store: the embedded redis-server by default, or an external standalone / Cluster Redis."""

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import structlog
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError, RedisError

from engine.config import Settings
from engine.errors import StoreError
from engine.store.embedded import EmbeddedRedis
from engine.store.redis import AnyRedis, RedisStore
from engine.store.rediscore import Observer

log = structlog.get_logger(__name__)
MAX_CONNECTIONS = 64


def _retry() -> Retry:
    # a pooled connection broken by a Redis restart is retried at once instead of failing a webhook
    return Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=3)


async def connect(url: str) -> AnyRedis:
    """A client for `url`; a server that reports cluster mode gets a cluster client."""
    # a blocking pool: under a burst, requests wait for a connection instead of failing with 503
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=MAX_CONNECTIONS,
        timeout=5,
        socket_timeout=10,
        socket_connect_timeout=5,
        retry=_retry(),
        retry_on_error=[ConnectionError],
    )
    client = Redis.from_pool(pool)
    try:
        info = await client.info("cluster")
    except (RedisError, OSError) as exc:
        await client.aclose()
        raise StoreError(f"connect to redis at {url}: {exc}") from exc
    if info.get("cluster_enabled"):
        await client.aclose()
        return RedisCluster.from_url(url, socket_timeout=10, socket_connect_timeout=5)
    return client


@asynccontextmanager
async def open_store(
    url: str | None, settings: Settings, observe: Observer = lambda operation, seconds, ok: None
) -> AsyncIterator[RedisStore]:
    async with AsyncExitStack() as stack:
        if url is None:
            embedded = await stack.enter_async_context(
                EmbeddedRedis(settings.data_dir, fsync=settings.redis_fsync)
            )
            url = embedded.url
            log.info("embedded_redis_started", data_dir=str(settings.data_dir), url=url)
        client = await connect(url)
        store = RedisStore(client, retention_ms=int(settings.retention_days * 86_400_000), observe=observe)
        try:
            yield store
        finally:
            await store.close()
