"""Redis Sentinel: `--redis-url redis+sentinel://host:port/service` finds the master the
sentinels name, and after the master is killed and its replica promoted, the same store goes on
working against the new master. Real redis-server processes in sentinel mode, on loopback."""

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from engine.alerts import Alert
from engine.errors import NotReplicatedError, StoreError
from engine.ingest.alertmanager import parse_payload
from engine.metrics import Metrics
from engine.processor import Processor
from engine.store import keys
from engine.store.connect import MAX_CONNECTIONS, connect, parse_sentinel
from engine.store.redis import RedisStore
from engine.timeline import EntryKind, TimelineEntry
from tests.clock import FakeClock
from tests.servers import RedisServer, Sentinel, wait_for_replicas
from tests.unit.escalation_helpers import POLICIES

FIXTURES = Path(__file__).parent.parent / "fixtures"

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


@pytest.fixture
def topology() -> Iterator[tuple[RedisServer, RedisServer, Sentinel]]:
    master = RedisServer().start()
    replica = RedisServer(extra_args=("--replicaof", "127.0.0.1", str(master.port))).start()
    sentinel = Sentinel(master.port)
    try:
        yield master, replica, sentinel
    finally:
        sentinel.close()
        replica.close()
        master.close()


async def test_the_store_follows_the_master_the_sentinels_promote(
    topology: tuple[RedisServer, RedisServer, Sentinel],
) -> None:
    master, replica, sentinel = topology
    store = RedisStore(await connect(f"redis+sentinel://127.0.0.1:{sentinel.port}/mymaster"))
    try:
        await store.client.hset(keys.incident("0-aaaaaaaaaaaa"), "d", "{}")  # a timeline needs its incident
        entry = TimelineEntry(1, EntryKind.OPENED, "test", "before the failover")
        await store.append_timeline("0-aaaaaaaaaaaa", entry)
        await asyncio.to_thread(wait_for_replicas, master.port, 1)  # replication is asynchronous
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
        # the batcher keeps no connection here: the pool closes only its idle ones when the
        # master moves, and a kept one could go on reading from a demoted master
        await asyncio.gather(*(store.command("read", "GET", f"k{i}") for i in range(300)))
        assert store.batcher is not None and not store.batcher._kept
    finally:
        await store.close()


def alerts(i: int) -> list[Alert]:
    raw = json.loads((FIXTURES / "01-firing-single.json").read_text())
    raw["alerts"][0]["fingerprint"] = f"{i:016x}"
    raw["groupKey"] = f"{{}}:{{host={i}}}"  # one incident each
    return parse_payload(raw)[1]


async def until_promoted(sentinel: Sentinel, replica: RedisServer) -> None:
    deadline = time.monotonic() + 20
    while sentinel.master_port() != replica.port:
        assert time.monotonic() < deadline, "the sentinel never promoted the replica"
        await asyncio.sleep(0.1)


async def test_with_min_replicas_what_was_acknowledged_survives_and_writes_wait_for_a_replica(
    topology: tuple[RedisServer, RedisServer, Sentinel],
) -> None:
    master, replica, sentinel = topology
    wait_for_replicas(master.port, 1)
    url = f"redis+sentinel://127.0.0.1:{sentinel.port}/mymaster"
    store = RedisStore(await connect(url), min_replicas=1, min_replicas_timeout_ms=200)
    proc = Processor(store, lambda: POLICIES, FakeClock(), Metrics(CollectorRegistry()))
    deadline = time.monotonic() + 30
    try:
        first = (await proc.ingest(alerts(0))).incidents[0]
        master.kill()
        await until_promoted(sentinel, replica)
        while True:  # the pool finds the new master through the sentinels
            try:
                assert await store.load(first) is not None  # acknowledged = on the promoted replica
                break
            except StoreError:
                assert time.monotonic() < deadline, "the store never reached the new master"
                await asyncio.sleep(0.1)
        with pytest.raises(NotReplicatedError):  # the new master has no replica yet: not durable
            await proc.ingest(alerts(1))
        master.extra_args = ("--replicaof", "127.0.0.1", str(replica.port))  # back, as its replica
        master.start()
        wait_for_replicas(replica.port, 1)
        again = await proc.ingest(alerts(1))  # the sender's retry: the refused commit was on the master
        assert again.duplicates == 1 and len(await store.list_incidents(10)) == 2
    finally:
        await store.close()


async def test_a_burst_waits_for_a_free_connection_to_the_master(
    topology: tuple[RedisServer, RedisServer, Sentinel],
) -> None:
    """Commits hold their connection through WAIT: more at once than the pool holds must queue
    for a connection (as with a standalone Redis), not fail with "Too many connections"."""
    _, _, sentinel = topology
    client = await connect(f"redis+sentinel://127.0.0.1:{sentinel.port}/mymaster")
    store = RedisStore(client)
    try:
        busy = [client.blpop(["nothing"], timeout=0.05) for _ in range(3 * MAX_CONNECTIONS)]
        assert await asyncio.gather(*busy) == [None] * (3 * MAX_CONNECTIONS)
    finally:
        await store.close()
