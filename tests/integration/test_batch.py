"""Group commit on a standalone redis-server: commands issued in one event-loop turn share one
pipeline, and each caller still gets its own reply or its own error."""

import asyncio
from typing import Any

import pytest
from redis.asyncio import Redis

from engine.errors import StoreError
from engine.store.connect import connect
from engine.store.redis import RedisStore
from tests.servers import RedisServer

pytestmark = pytest.mark.redis


def count_pipelines(store: RedisStore) -> list[int]:
    """How many pipelines the store sent (the list grows by one per pipeline: one write of all
    its commands, then their replies)."""
    opened: list[int] = []
    assert store.batcher is not None
    real = store.batcher._send

    async def send(commands: list[Any]) -> list[Any]:
        opened.append(len(commands))
        return await real(commands)

    store.batcher._send = send  # type: ignore[method-assign]
    return opened


async def test_commands_of_one_turn_share_one_pipeline_and_each_gets_its_reply(store: RedisStore) -> None:
    for i in range(40):
        await store.client.hset(f"t:{i}", mapping={"v": i})
    opened = count_pipelines(store)
    replies = await asyncio.gather(*(store.command("read", "HGET", f"t:{i}", "v") for i in range(40)))
    assert [int(r) for r in replies] == list(range(40))
    assert len(opened) == 1


async def test_a_failing_command_fails_only_its_caller(store: RedisStore) -> None:
    await store.client.set("a-string", "x")
    await store.client.hset("a-hash", "f", "1")
    results = await asyncio.gather(
        store.command("read", "HGET", "a-hash", "f"),
        store.command("read", "HGET", "a-string", "f"),  # WRONGTYPE
        return_exceptions=True,
    )
    good, bad = results
    assert good == b"1"
    assert isinstance(bad, StoreError) and "WRONGTYPE" in str(bad) and str(bad).startswith("read:")


async def test_a_script_the_server_forgot_is_sent_again_by_its_text(store: RedisStore) -> None:
    await store.client.hset("esc:{s0}:inc:0-x", mapping={"v": 1})
    await store.client.script_flush()
    replies = await asyncio.gather(
        *(store.durable("count", "count", ["esc:{s0}:inc:0-x"], [1]) for _ in range(5))
    )
    assert replies == [1] * 5
    assert await store.client.hget("esc:{s0}:inc:0-x", "n") == b"5"
    assert await store.durable("count", "count", ["esc:{s0}:inc:0-x"], [1]) == 1  # cached again


async def test_a_cancelled_caller_leaves_the_others_their_replies(store: RedisStore) -> None:
    await store.client.set("k", "v")
    first = asyncio.ensure_future(store.command("read", "GET", "k"))
    second = asyncio.ensure_future(store.command("read", "GET", "k"))
    await asyncio.sleep(0)
    first.cancel()
    assert await second == b"v"
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_a_lost_server_fails_every_caller_with_a_store_error() -> None:
    server = RedisServer().start()
    s = RedisStore(await connect(server.url))
    try:
        await s.command("ping", "PING")
        server.stop()
        results = await asyncio.gather(
            *(s.command("read", "GET", f"k{i}") for i in range(10)), return_exceptions=True
        )
        assert all(isinstance(r, StoreError) for r in results), results
    finally:
        await s.close()
        server.stop()


async def test_arguments_of_every_kind_arrive_byte_for_byte(store: RedisStore) -> None:
    """The pipeline is packed by hiredis, not redis-py: ints, bytes with CRLF and NUL, UTF-8."""
    values: list[str | int | bytes] = [0, -17, 2**53, b"a\r\nb\x00c", "é ✓", b"", ""]
    await asyncio.gather(*(store.command("write", "HSET", "kinds", f"f{i}", v) for i, v in enumerate(values)))
    got = await store.client.hgetall("kinds")
    expected = [
        str(v).encode() if isinstance(v, int) else v if isinstance(v, bytes) else v.encode() for v in values
    ]
    assert [got[f"f{i}".encode()] for i in range(len(values))] == expected


