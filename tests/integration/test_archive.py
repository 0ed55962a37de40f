"""The archive: every resolved incident written once as a JSON line before it expires, across
racing archivers, after a crashed one, and after a failed write."""

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from engine.archive import Retention, append_lines
from engine.store import keys
from engine.store.connect import connect
from engine.store.redis import RedisStore
from engine.store.sweep import Sweeper
from tests.clock import FakeClock
from tests.integration.test_retention import index_members, open_and_resolve, processor

pytestmark = pytest.mark.redis
HOUR_MS = 3_600_000
LEASE_MS = 300_000


def lines(directory: Path) -> list[dict[str, Any]]:
    return [
        json.loads(line) for f in sorted(directory.glob("*.jsonl")) for line in f.read_text().splitlines()
    ]


def files(directory: Path) -> list[str]:
    return sorted(f.name for f in directory.iterdir())


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[RedisStore]:
    s = RedisStore(await connect(redis_url), retention_ms=HOUR_MS)
    yield s
    await s.close()


def archiver(store: RedisStore, clock: FakeClock, directory: Path, owner: str, margin_ms: int) -> Retention:
    sweeper = Sweeper(store.client, store.retention_ms)
    return Retention(
        sweeper, clock, archive_dir=directory, owner=owner, margin_ms=margin_ms, lease_ms=LEASE_MS
    )


