"""The Redis connection side every part of the store shares: scripts, one error path, and the
durable commit (a script followed by WAIT on the same connection, when replicas are required)."""

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from importlib import resources
from typing import Any, TypeVar

import structlog
from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, PipelineCommand, RedisCluster
from redis.exceptions import (
    AskError,
    ClusterDownError,
    ConnectionError,
    MovedError,
    NoScriptError,
    RedisError,
    TimeoutError,
    TryAgainError,
)

from engine.errors import NotReplicatedError, StoreError
from engine.store.batch import Batcher, Replicated

AnyRedis = Redis | RedisCluster
T = TypeVar("T")
Observer = Callable[[str, float, bool], None]  # (operation, seconds, succeeded)
SCRIPTS = (
    "commit", "pump", "move", "repair", "read", "count", "dead", "beat", "redrive", "done", "append", "due",
    "repeat", "shown",
)  # fmt: skip
Arg = str | int | bytes
log = structlog.get_logger(__name__)
# a node that no longer owns the slot, or is gone: the cluster client's own routing refreshes the map
_STALE_ROUTE = (AskError, ClusterDownError, ConnectionError, MovedError, TimeoutError, TryAgainError)


def _script(name: str) -> str:
    return resources.files("engine.store").joinpath("scripts", f"{name}.lua").read_text()


def raise_if_cancelling() -> None:
    """redis-py can turn a cancelled read into a connection error; do not let a loop swallow the cancel."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _wrote(result: Any) -> bool:
    """The scripts answer 0, -1 or false (nil) when they changed nothing (a lost race, a gone entry);
    a script with an answer per key wrote if any key's answer says so."""
    if isinstance(result, list):
        return any(_wrote(r) for r in result)
    return result is not None and result is not False and result not in (0, -1)


def _inside_redis_py(exc: BaseException) -> bool:
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and f"{os.sep}redis{os.sep}" in tb.tb_frame.f_code.co_filename


