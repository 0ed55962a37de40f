"""Retention: everything of a resolved incident leaves Redis (expiry, then the sweeper for what
expiry does not reach: index entries, orphans, old dead letters, consumers of gone replicas)."""

import asyncio
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
from prometheus_client import CollectorRegistry

from engine.alerts import Alert, AlertStatus
from engine.archive import Retention
from engine.metrics import Metrics
from engine.processor import Processor
from engine.store import keys, sweep
from engine.store.connect import connect
from engine.store.redis import RedisStore
from engine.store.sweep import Sweeper
from engine.timeline import EntryKind, TimelineEntry
from tests.clock import FakeClock
from tests.integration.test_api import POLICIES

pytestmark = pytest.mark.redis
STARTS_MS = 1_799_999_000_000


def alert(i: int, status: AlertStatus = AlertStatus.FIRING) -> Alert:
    labels = {"alertname": "Disk", "instance": f"host-{i}", "severity": "critical"}
    return Alert(f"{i:016x}", status, labels, STARTS_MS, group_key=f"group-{i}")


async def open_and_resolve(proc: Processor, opened: range, resolved: range) -> dict[int, str]:
    """Open one incident per number in `opened`, then resolve those in `resolved`: {n: id}."""
    ids = {}
    for i in opened:
        ids[i] = (await proc.ingest([alert(i)])).incidents[0]
    for i in resolved:
        await proc.ingest([alert(i, AlertStatus.RESOLVED)])
    return ids


def processor(store: RedisStore, clock: FakeClock) -> Processor:
    return Processor(store, lambda: POLICIES, clock, Metrics(CollectorRegistry()))


async def wait_gone(store: RedisStore, ids: list[str]) -> None:
    """Until Redis has expired these incidents' hashes (it does so on its own clock)."""
    for _ in range(1000):
        if not await store.client.exists(*(keys.incident(i) for i in ids)):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("incidents did not expire")


async def index_members(store: RedisStore) -> set[str]:
    found: set[str] = set()
    for shard in range(keys.SHARDS):
        members = cast(list[bytes], await store.client.zrange(keys.index(shard), 0, -1))
        found |= {m.decode() for m in members}
    return found


async def per_incident_keys(store: RedisStore) -> list[str]:
    names = [k.decode() async for k in store.client.scan_iter(match="esc:{s*}:*")]
    return sorted(n for n in names if any(f":{kind}:" in n for kind in ("inc", "tl", "th", "key")))


@pytest.fixture
async def short_store(redis_url: str) -> AsyncIterator[RedisStore]:
    """Resolved incidents expire 1 ms after they resolve: retention without waiting 30 days."""
    store = RedisStore(await connect(redis_url), retention_ms=1)
    yield store
    await store.close()


async def test_index_entries_of_expired_incidents_are_dropped(
    short_store: RedisStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sweep, "BATCH", 3)  # several batches per shard: the walk must skip none
    clock = FakeClock()
    ids = await open_and_resolve(processor(short_store, clock), range(40), range(30))
    resolved = [ids[i] for i in range(30)]
    await wait_gone(short_store, resolved)
    # expiry alone leaves the index entries behind (the leak this sweeper exists for)
    assert await index_members(short_store) == set(ids.values())
    stats = await Retention(Sweeper(short_store.client, 1), clock).sweep()
    assert stats.index_dropped == 30
    assert await index_members(short_store) == {ids[i] for i in range(30, 40)}
    listed = await short_store.list_incidents(100)
    assert sorted(i.id for i in listed) == sorted(ids[i] for i in range(30, 40))
    assert sum((await short_store.open_counts()).values()) == 10


async def test_nothing_of_a_resolved_incident_is_left(short_store: RedisStore) -> None:
    clock = FakeClock()
    ids = await open_and_resolve(processor(short_store, clock), range(5), range(0))
    for incident_id in ids.values():  # a chat message to edit later: its reference is kept
        await short_store.set_thread(incident_id, "slack", "#ops", "C1/1700000000.000100")
    await open_and_resolve(processor(short_store, clock), range(0), range(5))
    await wait_gone(short_store, list(ids.values()))
    await Retention(Sweeper(short_store.client, 1), clock).sweep()
    for _ in range(1000):  # thread hashes expire on Redis's clock too
        if not await per_incident_keys(short_store):
            break
        await asyncio.sleep(0.01)
    assert await per_incident_keys(short_store) == []
    assert await index_members(short_store) == set()
    for shard in range(keys.SHARDS):
        assert await short_store.client.zcard(keys.timers(shard)) == 0


