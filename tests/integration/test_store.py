"""The store, processor and scheduler against a real redis-server (and a real 3-master Cluster)."""

import asyncio
import json
from collections import Counter
from pathlib import Path
from typing import cast

import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from engine.errors import ConflictError
from engine.escalation import decide
from engine.events import Acknowledge
from engine.ingest.alertmanager import parse_payload
from engine.metrics import Metrics
from engine.processor import Processor
from engine.scheduler import Scheduler
from engine.store import keys
from engine.store import redis as redis_module
from engine.store.base import OutboxEntry
from engine.store.connect import connect
from engine.store.redis import RedisStore
from engine.timeline import EntryKind, TimelineEntry
from tests.clock import FakeClock
from tests.unit.escalation_helpers import POLICIES

FIXTURES = Path(__file__).parent.parent / "fixtures"
pytestmark = pytest.mark.redis


def payload(name: str, **changes: object) -> dict[str, object]:
    raw: dict[str, object] = json.loads((FIXTURES / name).read_text())
    raw.update(changes)
    return raw


async def outbox(store: RedisStore) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for shard, urgent in ((s, u) for s in range(keys.SHARDS) for u in keys.LANES):  # the decided outbox
        stream = keys.stream(keys.DISPATCH, shard, urgent)
        entries = cast(list[tuple[bytes, dict[bytes, bytes]]], await store.client.xrange(stream))
        out.extend(json.loads(fields[b"m"]) for _id, fields in entries)
    return out


def processor(store: RedisStore, clock: FakeClock) -> Processor:
    return Processor(store, lambda: POLICIES, clock, Metrics(CollectorRegistry()))


async def test_a_webhook_opens_one_incident_with_its_pages_in_the_outbox(store: RedisStore) -> None:
    clock = FakeClock()
    proc = processor(store, clock)
    _, alerts = parse_payload(payload("02-firing-group.json"))
    result = await proc.ingest(alerts)
    assert result.opened == 1 and len(result.incidents) == 1
    inc = await store.load(result.incidents[0])
    assert inc is not None and len(inc.alerts) == 3 and inc.version == 1
    # default route of the test policies: P3 / std, level 1 = user:a
    assert [(m["action"], m["target"]) for m in await outbox(store)] == [("trigger", "user:a")]
    assert [e.kind for e in await store.timeline(inc.id)] == ["opened", "paged"]
    assert await store.client.zscore(keys.timers(keys.shard_of_id(inc.id)), inc.id) == inc.timer_ms


async def test_a_duplicate_webhook_changes_nothing_but_a_counter(store: RedisStore) -> None:
    proc = processor(store, FakeClock())
    _, alerts = parse_payload(payload("01-firing-single.json"))
    first = await proc.ingest(alerts)
    again = await proc.ingest(alerts)
    assert again.opened == 0 and again.duplicates == 1
    assert len(await outbox(store)) == 1
    inc = await store.load(first.incidents[0])
    assert inc is not None and inc.duplicates == 1


async def test_concurrent_webhooks_for_one_group_open_exactly_one_incident(redis_url: str) -> None:
    stores = [RedisStore(await connect(redis_url)) for _ in range(4)]
    clock = FakeClock()
    _, alerts = parse_payload(payload("01-firing-single.json"))
    try:
        results = await asyncio.gather(*(processor(s, clock).ingest(alerts) for s in stores))
        assert sum(r.opened for r in results) == 1
        assert len({r.incidents[0] for r in results}) == 1
        assert len(await outbox(stores[0])) == 1
    finally:
        for s in stores:
            await s.close()


async def test_a_stale_version_loses_the_compare_and_set(store: RedisStore) -> None:
    clock = FakeClock()
    _, alerts = parse_payload(payload("01-firing-single.json"))
    result = await processor(store, clock).ingest(alerts)
    inc = await store.load(result.incidents[0])
    assert inc is not None
    d1 = decide(inc, Acknowledge("a"), clock.now_ms(), POLICIES)
    d2 = decide(inc, Acknowledge("b"), clock.now_ms(), POLICIES)
    await store.commit(inc, d1, clock.now_ms(), [])
    with pytest.raises(ConflictError):
        await store.commit(inc, d2, clock.now_ms(), [])
    after = await store.load(inc.id)
    assert after is not None and after.acked_by == "a" and after.version == 2


async def test_two_schedulers_fire_each_timer_exactly_once(redis_url: str) -> None:
    clock = FakeClock()
    stores = [RedisStore(await connect(redis_url)) for _ in range(2)]
    try:
        procs = [processor(s, clock) for s in stores]
        for n in range(40):
            labels = {"alertname": "Down", "instance": f"host-{n}"}
            raw = payload("01-firing-single.json", groupKey=f"g{n}")
            raw["alerts"] = [{**raw["alerts"][0], "labels": labels, "fingerprint": f"{n:016x}"}]  # type: ignore[index]
            await procs[n % 2].ingest(parse_payload(raw)[1])
        clock.advance(30 * 60)  # the std policy's level 2 is due
        scheds = [Scheduler(s, p, clock, p.metrics) for s, p in zip(stores, procs, strict=True)]
        await asyncio.gather(*(s.cycle() for s in scheds))
        await asyncio.gather(*(s.cycle() for s in scheds))
        level2 = Counter(m["incident_id"] for m in await outbox(stores[0]) if m["target"] == "user:b")
        assert len(level2) == 40 and set(level2.values()) == {1}
        assert await stores[0].due_timers(clock.now_ms(), 100) == []
    finally:
        for s in stores:
            await s.close()


