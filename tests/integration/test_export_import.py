"""export / import: the whole state moves from one Redis to another and the engine goes on there:
timers fire at their original deadlines, undelivered pages are delivered, nothing is doubled."""

import asyncio
import gzip
import json
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from engine.alerts import AlertStatus
from engine.cli import main
from engine.delivery.loop import Delivery, DeliveryConfig
from engine.metrics import Metrics
from engine.notifiers import PagerDutyNotifier
from engine.processor import Processor
from engine.scheduler import Scheduler
from engine.store import keys
from engine.store.connect import connect
from engine.store.redis import RedisStore
from engine.storewatch import StoreWatch
from tests.clock import FakeClock
from tests.integration.test_api import POLICIES, ROUTING_KEY
from tests.integration.test_archive import files
from tests.integration.test_retention import alert
from tests.servers import RedisServer
from tests.sinks import PagerDutySink

pytestmark = pytest.mark.redis
LEVEL_2_MS = 15 * 60_000  # POLICIES' second level


@pytest.fixture(scope="module")
def server_b() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture
def redis_b(server_b: RedisServer) -> str:
    """Another redis-server, emptied for this test: the target of the imports."""
    server_b.start()
    server_b.flushall()
    return server_b.url


@pytest.fixture
async def store_a(redis_url: str) -> AsyncIterator[RedisStore]:
    store = RedisStore(await connect(redis_url), retention_ms=3_600_000)
    yield store
    await store.close()


@pytest.fixture
async def store_b(redis_b: str) -> AsyncIterator[RedisStore]:
    store = RedisStore(await connect(redis_b), retention_ms=3_600_000)
    yield store
    await store.close()


def processor(store: RedisStore, clock: FakeClock) -> Processor:
    return Processor(store, lambda: POLICIES, clock, Metrics(CollectorRegistry()))


async def cli(*argv: str) -> int:
    """The console script, as people run it (its own event loop, so off this one's thread)."""
    return await asyncio.to_thread(main, list(argv))


def records(path: Path) -> list[dict[str, Any]]:
    """The key records of an export (no header: its time and source differ from run to run)."""
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines[0]["format"] == "escalation-engine-state" and lines[-1]["end"] is True
    return lines[1:-1]


async def timers(store: RedisStore) -> dict[str, int]:
    due: dict[str, int] = {}
    for shard in range(keys.SHARDS):
        rows = cast(
            list[tuple[bytes, float]], await store.client.zrange(keys.timers(shard), 0, -1, withscores=True)
        )
        for member, score in rows:
            due[member.decode()] = int(score)
    return due


async def busy_state(store: RedisStore, clock: FakeClock) -> dict[int, str]:
    """Five open incidents climbing a ladder, one resolved (kept), their pages all undelivered,
    one of them in flight on a replica of the old deployment; a dead letter, a chat thread
    reference, the link secret and a heartbeat."""
    proc = processor(store, clock)
    ids = {i: (await proc.ingest([alert(i)])).incidents[0] for i in range(6)}
    clock.advance(60)
    await proc.ingest([alert(5, AlertStatus.RESOLVED)])
    await store.ensure_groups()
    streams = {keys.stream(keys.DISPATCH, keys.shard_of_id(ids[0]), urgent): ">" for urgent in keys.LANES}
    read = await store.client.xreadgroup(keys.DELIVERY_GROUP, "old-replica", streams, count=1)  # type: ignore[arg-type]
    assert sum(len(entries) for _, entries in cast(list[tuple[bytes, list[Any]]], read)) == 1
    await store.client.xadd(keys.dead_letters(2), {"m": "{}", "reason": "gone", "at_ms": "1", "channel": ""})
    await store.set_thread(ids[1], "slack", "#ops", "C1/1700000000.000100")
    await store.link_secret()
    await store.beat("watchdog", clock.now_ms(), clock.now_ms() + 3_600_000)
    return ids