async def test_keys_written_for_a_gone_incident_are_dropped_by_housekeeping(short_store: RedisStore) -> None:
    clock = FakeClock()
    ids = await open_and_resolve(processor(short_store, clock), range(3), range(2))
    gone = [ids[0], ids[1]]
    await wait_gone(short_store, gone)
    # a timeline re-created after its incident expired, with no TTL (append_timeline no longer
    # does that, but an older engine version or a hand-made write could have)
    note = TimelineEntry(clock.now_ms(), EntryKind.DELIVERED, "delivery", "late outcome")
    await short_store.client.rpush(keys.timeline(gone[0]), note.to_json())
    # a key pointer that names a gone incident (no TTL: lost by something outside the engine)
    pointer = keys.pointer("some|key")
    await short_store.client.set(pointer, gone[1])
    live = keys.timeline(ids[2])
    assert await short_store.client.exists(keys.timeline(gone[0]), pointer, live) == 3

    stats = await Retention(Sweeper(short_store.client, 1), clock).sweep()  # the first pass housekeeps
    assert stats.orphans == 2
    assert await short_store.client.exists(keys.timeline(gone[0]), pointer) == 0
    assert await short_store.client.exists(live, keys.incident(ids[2])) == 2  # the open one is kept


async def test_a_pointer_moved_to_a_new_incident_is_not_dropped(short_store: RedisStore) -> None:
    sweeper = Sweeper(short_store.client, 1)
    pointer = keys.pointer("some|key")
    await short_store.client.set(pointer, "0-gone")
    # between the check and the delete, the key opened a new incident: the delete compares first
    await short_store.client.set(pointer, "0-new")
    assert await sweeper._drop_dangling([pointer]) == 1  # "0-new" is gone too: dropped
    await short_store.client.set(pointer, "0-new")
    await short_store.client.hset(keys.incident("0-new"), "v", 1)
    assert await sweeper._drop_dangling([pointer]) == 0
    assert await short_store.client.get(pointer) == b"0-new"


async def test_dead_letters_older_than_the_retention_are_trimmed(redis_url: str) -> None:
    store = RedisStore(await connect(redis_url), retention_ms=3_600_000)
    try:
        seconds, _ = await store.client.time()
        now_ms = seconds * 1000
        dead = keys.dead_letters(3)
        await store.client.xadd(dead, {"m": "old"}, id=f"{now_ms - 7_200_000}-0")
        await store.client.xadd(dead, {"m": "recent"}, id=f"{now_ms - 60_000}-0")
        assert await Sweeper(store.client, store.retention_ms).trim_dead_letters() == 1
        entries = cast(list[tuple[bytes, dict[bytes, bytes]]], await store.client.xrange(dead))
        assert [f[b"m"] for _, f in entries] == [b"recent"]
    finally:
        await store.close()


async def test_consumers_of_gone_replicas_are_forgotten_unless_they_hold_entries(
    short_store: RedisStore,
) -> None:
    stream = keys.stream(keys.DISPATCH, 0)
    await short_store.ensure_groups()
    for _ in range(2):
        await short_store.client.xadd(stream, {"m": "x"})
    await short_store.client.xreadgroup(keys.DELIVERY_GROUP, "busy", {stream: ">"}, count=1)
    done = cast(Any, await short_store.client.xreadgroup(keys.DELIVERY_GROUP, "gone", {stream: ">"}, count=1))
    await short_store.client.xack(stream, keys.DELIVERY_GROUP, done[0][1][0][0])
    assert await Sweeper(short_store.client, 1).drop_idle_consumers(idle_ms=0) == 1
    left = await short_store.client.xinfo_consumers(stream, keys.DELIVERY_GROUP)
    assert [c["name"] for c in left] == [b"busy"]  # its pending entry is not dropped with it


async def test_with_retention_zero_nothing_is_swept(redis_url: str) -> None:
    store = RedisStore(await connect(redis_url), retention_ms=0)  # 0 keeps everything
    try:
        clock = FakeClock()
        ids = await open_and_resolve(processor(store, clock), range(3), range(3))
        stats = await Retention(Sweeper(store.client, 0), clock, archive_dir=None).sweep()
        assert (stats.index_dropped, stats.dead_letters) == (0, 0)
        assert await index_members(store) == set(ids.values())
    finally:
        await store.close()


async def test_the_task_runs_until_stopped_and_is_idle_without_redis() -> None:
    class NotRedis:
        pass

    idle = Retention.for_store(NotRedis(), FakeClock(), None, "x")  # type: ignore[arg-type]
    await idle.run()  # returns at once: nothing to sweep
    assert idle.sweeper is None


async def test_the_background_task_sweeps_until_stopped(short_store: RedisStore) -> None:
    clock = FakeClock()
    ids = await open_and_resolve(processor(short_store, clock), range(2), range(2))
    await wait_gone(short_store, list(ids.values()))
    task = Retention.for_store(short_store, clock, None, "replica-1", interval_s=0.01)
    running = asyncio.create_task(task.run())
    for _ in range(1000):
        if task.passes >= 2:
            break
        await asyncio.sleep(0.01)
    task.stop()
    await running
    assert await index_members(short_store) == set()
