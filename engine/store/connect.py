"""Open the store: the embedded redis-server by default, or an external standalone / Cluster Redis."""

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from urllib.parse import unquote

import structlog
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
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


def parse_sentinel(url: str) -> tuple[list[tuple[str, int]], str, int, str | None]:
    """`redis+sentinel://[:password@]host:port[,host:port...]/service[/db]` as
    (sentinels, service name, db, the master's password); ValueError naming what is wrong."""
    rest = url.removeprefix("redis+sentinel://")
    creds, at, rest = rest.rpartition("@")
    password = unquote(creds.partition(":")[2]) if at and creds else None
    hosts, _, path = rest.partition("/")
    parts = [p for p in path.split("/") if p]
    if not hosts or not parts or len(parts) > 2:
        raise ValueError("expected redis+sentinel://[:password@]host:port[,host:port...]/service[/db]")
    sentinels = []
    for host in hosts.split(","):
        name, _, port = host.rpartition(":")
        if not name or not port.isdigit():
            raise ValueError(f"sentinel {host!r}: expected host:port")
        sentinels.append((name.strip("[]"), int(port)))
    if len(parts) == 2 and not parts[1].isdigit():
        raise ValueError(f"db {parts[1]!r}: expected a number")
    return sentinels, unquote(parts[0]), int(parts[1]) if len(parts) == 2 else 0, password


async def _sentinel_client(url: str) -> Redis:
    """The current master as the sentinels name it; the pool asks them again after a failover."""
    try:
        sentinels, service, db, password = parse_sentinel(url)
    except ValueError as exc:
        raise StoreError(f"redis url: {exc}") from None
    sentinel = Sentinel(sentinels, socket_timeout=5, socket_connect_timeout=5)  # type: ignore[no-untyped-call]
    client: Redis = sentinel.master_for(
        service,
        redis_class=Redis,
        db=db,
        password=password,
        socket_timeout=10,
        socket_connect_timeout=5,
        retry=_retry(),
        retry_on_error=[ConnectionError],
    )
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        await client.aclose()
        raise StoreError(f"connect to the master {service!r} through sentinels {sentinels}: {exc}") from exc
    return client


async def connect(url: str) -> AnyRedis:
    """A client for `url`; a server that reports cluster mode gets a cluster client, and a
    `redis+sentinel://` URL the master its sentinels name (followed across failovers)."""
    if url.startswith("redis+sentinel://"):
        return await _sentinel_client(url)
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
