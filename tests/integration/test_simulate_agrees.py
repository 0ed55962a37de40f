"""simulate agrees with the engine: the same alert through the real processor, scheduler and
redis-server (on a fake clock) and through `simulate` gives the same pages at the same offsets."""

import json
from pathlib import Path
from typing import cast

import pytest
from prometheus_client import CollectorRegistry

from engine.ingest.alertmanager import parse_payload
from engine.metrics import Metrics
from engine.policy.loader import load_policies
from engine.processor import Processor
from engine.scheduler import Scheduler
from engine.simulate import simulate
from engine.store import keys
from engine.store.connect import connect
from engine.store.redis import RedisStore
from tests.clock import FakeClock

pytestmark = pytest.mark.redis
ROOT = Path(__file__).parent.parent.parent
HORIZON_MS = 3 * 3_600_000


@pytest.mark.parametrize(
    ("fixture", "start"),
    [
        ("01-firing-single.json", "2027-03-18T03:00:00+01:00"),  # P0: the whole ladder and its repeats
        ("02-firing-group.json", "2027-03-19T19:00:00+01:00"),  # P0 and P2s on a Friday evening
    ],
)
async def test_the_engine_and_simulate_page_the_same_targets_at_the_same_offsets(
    redis_url: str, fixture: str, start: str
) -> None:
    from datetime import datetime

    policies = load_policies(ROOT / "policies")
    start_ms = int(datetime.fromisoformat(start).timestamp() * 1000)
    _, alerts = parse_payload(json.loads((ROOT / "tests" / "fixtures" / fixture).read_text()))

    expected = sorted(
        {(p.offset_s, p.level, p.target) for p in simulate(policies, alerts, start_ms, horizon_ms=HORIZON_MS)
         if p.action == "trigger"}
    )  # fmt: skip

    store = RedisStore(await connect(redis_url))
    clock = FakeClock(start_ms)
    metrics = Metrics(CollectorRegistry())
    try:
        proc = Processor(store, lambda: policies, clock, metrics)
        scheduler = Scheduler(store, proc, clock, metrics)
        await proc.ingest(alerts)
        for _ in range(200):  # jump from one timer to the next, as the scheduler would wake
            next_timer, _retry = await store.next_due_ms()
            if next_timer is None or next_timer > start_ms + HORIZON_MS:
                break
            clock.ms = max(clock.ms, next_timer)
            await scheduler.cycle()
        got = set()
        for shard, urgent in ((s, u) for s in range(keys.SHARDS) for u in keys.LANES):
            stream = keys.stream(keys.DISPATCH, shard, urgent)
            entries = cast(list[tuple[bytes, dict[bytes, bytes]]], await store.client.xrange(stream))
            for _id, fields in entries:
                m = json.loads(fields[b"m"])
                if m["action"] == "trigger" and m["at_ms"] < start_ms + HORIZON_MS:
                    got.add(((m["at_ms"] - start_ms) // 1000, m["level"] + 1, m["target"]))
    finally:
        await store.close()
    assert sorted(got) == expected and expected