async def test_resolved_incidents_are_archived_near_their_expiry_then_removed(
    store: RedisStore, tmp_path: Path
) -> None:
    clock = FakeClock()
    ids = await open_and_resolve(processor(store, clock), range(8), range(5))
    # an hour of retention left, the margin a quarter of it: not due yet
    assert (await archiver(store, clock, tmp_path, "a", HOUR_MS // 4).sweep()).archived == 0
    assert lines(tmp_path) == []

    # due: resolved and expiring within the margin (here: all of them)
    stats = await archiver(store, clock, tmp_path, "a", HOUR_MS).sweep()
    assert stats.archived == 5
    written = lines(tmp_path)
    assert sorted(line["id"] for line in written) == sorted(ids[i] for i in range(5))
    first = written[0]
    assert first["format"] == 1
    assert first["incident"]["status"] == "resolved" and first["incident"]["id"] == first["id"]
    assert first["incident"]["alerts"]  # the alerts, each with its own state
    kinds = [e["kind"] for e in first["timeline"]]
    assert kinds[0] == "opened" and "resolved" in kinds
    assert files(tmp_path) == ["incidents-2027-01-15.jsonl"]  # the UTC day they resolved (FakeClock's)

    # archived means gone from Redis: hash, timeline, threads, index entry, key pointer
    for i in range(5):
        assert not await store.client.exists(keys.incident(ids[i]), keys.timeline(ids[i]))
    assert await index_members(store) == {ids[i] for i in range(5, 8)}
    incident_key = first["incident"]["key"]
    assert await store.load_by_key(incident_key) is None
    assert not await store.client.exists(keys.pointer(incident_key))
    # the open ones stay, and nothing is written twice
    assert (await archiver(store, clock, tmp_path, "a", HOUR_MS).sweep()).archived == 0
    assert len(lines(tmp_path)) == 5


async def test_two_archivers_racing_write_each_incident_once(redis_url: str, tmp_path: Path) -> None:
    clock = FakeClock()
    stores = [RedisStore(await connect(redis_url), retention_ms=HOUR_MS) for _ in range(2)]
    try:
        ids = await open_and_resolve(processor(stores[0], clock), range(120), range(120))
        a = archiver(stores[0], clock, tmp_path, "replica-a", HOUR_MS)
        b = archiver(stores[1], clock, tmp_path, "replica-b", HOUR_MS)
        results = await asyncio.gather(a.sweep(), b.sweep(), a.sweep(), b.sweep())
        assert sum(r.archived for r in results) == 120
        assert sum(r.duplicates for r in results) == 0
        counts = Counter(line["id"] for line in lines(tmp_path))
        assert set(counts) == set(ids.values())
        assert set(counts.values()) == {1}
    finally:
        for s in stores:
            await s.close()


async def test_a_crashed_archivers_claim_is_taken_over_after_its_lease(
    store: RedisStore, tmp_path: Path
) -> None:
    clock = FakeClock()
    ids = await open_and_resolve(processor(store, clock), range(3), range(3))
    crashed = Sweeper(store.client, store.retention_ms)
    # one archiver claimed all three and died; it had written one of them before it did
    claimed = await crashed.claim(list(ids.values()), "dead:0", clock.now_ms(), LEASE_MS)
    assert len(claimed) == 3
    append_lines(tmp_path / "incidents-2027-01-15.jsonl", [json.dumps({"id": ids[0]}).encode() + b"\n"])

    other = archiver(store, clock, tmp_path, "live", HOUR_MS)
    assert (await other.sweep()).archived == 0  # the claims still hold
    clock.advance(LEASE_MS / 1000 + 1)
    assert (await other.sweep()).archived == 3
    counts = Counter(line["id"] for line in lines(tmp_path))
    # at least once: the one written before the crash is there twice, told apart by its id
    assert counts == {ids[0]: 2, ids[1]: 1, ids[2]: 1}
    assert await crashed.finish(claimed[:1]) == [False]  # the crashed one's late finish changes nothing


async def test_a_failed_write_removes_nothing_and_is_retried(store: RedisStore, tmp_path: Path) -> None:
    clock = FakeClock()
    ids = await open_and_resolve(processor(store, clock), range(2), range(2))
    blocked = tmp_path / "archive"
    blocked.write_text("a file where the directory should be")
    a = archiver(store, clock, blocked, "a", HOUR_MS)
    assert (await a.sweep()).archived == 0
    assert await store.client.exists(*(keys.incident(i) for i in ids.values())) == 2
    blocked.unlink()
    blocked.mkdir()
    clock.advance(LEASE_MS / 1000 + 1)  # its own claims ran out
    assert (await a.sweep()).archived == 2
    assert len(lines(blocked)) == 2


async def test_a_claim_keeps_the_incident_alive_through_the_lease(store: RedisStore) -> None:
    short = RedisStore(store.client, retention_ms=50)  # expiring any moment now
    clock = FakeClock()
    ids = await open_and_resolve(processor(short, clock), range(1), range(1))
    await Sweeper(store.client, 50).claim([ids[0]], "a:1", clock.now_ms(), LEASE_MS)
    ttl = await store.client.pttl(keys.incident(ids[0]))
    assert ttl > LEASE_MS  # two leases: a slow write still finds it
    assert await store.client.pttl(keys.timeline(ids[0])) > LEASE_MS


def test_a_torn_line_stays_one_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "incidents-2027-01-15.jsonl"
    path.write_bytes(b'{"id": "1-aa"}\n{"id": "1-b')  # a crash in the middle of a write
    append_lines(path, [b'{"id": "2-cc"}\n'])
    assert path.read_bytes().splitlines() == [b'{"id": "1-aa"}', b'{"id": "1-b', b'{"id": "2-cc"}']


async def test_one_pass_archives_every_due_incident_across_batches(
    store: RedisStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from engine.store import sweep

    monkeypatch.setattr(sweep, "BATCH", 2)  # many batches per shard: the walk must skip none
    clock = FakeClock()
    ids = await open_and_resolve(processor(store, clock), range(60), range(50))
    stats = await archiver(store, clock, tmp_path, "a", HOUR_MS).sweep()
    assert stats.archived == 50
    assert await index_members(store) == {ids[i] for i in range(50, 60)}


async def test_retention_and_the_archive_run_on_a_redis_cluster(
    redis_cluster_url: str, tmp_path: Path
) -> None:
    store = RedisStore(await connect(redis_cluster_url), retention_ms=HOUR_MS)
    try:
        clock = FakeClock()
        ids = await open_and_resolve(processor(store, clock), range(20), range(15))
        orphan = keys.timeline("5-0123456789ab")  # a timeline whose incident never existed
        await store.client.rpush(orphan, "{}")
        stats = await archiver(store, clock, tmp_path, "a", HOUR_MS).sweep()
        assert (stats.archived, stats.orphans) == (15, 1)
        assert Counter(line["id"] for line in lines(tmp_path)) == {ids[i]: 1 for i in range(15)}
        assert await index_members(store) == {ids[i] for i in range(15, 20)}
    finally:
        await store.close()