BUSY_300_MS = """local t = redis.call('TIME'); local start = t[1] * 1000000 + t[2]
repeat local n = redis.call('TIME') until n[1] * 1000000 + n[2] - start > 300000
return 'late'"""


async def test_a_pipeline_past_its_deadline_fails_and_its_late_replies_reach_nobody(redis_url: str) -> None:
    """One deadline covers a whole pipeline (the client's socket timeout). A pipeline that
    misses it fails its callers, and its connection is dropped: the replies still owed on it
    must never be read as the answers to someone else's commands."""
    client = await connect(redis_url)
    assert isinstance(client, Redis)  # standalone: the batched path
    client.connection_pool.connection_kwargs["socket_timeout"] = 0.1
    s = RedisStore(client)
    try:
        await client.set("k", "v")
        slow = await asyncio.gather(s.command("slow", "EVAL", BUSY_300_MS, 0), return_exceptions=True)
        assert isinstance(slow[0], StoreError) and slow[0].args[0].startswith("slow:"), slow
        await asyncio.sleep(1.5)  # every try of the script (the client's Retry: 4) has answered by now
        assert [await s.command("read", "GET", "k") for _ in range(5)] == [b"v"] * 5
    finally:
        await s.close()


async def test_a_pooled_connection_the_server_dropped_is_retried_not_failed(redis_url: str) -> None:
    """Redis restarted, or a Sentinel failover closed the old master's connections: the pool
    still holds them, and the pipeline's first write on one fails. The client's Retry sends the
    pipeline again on a fresh connection, as redis-py's own pipeline did, instead of failing
    every caller in it."""
    s = RedisStore(await connect(redis_url))
    try:
        await s.client.set("k", "v")
        assert await s.command("read", "GET", "k") == b"v"  # a pooled connection, now idle
        killer = await connect(redis_url)
        await killer.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
        await killer.aclose()
        replies = await asyncio.gather(*(s.command("read", "GET", "k") for _ in range(5)))
        assert replies == [b"v"] * 5
    finally:
        await s.close()


async def test_connections_kept_between_pipelines_are_closed_with_the_store(redis_url: str) -> None:
    """The batcher keeps its connections out of the pool between pipelines (a checkout costs a
    lock and a timer each); closing the store must still close every one of them."""
    watcher = await connect(redis_url)

    async def clients() -> set[bytes]:
        listed = await watcher.execute_command("CLIENT", "LIST")
        return {line.split()[0] for line in listed.splitlines()}  # id=N

    try:
        before = await clients()
        s = RedisStore(await connect(redis_url))
        try:
            for _ in range(3):  # turns with pipelines side by side: several connections kept
                await asyncio.gather(*(s.command("read", "GET", f"k{i}") for i in range(600)))
            assert s.batcher is not None and s.batcher._kept
            mine = {await s.command("id", "CLIENT", "ID") for _ in range(3)}
            assert len(mine) == 1  # one turn after another: the same kept connection
            assert await clients() - before
        finally:
            await s.close()
        for _ in range(50):  # the server sees a close a moment after the client made it
            left = await clients() - before
            if not left:
                break
            await asyncio.sleep(0.02)
        assert not left, left
    finally:
        await watcher.aclose()


async def test_a_kept_connection_the_server_closed_is_connected_again_before_use(redis_url: str) -> None:
    """As the pool checks the connections it hands out: a kept one that the server closed (a
    restart, a client timeout) is connected again, not tried and retried."""
    s = RedisStore(await connect(redis_url))
    try:
        await s.client.set("k", "v")
        assert await s.command("read", "GET", "k") == b"v"
        assert s.batcher is not None and s.batcher._kept
        killer = await connect(redis_url)
        await killer.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
        await killer.aclose()
        await asyncio.sleep(0.05)
        tries = 0
        real = s.batcher._exchange

        async def counted(conn: Any, commands: list[Any]) -> list[Any]:
            nonlocal tries
            tries += 1
            return await real(conn, commands)

        s.batcher._exchange = counted  # type: ignore[method-assign]
        assert await s.command("read", "GET", "k") == b"v"
        assert tries == 1
    finally:
        await s.close()
