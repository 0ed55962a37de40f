"""Redis Sentinel: `--redis-url redis+sentinel://host:port/service` finds the master the
sentinels name, and after the master is killed and its replica promoted, the same store goes on
working against the new master. Real redis-server processes in sentinel mode, on loopback."""

import asyncio
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from engine.store.connect import connect, parse_sentinel
from engine.store.embedded import redis_server_path
from engine.store.redis import RedisStore
from engine.timeline import EntryKind, TimelineEntry
from tests.servers import RedisServer, free_port, terminate

pytestmark = pytest.mark.redis


def test_sentinel_urls_are_parsed_or_refused_naming_the_problem() -> None:
    assert parse_sentinel("redis+sentinel://:s3cret@10.0.0.1:26379,[::1]:26380/escalation/2") == (
        [("10.0.0.1", 26379), ("::1", 26380)],
        "escalation",
        2,
        "s3cret",
    )
    assert parse_sentinel("redis+sentinel://a:26379/mymaster") == ([("a", 26379)], "mymaster", 0, None)
    for bad, says in [
        ("redis+sentinel://a:26379", "service"),
        ("redis+sentinel://a/mymaster", "sentinel 'a': expected host:port"),
        ("redis+sentinel://a:1/m/x", "db 'x': expected a number"),
    ]:
        with pytest.raises(ValueError, match=says):
            parse_sentinel(bad)


class Sentinel:
    """One redis-server in sentinel mode watching `master_port` as service `mymaster`."""

    def __init__(self, master_port: int) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="sentinel-test-"))
        conf = self.dir / "sentinel.conf"
        conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\n"
            f"sentinel monitor mymaster 127.0.0.1 {master_port} 1\n"
            "sentinel down-after-milliseconds mymaster 400\n"
            "sentinel failover-timeout mymaster 3000\n"
        )
        with (self.dir / "sentinel.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [str(redis_server_path()), str(conf), "--sentinel"],
                cwd=self.dir,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with redis.Redis(port=self.port) as client:
                    if client.ping():
                        return
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError("sentinel did not start")

    def master_port(self) -> int:
        with redis.Redis(port=self.port) as client:
            return int(client.sentinel_get_master_addr_by_name("mymaster")[1])


@pytest.fixture
def topology() -> Iterator[tuple[RedisServer, RedisServer, Sentinel]]:
    master = RedisServer().start()
    replica = RedisServer(extra_args=("--replicaof", "127.0.0.1", str(master.port))).start()
    sentinel = Sentinel(master.port)
    try:
        yield master, replica, sentinel
    finally:
        terminate(sentinel.proc, 5)
        replica.close()
        master.close()


async def test_the_store_follows_the_master_the_sentinels_promote(
    topology: tuple[RedisServer, RedisServer, Sentinel],
) -> None:
    master, replica, sentinel = topology
    store = RedisStore(await connect(f"redis+sentinel://127.0.0.1:{sentinel.port}/mymaster"))
    try:
        entry = TimelineEntry(1, EntryKind.OPENED, "test", "before the failover")
        await store.append_timeline("0-aaaaaaaaaaaa", entry)
        master.kill()  # the master dies; the sentinel promotes the replica
        deadline = time.monotonic() + 20
        while sentinel.master_port() != replica.port:
            assert time.monotonic() < deadline, "the sentinel never promoted the replica"
            await asyncio.sleep(0.2)
        after = TimelineEntry(2, EntryKind.RESOLVED, "test", "after the failover")
        while True:  # the same store, no restart: its pool asks the sentinels again
            try:
                await store.append_timeline("0-aaaaaaaaaaaa", after)
                break
            except Exception:
                assert time.monotonic() < deadline, "the store never reached the new master"
                await asyncio.sleep(0.2)
        texts = [e.text for e in await store.timeline("0-aaaaaaaaaaaa")]
        assert texts[-1] == "after the failover"  # written to the promoted replica
    finally:
        await store.close()
