"""The real-Redis helpers in tests/servers.py behave as the other tests assume."""

import pytest
import redis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.exceptions import ClusterCrossSlotError, RedisClusterException

from tests.servers import RedisCluster, RedisServer, redis_get

TWO_KEYS = "redis.call('SET', KEYS[1], ARGV[1]); redis.call('SET', KEYS[2], ARGV[1]); return 2"


async def test_a_server_restarts_on_the_same_url() -> None:
    with RedisServer() as server:
        url = server.url
        with redis.Redis.from_url(url) as client:
            client.set("k", "v")
        server.restart()
        assert server.url == url
        assert await redis_get(url, "k") is None  # persistence is off

        server.kill()
        with pytest.raises(redis.ConnectionError):
            await redis_get(url, "k")
        server.start()
        assert server.running
        assert await redis_get(url, "k") is None


def test_the_session_server_fixture_is_flushed(redis_url: str, redis_server: RedisServer) -> None:
    assert redis_url == redis_server.url
    with redis.Redis.from_url(redis_url) as client:
        assert client.dbsize() == 0


async def test_the_cluster_serves_keys_in_every_slot_range(
    redis_cluster_url: str, redis_cluster: RedisCluster
) -> None:
    assert redis_cluster_url == f"redis://127.0.0.1:{redis_cluster.ports[0]}"
    assert len(redis_cluster.startup_nodes) == 3
    client = AsyncRedisCluster.from_url(redis_cluster_url)
    try:
        keys = [f"key-{i}" for i in range(30)]
        for key in keys:
            await client.set(key, key)
        assert [await client.get(k) for k in keys] == [k.encode() for k in keys]
        owners = {node.port for k in keys if (node := client.get_node_from_key(k)) is not None}
        assert owners == set(redis_cluster.ports)  # all three masters took part
    finally:
        await client.aclose()


async def test_lua_needs_keys_in_one_slot(redis_cluster_url: str) -> None:
    client = AsyncRedisCluster.from_url(redis_cluster_url)
    try:
        assert await client.eval(TWO_KEYS, 2, "{s1}a", "{s1}b", "x") == 2
        assert await client.get("{s1}b") == b"x"

        assert client.keyslot("a") != client.keyslot("b")
        with pytest.raises(RedisClusterException, match="same key slot"):  # redis-py checks first
            await client.eval(TWO_KEYS, 2, "a", "b", "x")
        # And the server itself refuses, when the client is told where to send it.
        with pytest.raises(ClusterCrossSlotError, match="same slot"):
            await client.execute_command(
                "EVAL", TWO_KEYS, 2, "a", "b", "x", target_nodes=client.get_node_from_key("a")
            )
    finally:
        await client.aclose()