async def test_after_a_move_timers_fire_at_their_deadlines_and_pages_are_delivered(
    store_a: RedisStore, store_b: RedisStore, redis_url: str, redis_b: str, tmp_path: Path
) -> None:
    clock = FakeClock()
    opened_ms = clock.now_ms()
    ids = await busy_state(store_a, clock)
    due_on_a = await timers(store_a)
    file = tmp_path / "state.jsonl"
    assert await cli("export", "--redis-url", redis_url, "-o", str(file)) == 0
    assert await cli("import", "--redis-url", redis_b, str(file)) == 0
    assert await timers(store_b) == due_on_a  # absolute due times, unchanged

    # the engine on B: nothing is due a millisecond early, everything at its deadline
    scheduler = Scheduler(store_b, processor(store_b, clock), clock, Metrics(CollectorRegistry()))
    clock.ms = opened_ms + LEVEL_2_MS - 1
    await scheduler.cycle()
    assert await timers(store_b) == due_on_a
    clock.ms = opened_ms + LEVEL_2_MS
    await scheduler.cycle()
    for i in range(5):
        inc = await store_b.load(ids[i])
        assert inc is not None and inc.step == 2
        paged = [e for e in await store_b.timeline(ids[i]) if e.kind == "paged"]
        assert [e.at_ms for e in paged] == [opened_ms, opened_ms + LEVEL_2_MS]

    # delivery on B: the pages decided on A (the one in flight there too), then level 2's
    async with PagerDutySink() as pd, aiohttp.ClientSession() as session:
        notifier = PagerDutyNotifier(session, pd.url, {"platform": ROUTING_KEY}, timeout_s=2)
        metrics = Metrics(CollectorRegistry())
        config = DeliveryConfig(consumer="new-replica")
        delivery = Delivery(store_b, {"pagerduty": notifier}, lambda: POLICIES, clock, metrics, config)
        await delivery.ensure_groups()
        await delivery.drain()
    sent = Counter((e["dedup_key"], e["event_action"]) for e in pd.events)
    for i in range(5):
        assert sent[(ids[i], "trigger")] == 2  # level 1 (decided on A) and level 2 (fired on B)
    # the resolved one: its resolve (its first page, decided before it resolved, is skipped as
    # stale, as it would have been on A)
    assert sent[(ids[5], "resolve")] == 1 and sent[(ids[5], "trigger")] == 0
    assert sum(sent.values()) == 11


async def test_export_import_export_gives_the_same_content(
    store_a: RedisStore, redis_url: str, redis_b: str, tmp_path: Path
) -> None:
    await busy_state(store_a, FakeClock())
    first, second = tmp_path / "a.jsonl.gz", tmp_path / "b.jsonl"
    assert await cli("export", "--redis-url", redis_url, "-o", str(first)) == 0
    assert await cli("import", "--redis-url", redis_b, str(first)) == 0
    assert await cli("export", "--redis-url", redis_b, "-o", str(second)) == 0
    first_plain = tmp_path / "a.jsonl"
    first_plain.write_bytes(gzip.decompress(first.read_bytes()))
    assert records(first_plain) == records(second)
    kinds = Counter(r["type"] for r in records(second))
    assert kinds["stream"] and kinds["zset"] and kinds["hash"] and kinds["list"] and kinds["string"]
    assert files(tmp_path) == ["a.jsonl", "a.jsonl.gz", "b.jsonl"]  # no .partial left


