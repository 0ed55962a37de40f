"""Open the store: the embedded redis-server by default, or an external standalone / Cluster Redis."""

from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from urllib.parse import unquote

import structlog
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError, RedisError

from engine.config import Settings
from engine.errors import StoreError
from engine.store.embedded import EmbeddedRedis
from engine.store.redis import AnyRedis, RedisStore
from engine.store.rediscore import Observer

log = structlog.get_logger(__name__)
MAX_CONNECTIONS = 64


class SentinelBlockingPool(SentinelConnectionPool, BlockingConnectionPool):
    """The sentinels' master pool, blocking as the standalone pool does: under a burst (and while
    commits hold their connection through WAIT) a request waits for a connection instead of
    failing with "Too many connections"."""


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


async def _sentinel_client(url: str, max_connections: int) -> Redis:
    """The current master as the sentinels name it; the pool asks them again after a failover."""
    try:
        sentinels, service, db, password = parse_sentinel(url)
    except ValueError as exc:
        raise StoreError(f"redis url: {exc}") from None
    sentinel = Sentinel(sentinels, socket_timeout=5, socket_connect_timeout=5)  # type: ignore[no-untyped-call]
    client: Redis = sentinel.master_for(
        service,
        redis_class=Redis,
        connection_pool_class=SentinelBlockingPool,
        max_connections=max_connections,
        timeout=5,  # waiting for a free connection; then the request fails with 503
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


async def connect(url: str, max_connections: int = MAX_CONNECTIONS) -> AnyRedis:
    """A client for `url`; a server that reports cluster mode gets a cluster client, and a
    `redis+sentinel://` URL the master its sentinels name (followed across failovers)."""
    if url.startswith("redis+sentinel://"):
        return await _sentinel_client(url, max_connections)
    # a blocking pool: under a burst, requests wait for a connection instead of failing with 503
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
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
        # 3 attempts, each after refreshing the slot map (a failover moves slots): redis-py's
        # default of 10 would hold a webhook for 10 connect timeouts while a master is unreachable
        cluster = RedisCluster.from_url(url, socket_timeout=10, socket_connect_timeout=5, retry=_retry())
        try:
            # the slot map now, not on the first command: redis-py refreshes it lazily and, racing
            # the burst of first commands, drops connections that are still connecting
            await cluster.initialize()
        except (RedisError, OSError) as exc:
            await cluster.aclose()
            raise StoreError(f"connect to redis cluster at {url}: {exc}") from exc
        return cluster
    return client


def _refuse_bad_replication(url: str | None, settings: Settings) -> None:
    """Settings with which every commit would wait and fail (or block): refused at start."""
    if url is None:
        raise StoreError(
            "ESCALATION_REDIS_MIN_REPLICAS needs a Redis with replicas: the embedded redis-server "
            "has none (set ESCALATION_REDIS_URL, or ESCALATION_REDIS_MIN_REPLICAS=0)"
        )
    if settings.redis_min_replicas_timeout_ms <= 0:
        raise StoreError("ESCALATION_REDIS_MIN_REPLICAS_TIMEOUT_MS must be > 0 (WAIT 0 blocks forever)")


async def _check_replicas(client: AnyRedis, wanted: int) -> None:
    """Say at start when a master has fewer replicas than each commit will wait for: until they
    attach, every commit is refused (503) as not replicated."""
    try:
        if isinstance(client, RedisCluster):
            per_node = await client.info("replication", target_nodes=RedisCluster.PRIMARIES)
            counts = [int(info.get("connected_slaves", 0)) for info in per_node.values()]
        else:
            counts = [int((await client.info("replication")).get("connected_slaves", 0))]
    except (RedisError, OSError, AttributeError) as exc:
        log.warning("redis_replicas_unknown", error=str(exc))
        return
    if min(counts, default=0) < wanted:
        log.warning(
            "redis_fewer_replicas_than_required",
            connected=min(counts, default=0),
            required=wanted,
            detail="commits are refused (503) until enough replicas acknowledge them",
        )


@asynccontextmanager
async def open_store(
    url: str | None, settings: Settings, observe: Observer = lambda operation, seconds, ok: None
) -> AsyncIterator[RedisStore]:
    async with open_stores(url, settings, observe, {"api": MAX_CONNECTIONS}) as stores:
        yield stores["api"]


class Stores(dict[str, RedisStore]):
    """The stores by role, and the URL they reach Redis at (the embedded server's, if started)."""

    url = ""


@asynccontextmanager
async def open_stores(
    url: str | None, settings: Settings, observe: Observer, pools: Mapping[str, int]
) -> AsyncIterator[Stores]:
    """One store per role on the same Redis, each with a connection pool of its own size: a
    role that has used up its pool waits for its own connections, never for another role's
    (a storm of webhooks or of deliveries cannot make a due timer wait for a connection)."""
    async with AsyncExitStack() as stack:
        if settings.redis_min_replicas > 0:
            _refuse_bad_replication(url, settings)
        if url is None:
            embedded = await stack.enter_async_context(
                EmbeddedRedis(settings.data_dir, fsync=settings.redis_fsync)
            )
            url = embedded.url
            log.info("embedded_redis_started", data_dir=str(settings.data_dir), url=url)
        stores = Stores()
        stores.url = url
        for role, max_connections in pools.items():
            store = RedisStore(
                await connect(url, max_connections),
                retention_ms=int(settings.retention_days * 86_400_000),
                observe=observe,
                min_replicas=settings.redis_min_replicas,
                min_replicas_timeout_ms=settings.redis_min_replicas_timeout_ms,
            )
            stack.push_async_callback(store.close)
            stores[role] = store
        if settings.redis_min_replicas > 0:
            await _check_replicas(next(iter(stores.values())).client, settings.redis_min_replicas)
        yield stores
