"""Due timers are read with their incidents and fired as a batch (one script per shard, the
commits side by side); whatever a batch cannot take goes the one-by-one way. Real redis-server."""

import json
from collections import Counter
from pathlib import Path
from typing import cast

import pytest
from prometheus_client import CollectorRegistry

from engine.events import Acknowledge, Decision
from engine.ingest.alertmanager import parse_payload
from engine.metrics import Metrics
from engine.processor import Processor
from engine.scheduler import RETRY_BROKEN_MS, Scheduler
from engine.store import keys
from engine.store.base import DueTimer
from engine.store.connect import connect
from engine.store.redis import RedisStore
from tests.clock import FakeClock
from tests.unit.escalation_helpers import POLICIES

FIXTURES = Path(__file__).parent.parent / "fixtures"
pytestmark = pytest.mark.redis
LEVEL_2_DUE_S = 30 * 60  # the std policy's level 2


async def open_incidents(proc: Processor, n: int) -> list[str]:
    ids = []
    for i in range(n):
        raw = json.loads((FIXTURES / "01-firing-single.json").read_text())
        raw["groupKey"] = f"g{i}"
        raw["alerts"] = [{**raw["alerts"][0], "labels": {"alertname": "Down", "instance": f"host-{i}"},
                          "fingerprint": f"{i:016x}"}]  # fmt: skip
        ids += (await proc.ingest(parse_payload(raw)[1])).incidents
    return ids


async def level_2_pages(store: RedisStore) -> Counter[str]:
    pages: Counter[str] = Counter()
    for shard, urgent in ((s, u) for s in range(keys.SHARDS) for u in keys.LANES):
        stream = keys.stream(keys.DISPATCH, shard, urgent)
        for _, fields in cast(list[tuple[bytes, dict[bytes, bytes]]], await store.client.xrange(stream)):
            m = json.loads(fields[b"m"])
            if m["target"] == "user:b" and m["action"] == "trigger":
                pages[m["incident_id"]] += 1
    return pages


async def timers_agree(store: RedisStore, ids: list[str]) -> None:
    for incident_id in ids:
        inc = await store.load(incident_id)
        assert inc is not None
        score = await store.client.zscore(keys.timers(keys.shard_of_id(incident_id)), incident_id)
        assert score == inc.timer_ms, (incident_id, score, inc.timer_ms)


async def test_a_batch_fires_the_sound_timers_and_leaves_the_odd_ones_to_the_one_by_one_path(
    redis_url: str,
) -> None:
    store = RedisStore(await connect(redis_url))
    clock = FakeClock()
    proc = Processor(store, lambda: POLICIES, clock, Metrics(CollectorRegistry()))
    try:
        ids = await open_incidents(proc, 40)
        stale, gone, broken, *sound = ids
        clock.advance(LEVEL_2_DUE_S)
        now = clock.now_ms()
        inc = await store.load(stale)
        assert inc is not None and inc.timer_ms is not None
        await store.client.zadd(keys.timers(keys.shard_of_id(stale)), {stale: now - 5})  # overdue, wrong
        await store.client.hset(keys.incident(stale), "v", 99)  # and its incident moved on meanwhile
        await store.client.delete(keys.incident(gone))
        await store.client.hset(keys.incident(broken), "d", b"{not json")

        one_by_one: list[str] = []
        fire = proc.fire

        async def spied(incident_id: str, due_ms: int) -> Decision:
            one_by_one.append(incident_id)
            return await fire(incident_id, due_ms)

        proc.fire = spied  # type: ignore[method-assign]
        assert await Scheduler(store, proc, clock, proc.metrics).cycle() >= 0

        assert sorted(one_by_one) == sorted([stale, gone, broken])  # the sound ones went as a batch
        assert proc.metrics.commit_conflicts._value.get() == 0  # and their commits were taken

        pages = await level_2_pages(store)
        assert set(pages) == set(sound) and set(pages.values()) == {1}  # each sound one once, no other
        await timers_agree(store, sound)
        stale_score = await store.client.zscore(keys.timers(keys.shard_of_id(stale)), stale)
        assert stale_score is not None and stale_score != now - 5  # fire() moved it (decided on v99)
        assert await store.client.zscore(keys.timers(keys.shard_of_id(gone)), gone) is None
        broken_at = await store.client.zscore(keys.timers(keys.shard_of_id(broken)), broken)
        assert broken_at == now + RETRY_BROKEN_MS  # tried again later, the shard not held up
    finally:
        await store.close()


class RacingStore(RedisStore):
    """Acknowledges every incident a due-timer read returned, between that read and the commit."""

    racer: Processor | None = None

    async def due_incidents(self, now_ms: int, limit: int, shard: int) -> list[DueTimer]:
        due = await super().due_incidents(now_ms, limit, shard)
        if self.racer is not None:
            for t in due:
                await self.racer.act(t.member, Acknowledge("alice"))
        return due


async def test_a_commit_lost_to_a_concurrent_writer_is_decided_again_on_what_that_writer_left(
    redis_url: str,
) -> None:
    store = RacingStore(await connect(redis_url))
    clock = FakeClock()
    metrics = Metrics(CollectorRegistry())
    proc = Processor(store, lambda: POLICIES, clock, metrics)
    try:
        ids = await open_incidents(proc, 12)
        clock.advance(LEVEL_2_DUE_S)
        store.racer = Processor(store, lambda: POLICIES, clock, Metrics(CollectorRegistry()))
        await Scheduler(store, proc, clock, metrics).cycle()

        assert metrics.commit_conflicts._value.get() == 12  # every batched commit lost its race
        pages = await level_2_pages(store)  # (std pages level 2 when acknowledged but unresolved)
        assert set(pages) == set(ids) and set(pages.values()) == {1}  # once each, however raced
        for incident_id in ids:
            inc = await store.load(incident_id)  # the decision taken again kept the racer's ack
            assert inc is not None and inc.acked_by == "alice" and inc.step == 2
        await timers_agree(store, ids)
    finally:
        await store.close()


class SlowRead(RedisStore):
    """A store whose read of the next due time takes `takes_ms` of the clock (Redis round trips)."""

    clock: FakeClock | None = None
    takes_ms = 0

    async def next_due_ms(self) -> tuple[int | None, int | None]:
        found = await super().next_due_ms()
        if self.clock is not None:
            self.clock.ms += self.takes_ms
        return found


async def test_a_timer_that_falls_due_while_a_cycle_runs_is_fired_at_once_not_a_second_later(
    redis_url: str,
) -> None:
    """The scheduler wakes at a timer's due time, a hair early by the wall clock: the cycle finds
    nothing due yet, and by the time it has read the next due time, that one is due. It used to
    sleep its full second then (bench.storm: 50 escalations all 1.0 s late in 2 runs of 6)."""
    store = SlowRead(await connect(redis_url))
    try:
        clock = FakeClock()
        proc = Processor(store, lambda: POLICIES, clock, Metrics(CollectorRegistry()))
        [incident_id] = await open_incidents(proc, 1)
        due = (await store.next_due_ms())[0]
        assert due is not None
        clock.ms = due - 1  # woken 1 ms before it
        store.clock, store.takes_ms = clock, 3
        sched = Scheduler(store, proc, clock, proc.metrics)
        assert await sched.cycle() == 0.0  # go again now
        await sched.cycle()
        assert (await level_2_pages(store))[incident_id] == 1
    finally:
        await store.close()