async def test_a_shard_is_read_whole_even_for_incidents_opened_after_the_key_scan(
    store_a: RedisStore, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The key list comes from SCAN; an incident committed after it is still exported whole,
    because the shard's index names it when the shard is read."""
    from engine.store import backup

    clock = FakeClock()
    proc = processor(store_a, clock)
    scanned = backup.engine_keys

    async def scan_then_open(client: Any, limit: int | None = None) -> list[str]:
        names = await scanned(client, limit)
        await proc.ingest([alert(99)])  # lands between the scan and the shard reads
        return names

    monkeypatch.setattr(backup, "engine_keys", scan_then_open)
    summary = backup.Summary()
    lines = [line async for line in backup.export_records(store_a.client, summary)]
    names = {line["key"] for line in lines[1:-1]}
    (inc,) = [n for n in names if ":inc:" in n]
    incident_id = inc.rpartition(":")[2]
    assert keys.timeline(incident_id) in names
    assert any(":key:" in n for n in names)  # its key pointer, found through its record


async def test_import_refuses_a_target_in_use_unless_forced(
    store_a: RedisStore, store_b: RedisStore, redis_url: str, redis_b: str, tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    await busy_state(store_a, FakeClock())
    file = tmp_path / "state.jsonl"
    assert await cli("export", "--redis-url", redis_url, "-o", str(file)) == 0
    await store_b.client.set("esc:{s1}:inc:1-other", "x")
    epoch_b = await store_b.epoch(create=True)
    capfd.readouterr()
    assert await cli("import", "--redis-url", redis_b, str(file)) == 2
    err = capfd.readouterr().err
    assert "already holds engine state" in err and "--force" in err and "Traceback" not in err
    assert await store_b.client.dbsize() == 2  # nothing written

    assert await cli("import", "--redis-url", redis_b, "--force", str(file)) == 0
    assert not await store_b.client.exists("esc:{s1}:inc:1-other")  # replaced, not merged
    assert await store_b.epoch(create=False) == epoch_b  # engines watching B see no change


async def test_the_epoch_is_fresh_so_a_watch_sees_neither_a_false_nor_a_hidden_loss(
    store_a: RedisStore, store_b: RedisStore, redis_url: str, redis_b: str, tmp_path: Path
) -> None:
    await busy_state(store_a, FakeClock())
    epoch_a = await store_a.epoch(create=True)
    file = tmp_path / "state.jsonl"
    assert await cli("export", "--redis-url", redis_url, "-o", str(file)) == 0
    assert json.loads(file.read_text().splitlines()[0])["source_epoch"] == epoch_a

    # an engine watching B before B lost its data: the restore must not hide that loss
    before = StoreWatch(store_b, Metrics(CollectorRegistry()))
    await before.check()
    await store_b.client.flushall()
    assert await cli("import", "--redis-url", redis_b, str(file)) == 0
    epoch_b = await store_b.epoch(create=False)
    assert epoch_b not in (None, epoch_a)
    await before.check()
    assert before.lost

    # an engine started on the restored state: no alarm
    after = StoreWatch(store_b, Metrics(CollectorRegistry()))
    await after.check()
    await after.check()
    assert not after.lost


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "not an escalation-engine export"),
        ('{"format": "escalation-engine-state", "version": 9, "shards": 16}\n', "format version 9"),
        ('{"format": "escalation-engine-state", "version": 1, "shards": 16}\n', "truncated"),
        ('{"format": "escalation-engine-state", "version": 1, "shards": 16}\n{"key": \n', "not JSON"),
        (
            '{"format": "escalation-engine-state", "version": 1, "shards": 16}\n'
            '{"key": "other:x", "type": "string", "value": "v"}\n{"end": true, "records": 1}\n',
            "not an engine key",
        ),
    ],
)
async def test_a_bad_file_is_refused_whole_with_a_message(
    redis_b: str,
    store_b: RedisStore,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    content: str,
    message: str,
) -> None:
    file = tmp_path / "bad.jsonl"
    file.write_text(content)
    assert await cli("import", "--redis-url", redis_b, str(file)) == 2
    err = capfd.readouterr().err
    assert message in err and "Traceback" not in err
    assert await store_b.client.dbsize() == 0


async def test_errors_are_messages_and_exit_2(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    assert await cli("export", "--redis-url", "redis://127.0.0.1:1") == 2
    assert await cli("import", "--redis-url", "redis://127.0.0.1:1", str(tmp_path / "missing.jsonl")) == 2
    assert await cli("export", "--data-dir", str(tmp_path / "nothing-here")) == 2
    err = capfd.readouterr().err
    assert "Traceback" not in err and err.count("escalation-engine ") == 3
    assert "no data directory" in err


async def test_a_stopped_engines_data_dir_moves_to_a_cluster_and_back(
    redis_cluster_url: str, tmp_path: Path, redis_url: str, store_a: RedisStore
) -> None:
    await busy_state(store_a, FakeClock())
    exported, data_dir = tmp_path / "a.jsonl", tmp_path / "data"
    assert await cli("export", "--redis-url", redis_url, "-o", str(exported)) == 0
    assert await cli("import", "--data-dir", str(data_dir), str(exported)) == 0
    from_dir, from_cluster = tmp_path / "dir.jsonl", tmp_path / "cluster.jsonl"
    assert await cli("export", "--data-dir", str(data_dir), "-o", str(from_dir)) == 0
    assert await cli("import", "--redis-url", redis_cluster_url, str(from_dir)) == 0
    assert await cli("export", "--redis-url", redis_cluster_url, "-o", str(from_cluster)) == 0
    assert records(exported) == records(from_dir) == records(from_cluster)


async def test_a_truncated_gzip_export_is_a_message_not_a_traceback(
    redis_b: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    whole = gzip.compress(b'{"format": "escalation-engine-export"}\n' * 1000)
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(whole[: len(whole) // 2])
    assert await cli("import", "--redis-url", redis_b, str(cut)) == 2
    err = capfd.readouterr().err
    assert "Traceback" not in err and err.startswith("escalation-engine import: ")