class RedisCore:
    """The client, the Lua scripts, and _run: every operation timed, every failure a StoreError.

    With `min_replicas` > 0, the scripts that commit accepted state (decisions, duplicate counts,
    heartbeats: see `durable`) are each followed by `WAIT min_replicas timeout` on the connection
    that ran them, and a commit fewer replicas acknowledged raises NotReplicatedError.
    """

    def __init__(
        self,
        client: AnyRedis,
        *,
        retention_ms: int = 30 * 86_400_000,
        observe: Observer = lambda operation, seconds, ok: None,
        min_replicas: int = 0,
        min_replicas_timeout_ms: int = 500,
    ) -> None:
        if min_replicas > 0 and min_replicas_timeout_ms <= 0:
            raise StoreError("redis min replicas: the WAIT timeout must be > 0 ms (0 would block forever)")
        self.client = client
        self.retention_ms = retention_ms
        self.observe = observe  # store latency and errors, for metrics; the store imports none
        self.min_replicas = min_replicas
        self.min_replicas_timeout_ms = min_replicas_timeout_ms
        self.scripts: dict[str, Any] = {name: client.register_script(_script(name)) for name in SCRIPTS}
        self._texts = {name: _script(name) for name in SCRIPTS}
        # standalone (or the master sentinels name): commands of one loop turn share a pipeline
        self.batcher: Batcher | None = None
        if isinstance(client, Redis):
            self.batcher = Batcher(client, self._texts, {n: s.sha for n, s in self.scripts.items()})
            if min_replicas > 0:
                self.batcher.wait = (min_replicas, min_replicas_timeout_ms)
            self.scripts = {name: _Batched(self.batcher, name) for name in SCRIPTS}

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
        except StoreError:  # not replicated: counted as a failed operation of this step
            self.observe(step, time.perf_counter() - started, False)
            raise
        except AttributeError as exc:
            if not _inside_redis_py(exc):
                raise  # ours: a bug, not an unavailable store
            # redis-py's cluster client can drop a connection that is still connecting when its
            # slot map refreshes (its _writer is None): a failed call, retried by Alertmanager on 503
            self.observe(step, time.perf_counter() - started, False)
            raise StoreError(f"{step}: redis client connection reset ({exc})") from exc
        self.observe(step, time.perf_counter() - started, True)
        return result

    async def durable(self, step: str, name: str, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        """Run script `name`; with min_replicas, not done until that many replicas have its write."""
        if self.min_replicas <= 0:
            return await self._call(step, lambda: self.scripts[name](keys=keys, args=args))
        if self.batcher is not None:
            batcher = self.batcher

            async def replicated() -> Any:
                done: Replicated = await batcher.script(name, keys, args, durable=True)
                return self._enough(step, done.reply, done.acked)

            return await self._run(step, replicated)
        return await self._run(step, lambda: self._replicated(step, name, keys, args))

    async def command(self, step: str, *args: Arg) -> Any:
        """One command, in the turn's pipeline when there is one."""
        if self.batcher is not None:
            batcher = self.batcher
            return await self._call(step, lambda: batcher.command(*args))
        return await self._call(step, lambda: self.client.execute_command(*args))

    async def _replicated(self, step: str, name: str, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        # WAIT counts the replicas that acknowledged this connection's last write, so it must follow
        # the script on the same connection: one non-transactional pipeline of EVALSHA + WAIT
        evalsha: list[Arg] = ["EVALSHA", self.scripts[name].sha, len(keys), *keys, *args]
        result, acked = await self._eval_then_wait(evalsha, keys[0])
        if isinstance(result, NoScriptError):  # a restarted or new master: EVAL caches it again
            result, acked = await self._eval_then_wait(["EVAL", self._texts[name], *evalsha[2:]], keys[0])
        for reply in (result, acked):
            if isinstance(reply, Exception):
                raise reply
        return self._enough(step, result, int(acked))

    def _enough(self, step: str, result: Any, acked: int) -> Any:
        """The reply, if enough replicas acknowledged it (or it wrote nothing)."""
        if _wrote(result) and acked < self.min_replicas:
            log.warning(
                "commit_not_replicated",
                step=step,
                replicas_acked=int(acked),
                replicas_required=self.min_replicas,
                timeout_ms=self.min_replicas_timeout_ms,
            )
            raise NotReplicatedError(
                f"{step}: taken by the Redis master but acknowledged by {int(acked)} of "
                f"{self.min_replicas} required replicas within {self.min_replicas_timeout_ms} ms; "
                "not durable across a failover, try again"
            )
        return result

    async def _eval_then_wait(self, evalsha: list[Arg], key: str) -> list[Any]:
        wait: list[Arg] = ["WAIT", self.min_replicas, self.min_replicas_timeout_ms]
        if isinstance(self.client, Redis):  # standalone, or the master the sentinels name
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.execute_command(*evalsha)
                pipe.execute_command(*wait)
                return list(await pipe.execute(raise_on_error=False))
        try:
            return await self._on_slot_owner(self.client, key, [evalsha, wait])
        except _STALE_ROUTE:
            pass
        # the slot moved (a failover) or its node is gone: a keyed read through the cluster client
        # lets its own MOVED / reconnect handling refresh the slot map, then the owner is asked again
        await self.client.exists(key)
        return await self._on_slot_owner(self.client, key, [evalsha, wait])

    @staticmethod
    async def _on_slot_owner(cluster: RedisCluster, key: str, commands: list[list[Arg]]) -> list[Any]:
        """Pipeline `commands` on one connection to the master owning `key`'s slot.

        A cluster pipeline routes each command by its own keys, and WAIT has none; so this goes to
        the node itself. A reply of MOVED / ASK / CLUSTERDOWN / TRYAGAIN is raised for the caller."""
        await cluster.initialize()  # no-op once the slot map is known
        node: ClusterNode | None = cluster.get_node_from_key(key)
        if node is None:
            raise ClusterDownError(f"no master holds the slot of {key}")
        queued = [PipelineCommand(i, *args) for i, args in enumerate(commands)]
        await node.execute_pipeline(queued)
        for cmd in queued:
            if isinstance(cmd.result, _STALE_ROUTE):
                raise cmd.result
        return [cmd.result for cmd in queued]

    def pipelined(self) -> bool:
        return self.batcher is not None

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


class _Batched:
    """A script called like redis-py's (keys=, args=), sent in the turn's pipeline."""

    def __init__(self, batcher: Batcher, name: str) -> None:
        self.batcher, self.name = batcher, name
        self.sha = batcher.shas[name]

    def __call__(self, keys: Sequence[str] = (), args: Sequence[Arg] = ()) -> "asyncio.Future[Any]":
        return self.batcher.script(self.name, keys, args)