async def test_the_same_store_code_runs_on_a_redis_cluster(redis_cluster_url: str) -> None:
    clock = FakeClock()
    store = RedisStore(await connect(redis_cluster_url))
    try:
        assert type(store.client).__name__ == "RedisCluster"
        await store.client.flushall()
        proc = processor(store, clock)
        for name in ("01-firing-single.json", "02-firing-group.json", "05-truncated.json"):
            await proc.ingest(parse_payload(payload(name))[1])
        listed = await store.list_incidents(10)
        assert len(listed) == 3
        clock.advance(30 * 60)
        sched = Scheduler(store, proc, clock, proc.metrics)
        await sched.cycle()
        inc = await proc.act(listed[0].id, Acknowledge("alice"))
        assert inc.acked_by == "alice"
        assert sum(1 for m in await outbox(store) if (m["target"], m["action"]) == ("user:b", "trigger")) == 3
        await store.ensure_groups()
        entries = await store.read_outbox("c1", 10)
        assert len(entries) == 8  # 3 first pages, 3 level-2 pages, ack mirrored to user:a and user:b
        first = entries[0]
        assert isinstance(first, OutboxEntry)
        await store.retry_later(first, [(clock.now_ms(), first.message)])
        assert await store.pump_retries(clock.now_ms()) == 1
    finally:
        await store.close()


async def test_open_counts_follow_state_changes(store: RedisStore) -> None:
    clock = FakeClock()
    proc = processor(store, clock)
    result = await proc.ingest(parse_payload(payload("01-firing-single.json"))[1])
    assert await store.open_counts() == {("triggered", "P3"): 1}
    await proc.act(result.incidents[0], Acknowledge("a"))
    counts = await store.open_counts()
    assert counts[("triggered", "P3")] == 0 and counts[("acknowledged", "P3")] == 1


async def test_redis_down_is_a_store_error(tmp_path: Path) -> None:
    from engine.errors import StoreError

    client = Redis.from_url("redis://127.0.0.1:1", socket_connect_timeout=0.5)
    store = RedisStore(client)
    with pytest.raises(StoreError):
        await store.load_by_key("k")
    await store.close()


async def test_timers_and_pointers_of_vanished_incidents_are_repaired(store: RedisStore) -> None:
    """An incident lost outside the engine (eviction, DEL) must not block its shard or its group."""
    clock = FakeClock()
    proc = processor(store, clock)
    alerts = parse_payload(payload("01-firing-single.json"))[1]
    first = (await proc.ingest(alerts)).incidents[0]
    shard = keys.shard_of_id(first)
    await store.client.delete(keys.incident(first))
    clock.advance(3600)
    sched = Scheduler(store, proc, clock, proc.metrics)
    await sched.cycle()
    assert await store.client.zscore(keys.timers(shard), first) is None
    again = await proc.ingest(alerts)  # the same group opens a fresh incident instead of a 503 loop
    assert again.opened == 1 and again.incidents[0] != first


async def test_a_stale_timer_is_moved_to_where_the_incident_wants_it(store: RedisStore) -> None:
    clock = FakeClock()
    proc = processor(store, clock)
    incident_id = (await proc.ingest(parse_payload(payload("01-firing-single.json"))[1])).incidents[0]
    inc = await store.load(incident_id)
    assert inc is not None and inc.timer_ms is not None
    timers = keys.timers(keys.shard_of_id(incident_id))
    await store.client.zadd(timers, {incident_id: clock.now_ms() - 1000})  # wrong, and overdue
    d = await proc.fire(incident_id, clock.now_ms() - 1000)
    assert not d.changed
    assert await store.client.zscore(timers, incident_id) == inc.timer_ms


async def test_a_late_timeline_entry_for_a_gone_incident_leaves_no_key_behind(store: RedisStore) -> None:
    entry = TimelineEntry(1_800_000_000_000, EntryKind.DELIVERED, "engine", "sent after the incident expired")
    await store.append_timeline("3-1733100000000-0", entry)
    assert await store.client.exists(keys.timeline("3-1733100000000-0")) == 0


async def test_a_list_with_alerts_on_a_cluster_reads_a_bounded_number_of_incidents_at_once(
    redis_cluster_url: str,
) -> None:
    """On Cluster each incident's read is its own script call on its own connection: a list of
    hundreds must not open hundreds of connections at once."""
    clock = FakeClock()
    store = RedisStore(await connect(redis_cluster_url))
    try:
        proc = processor(store, clock)
        for i in range(40):
            await proc.ingest(parse_payload(payload("01-firing-single.json", groupKey=f"g{i}"))[1])
            clock.advance(1)
        in_flight, most = 0, 0
        real = store.load_shown

        async def counted(incident_id: str, limit: int) -> object:
            nonlocal in_flight, most
            in_flight += 1
            most = max(most, in_flight)
            try:
                return await real(incident_id, limit)
            finally:
                in_flight -= 1

        store.load_shown = counted  # type: ignore[assignment,method-assign]
        listed = await store.list_incidents(100, alerts=5)
        assert len(listed) == 40
        assert [i.created_ms for i in listed] == sorted((i.created_ms for i in listed), reverse=True)
        assert most == redis_module.CLUSTER_CALLS
    finally:
        await store.close()
