"""Group commit for a standalone Redis: the commands callers issue in the same event-loop turn
go out as one pipeline on one connection, each caller still awaiting its own reply.

One command through redis-py costs ~80 µs of client CPU (a pool checkout under a lock, packing,
a write, a read); in a pipeline of 32 it costs ~20 µs. Nothing is answered earlier than before:
a caller's future is set only from the reply to its own command, which Redis sends after the
write is applied (and, with appendfsync always, fsynced). With replicas required, one WAIT ends
each pipeline and covers every write in it (WAIT counts the connection's last write).
"""

import asyncio
import inspect
import math
from collections.abc import Sequence
from typing import Any

from hiredis import pack_command
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError

Arg = str | int | bytes
MAX_BATCH = 256  # commands per pipeline: a bigger turn goes out as several pipelines side by side
KEPT_CONNECTIONS = 8  # held between pipelines: a pool checkout takes a lock and a timer each time


class Replicated:
    """A reply together with the number of replicas that acknowledged its pipeline's writes."""

    __slots__ = ("acked", "reply")

    def __init__(self, reply: Any, acked: int) -> None:
        self.reply, self.acked = reply, acked


class Batcher:
    def __init__(self, client: Redis, texts: dict[str, str], shas: dict[str, str]) -> None:
        self.client = client
        self.texts = texts
        self.shas = shas
        self._pending: list[tuple[list[Arg], str, bool, asyncio.Future[Any]]] = []
        self._flushes: set[asyncio.Task[None]] = set()
        self._kept: list[Any] = []  # healthy connections, checked out of the pool and not returned
        pool = client.connection_pool
        # at most a quarter of the pool, so callers that use the pool directly still find room;
        # none behind Sentinel: the pool closes only its idle connections when the master moves,
        # and a kept one could go on reading from the demoted master
        self._keep = (
            0 if hasattr(pool, "get_master_address") else min(KEPT_CONNECTIONS, pool.max_connections // 4)
        )
        self.wait: tuple[int, int] | None = None  # (replicas, timeout ms) to WAIT for, if any
        self.timeout_s: float | None = pool.connection_kwargs.get("socket_timeout")

    def command(self, *args: Arg) -> "asyncio.Future[Any]":
        """Queue one command; the future is its reply (or its error)."""
        return self._queue(list(args), "", False)

    def script(
        self, name: str, keys: Sequence[str] = (), args: Sequence[Arg] = (), durable: bool = False
    ) -> "asyncio.Future[Any]":
        """Queue a script by its SHA. durable (with `wait` set): its pipeline ends with WAIT, and
        the future is a Replicated (the reply and the replicas that acknowledged it)."""
        command: list[Arg] = ["EVALSHA", self.shas[name], len(keys), *keys, *args]
        return self._queue(command, name, durable and self.wait is not None)

    def _queue(self, command: list[Arg], script: str, durable: bool) -> "asyncio.Future[Any]":
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._flush_all)
        self._pending.append((command, script, durable, future))
        return future

    def _flush_all(self) -> None:
        pending, self._pending = self._pending, []
        for start in range(0, len(pending), MAX_BATCH):
            task = asyncio.ensure_future(self._flush(pending[start : start + MAX_BATCH]))
            self._flushes.add(task)  # held until done: the loop keeps only weak references
            task.add_done_callback(self._flushes.discard)

    async def _flush(self, batch: list[tuple[list[Arg], str, bool, "asyncio.Future[Any]"]]) -> None:
        wait = self.wait if any(durable for _, _, durable, _ in batch) else None
        commands = [command for command, _, _, _ in batch]
        if wait is not None:
            commands.append(["WAIT", *wait])
        try:
            replies = await self._send(commands)
        except BaseException as exc:  # the connection failed: every caller in it gets the error
            for _, _, _, future in batch:
                if not future.done():
                    future.set_exception(exc if isinstance(exc, Exception) else ConnectionError(str(exc)))
            if not isinstance(exc, Exception):
                raise
            return
        acked = replies.pop() if wait is not None else None
        for (command, script, durable, future), reply in zip(batch, replies, strict=True):
            mine = acked
            if isinstance(reply, NoScriptError) and script:  # a restarted server: EVAL caches it again
                reply, mine = await self._eval(script, command, wait if durable else None)
            if future.done():  # its caller was cancelled meanwhile
                continue
            if isinstance(reply, Exception):
                future.set_exception(reply)
            elif durable:
                future.set_result(Replicated(reply, mine if isinstance(mine, int) else 0))
            else:
                future.set_result(reply)

    async def _send(self, commands: list[list[Arg]]) -> list[Any]:
        """Every command in one write, packed by hiredis, then their replies in order under one
        deadline (the client's socket timeout). redis-py's own pipeline packs in Python and arms
        a timer for each reply: together a third of a timer storm's client CPU. A broken
        connection is retried as the client's pipeline would (its Retry: a Redis restart, a
        Sentinel failover's READONLY)."""
        pool = self.client.connection_pool
        conn = await self._connection()
        try:
            replies: list[Any] = await conn.retry.call_with_retry(
                lambda: self._exchange(conn, commands), lambda error: conn.disconnect()
            )
        except BaseException:
            try:
                await conn.disconnect()  # replies may still be owed: the next user must not read them
            finally:
                await pool.release(conn)
            raise
        if len(self._kept) < self._keep and not conn.should_reconnect():
            self._kept.append(conn)  # still counted as in use by the pool, which closes it at the end
        else:
            await pool.release(conn)
        return replies

    async def _connection(self) -> Any:
        """A kept connection, or one from the pool. A kept one the server closed (a restart, a
        client timeout) is closed here too, and connects again as it sends, instead of failing
        its first try. (redis-py 8's pool skips this check while maintenance notifications are
        on, as they are by default, so its connections are not checked either.)"""
        pool = self.client.connection_pool
        if not self._kept:
            return await pool.get_connection()  # type: ignore[no-untyped-call]
        conn = self._kept.pop()
        try:
            if await conn.can_read():  # at EOF (or, never expected, with bytes nobody asked for)
                await conn.disconnect()
        except RedisConnectionError:  # already closed: can_read() disconnected it
            pass
        except BaseException:
            await pool.release(conn)
            raise
        return conn

    async def _exchange(self, conn: Any, commands: list[list[Arg]]) -> list[Any]:
        callbacks = self.client.response_callbacks
        async with asyncio.timeout(self.timeout_s):
            await conn.send_packed_command(
                b"".join([pack_command(tuple(c)) for c in commands]),  # type: ignore[arg-type]
                check_health=False,
            )
            replies = []
            for command in commands:
                try:
                    reply = await conn.read_response(timeout=math.inf)  # the deadline is above
                except ResponseError as exc:  # this command's error, as a pipeline gives it
                    reply = exc
                else:
                    if (callback := callbacks.get(str(command[0]))) is not None:
                        reply = callback(reply)
                        if inspect.isawaitable(reply):
                            reply = await reply
                replies.append(reply)
        return replies

    async def _eval(self, script: str, command: list[Arg], wait: tuple[int, int] | None) -> tuple[Any, Any]:
        """The script by its text, and WAIT on the same connection (WAIT counts that connection's
        last write), as a pipeline of its own."""
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.execute_command("EVAL", self.texts[script], *command[2:])
                if wait is not None:
                    pipe.execute_command("WAIT", *wait)
                replies = list(await pipe.execute(raise_on_error=False))
        except Exception as exc:
            return exc, None
        return replies[0], (replies[1] if wait is not None else None)
