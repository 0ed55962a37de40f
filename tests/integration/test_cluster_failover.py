"""Redis Cluster with a replica per master: WAIT goes to the master that took each write, and the
same RedisStore goes on committing and firing timers after a replica is promoted, by a manual
`CLUSTER FAILOVER` or because its master was killed (SIGKILL). Real redis-server processes."""

import asyncio
import json
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from engine.alerts import Alert
from engine.errors import NotReplicatedError, StoreError
from engine.events import Acknowledge
from engine.ingest.alertmanager import parse_payload
from engine.metrics import Metrics
from engine.processor import Processor
from engine.scheduler import Scheduler
from engine.store import keys
from engine.store.connect import connect
from engine.store.redis import RedisStore
from tests.clock import FakeClock
from tests.servers import RedisCluster, RedisServer, wait_for_replicas
from tests.unit.escalation_helpers import POLICIES

FIXTURES = Path(__file__).parent.parent / "fixtures"
GROUPS = 24  # enough incidents that every master holds some
pytestmark = pytest.mark.redis


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    with RedisCluster(replicas=1) as c:
        yield c


def alerts(i: int) -> list[Alert]:
    raw = json.loads((FIXTURES / "01-firing-single.json").read_text())
    raw["alerts"][0]["fingerprint"] = f"{i:016x}"
    raw["groupKey"] = f"{{}}:{{group={i}}}"  # one incident each
    return parse_payload(raw)[1]


async def store_on(cluster: RedisCluster, min_replicas: int = 1) -> RedisStore:
    store = RedisStore(await connect(cluster.url), min_replicas=min_replicas, min_replicas_timeout_ms=200)
    await store.client.flushall()
    return store


def owner_port(store: RedisStore, incident_id: str) -> int:
    node = store.client.get_node_from_key(keys.incident(incident_id))  # type: ignore[union-attr]
    assert node is not None
    return int(node.port)


async def test_wait_is_asked_of_the_master_that_took_the_write(cluster: RedisCluster) -> None:
    store = await store_on(cluster)
    proc = Processor(store, lambda: POLICIES, FakeClock(), Metrics(CollectorRegistry()))
    master = cluster.primaries()[0]
    frozen = cluster.replica_of(master)
    refused: set[int] = set()
    try:
        assert frozen.proc is not None
        frozen.proc.send_signal(signal.SIGSTOP)  # connected, never acknowledging
        for i in range(GROUPS):
            try:
                await proc.ingest(alerts(i))
            except NotReplicatedError:
                refused.add(i)
    finally:
        assert frozen.proc is not None
        frozen.proc.send_signal(signal.SIGCONT)
        wait_for_replicas(master.port, 1)
    try:
        assert refused and len(refused) < GROUPS
        for i in range(GROUPS):  # the senders' retries: each names its incident
            incident_id = (await proc.ingest(alerts(i))).incidents[0]
            assert (owner_port(store, incident_id) == master.port) == (i in refused)
    finally:
        await store.close()


async def _converge(proc: Processor, sched: Scheduler, clock: FakeClock, since: int) -> list[str]:
    """Open GROUPS more incidents and fire every due timer; the ids opened."""
    opened = [(await proc.ingest(alerts(since + i))).incidents[0] for i in range(GROUPS)]
    clock.advance(3600)
    await sched.cycle()
    return opened


async def test_the_same_store_goes_on_after_a_manual_failover(cluster: RedisCluster) -> None:
    clock = FakeClock()
    store = await store_on(cluster)
    proc = Processor(store, lambda: POLICIES, clock, Metrics(CollectorRegistry()))
    sched = Scheduler(store, proc, clock, proc.metrics)
    try:
        before = await _converge(proc, sched, clock, 0)
        master = cluster.primaries()[0]
        cluster.failover(cluster.replica_of(master))  # the old master becomes its replica: WAIT holds
        after = await _converge(proc, sched, clock, GROUPS)
        assert await store.due_timers(clock.now_ms(), 1000) == []  # every timer fired, on any master
        for incident_id in before + after:
            inc = await store.load(incident_id)
            assert inc is not None and inc.step == 2  # its 30m level paged by a fired timer
        inc = await proc.act(before[0], Acknowledge("alice"))
        assert inc.acked_by == "alice"
    finally:
        await store.close()


async def _until(what: str, fn: Callable[[], Awaitable[object]], deadline: float) -> None:
    while True:
        try:
            await fn()
            return
        except StoreError:
            assert time.monotonic() < deadline, f"{what}: still failing"
            await asyncio.sleep(0.05)


async def test_the_same_store_goes_on_after_its_master_is_killed(cluster: RedisCluster) -> None:
    clock = FakeClock()
    store = await store_on(cluster)
    proc = Processor(store, lambda: POLICIES, clock, Metrics(CollectorRegistry()))
    try:
        opened = [(await proc.ingest(alerts(i))).incidents[0] for i in range(GROUPS)]
        master = cluster.primaries()[0]
        replica = cluster.replica_of(master)
        orphaned = [i for i in opened if owner_port(store, i) == master.port]
        assert orphaned
        started = time.monotonic()
        master.kill()  # SIGKILL: after the node timeout the replica is elected, without its master
        deadline = started + 60

        async def read_all() -> None:
            for incident_id in orphaned:  # every commit WAITed for is on the promoted replica
                assert await store.load(incident_id) is not None

        await _until("reads after the failover", read_all, deadline)
        read_s = time.monotonic() - started
        with pytest.raises(NotReplicatedError):  # the promoted master has no replica of its own yet
            await proc.act(orphaned[0], Acknowledge("bob"))
        rejoin(master, replica)
        clock.advance(3600)
        sched = Scheduler(store, proc, clock, proc.metrics)
        await _until("timers after the failover", sched.cycle, deadline)
        write_s = time.monotonic() - started
        for incident_id in opened:  # every timer fired, on whichever master holds it now
            inc = await store.load(incident_id)
            assert inc is not None and inc.step == 2
        assert (await proc.act(orphaned[0], Acknowledge("bob"))).acked_by == "bob"
        print(f"cluster failover: reads again after {read_s:.2f} s, durable writes after {write_s:.2f} s")
    finally:
        await store.close()


def rejoin(old_master: RedisServer, promoted: RedisServer) -> None:
    """The killed node restarts from its nodes.conf and follows the replica promoted in its place."""
    old_master.start()
    wait_for_replicas(promoted.port, 1, timeout_s=30)
