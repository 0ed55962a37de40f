"""The Redis connection side every part of the store shares: scripts, and one error path."""

import asyncio
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from engine.errors import StoreError

AnyRedis = Redis | RedisCluster
T = TypeVar("T")
Observer = Callable[[str, float, bool], None]  # (operation, seconds, succeeded)
SCRIPTS = ("commit", "pump", "move", "repair", "read", "count", "dead", "beat", "redrive", "done")


def _script(name: str) -> str:
    return resources.files("engine.store").joinpath("scripts", f"{name}.lua").read_text()


def raise_if_cancelling() -> None:
    """redis-py can turn a cancelled read into a connection error; do not let a loop swallow the cancel."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class RedisCore:
    """The client, the Lua scripts, and _run: every operation timed, every failure a StoreError."""

    def __init__(
        self,
        client: AnyRedis,
        *,
        retention_ms: int = 30 * 86_400_000,
        observe: Observer = lambda operation, seconds, ok: None,
    ) -> None:
        self.client = client
        self.retention_ms = retention_ms
        self.observe = observe  # store latency and errors, for metrics; the store imports none
        self.scripts = {name: client.register_script(_script(name)) for name in SCRIPTS}

    async def _call(self, step: str, fn: Callable[[], Any]) -> Any:
        """Await fn(), turning Redis and socket failures into StoreError naming the step."""
        return await self._run(step, fn)

    async def _run(self, step: str, fn: Callable[[], Awaitable[T]]) -> T:
        started = time.perf_counter()
        try:
            result = await fn()
        except (RedisError, OSError) as exc:
            self.observe(step, time.perf_counter() - started, False)
            raise_if_cancelling()  # redis-py can turn a cancelled read into a connection error
            raise StoreError(f"{step}: {exc}") from exc
        self.observe(step, time.perf_counter() - started, True)
        return result

    async def ping(self) -> bool:
        return bool(await self._call("ping", self.client.ping))

    async def close(self) -> None:
        await self.client.aclose()
        # a redis+sentinel:// client also holds connections to the sentinels themselves
        manager = (
            getattr(self.client.connection_pool, "sentinel_manager", None)
            if isinstance(self.client, Redis)
            else None
        )
        for sentinel in getattr(manager, "sentinels", []):
            await sentinel.aclose()
