"""The dead man's switch against a real redis-server: a heartbeat rule's alert opens nothing;
its silence opens "alerting pipeline silent" once across replicas; its return resolves it."""

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from engine.alerts import Alert, AlertStatus
from engine.incident import Status
from engine.metrics import Metrics
from engine.policy.heartbeats import SILENCE_ALERTNAME
from engine.policy.models import PolicySet
from engine.processor import Processor
from engine.scheduler import Scheduler
from engine.store import keys
from engine.store.connect import connect
from engine.store.redis import RedisStore
from tests.clock import FakeClock

pytestmark = pytest.mark.redis
MIN = 60
POLICIES = PolicySet.model_validate(
    {
        "severities": {"P1": {"description": "major"}, "P3": {}},
        "rules": [
            {
                "name": "watchdog",
                "matchers": ['alertname="Watchdog"'],
                "heartbeat": "5m",
                "severity": "P1",
                "policy": "page",
            }
        ],
        "default": {"severity": "P3", "policy": "page"},
        "escalation_policies": {"page": {"levels": [{"after": "0s", "notify": ["user:sre"]}]}},
        "users": {"sre": {"email": "sre@example.com"}},
    }
)


def watchdog(status: AlertStatus = AlertStatus.FIRING) -> Alert:
    labels = {"alertname": "Watchdog", "severity": "none"}
    return Alert("00000000000000ff", status, labels, starts_at_ms=1_700_000_000_000, group_key="{}:{}")


@pytest.fixture
async def stores(redis_url: str) -> AsyncIterator[list[RedisStore]]:
    made = [RedisStore(await connect(redis_url)) for _ in range(2)]
    yield made
    for s in made:
        await s.close()


def replica(store: RedisStore, clock: FakeClock) -> tuple[Processor, Scheduler]:
    metrics = Metrics(CollectorRegistry())
    proc = Processor(store, lambda: POLICIES, clock, metrics)
    return proc, Scheduler(store, proc, clock, metrics)


async def silence_incidents(store: RedisStore) -> list[Any]:
    return [
        i
        for i in await store.list_incidents(100)
        if any(a.labels.get("alertname") == SILENCE_ALERTNAME for a in i.alerts.values())
    ]


async def test_heartbeats_open_nothing_and_push_the_deadline(stores: list[RedisStore]) -> None:
    clock = FakeClock()
    proc, sched = replica(stores[0], clock)
    result = await proc.ingest([watchdog()])
    assert result.incidents == [] and result.opened == 0
    assert await stores[0].heartbeats() == {"watchdog": clock.now_ms()}
    for _ in range(3):  # Alertmanager repeats it every minute
        clock.advance(MIN)
        await proc.ingest([watchdog()])
        await sched.cycle()
    assert await stores[0].list_incidents(10) == []
    timer = keys.heartbeat_timer("watchdog")
    assert await stores[0].due_timers(clock.now_ms() + 5 * MIN * 1000, 10) == [
        (timer, clock.now_ms() + 300_000)
    ]


async def test_silence_opens_one_incident_across_replicas_and_the_return_resolves_it(
    stores: list[RedisStore],
) -> None:
    clock = FakeClock()
    replicas = [replica(s, clock) for s in stores]
    await replicas[0][0].ingest([watchdog()])
    clock.advance(5 * MIN - 1)
    await asyncio.gather(*(sched.cycle() for _, sched in replicas))
    assert await silence_incidents(stores[0]) == []  # not before the deadline

    clock.advance(2)
    await asyncio.gather(*(sched.cycle() for _, sched in replicas))
    await asyncio.gather(*(sched.cycle() for _, sched in replicas))
    [inc] = await silence_incidents(stores[0])
    assert (inc.status, inc.severity, inc.policy, inc.paged) == (Status.TRIGGERED, "P1", "page", ["user:sre"])
    assert inc.title.startswith(f"{SILENCE_ALERTNAME}: no heartbeat from rule watchdog for 5m")
    assert await stores[0].due_timers(clock.now_ms() + 3_600_000, 10) == []  # the deadline is spent

    clock.advance(3 * MIN)  # still silent: nothing more opens
    await asyncio.gather(*(sched.cycle() for _, sched in replicas))
    assert len(await silence_incidents(stores[0])) == 1

    await replicas[1][0].ingest([watchdog()])  # the pipeline is back
    [back] = await silence_incidents(stores[0])
    assert back.status is Status.RESOLVED and back.resolved_by == "alertmanager"
    kinds = [e.kind.value for e in await stores[0].timeline(back.id)]
    assert kinds[0] == "opened" and kinds[-1] == "resolved"


async def test_a_resolved_watchdog_is_no_heartbeat(stores: list[RedisStore]) -> None:
    clock = FakeClock()
    proc, sched = replica(stores[0], clock)
    await proc.ingest([watchdog()])
    clock.advance(4 * MIN)
    await proc.ingest([watchdog(AlertStatus.RESOLVED)])  # Prometheus stopped sending it
    clock.advance(MIN + 1)
    await sched.cycle()
    assert len(await silence_incidents(stores[0])) == 1
