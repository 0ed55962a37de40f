"""The page that matters goes first: P0/P1 notifications and escalations ride each queue's urgent
lane, read before the backlog a storm of lesser alerts leaves. A real redis-server; the delivery
loop as the worker runs it."""

import asyncio
import contextlib
import copy
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import pytest
from prometheus_client import CollectorRegistry

from engine.delivery.loop import Delivery, DeliveryConfig
from engine.events import Action
from engine.ingest.alertmanager import parse_payload
from engine.messages import Message
from engine.metrics import Metrics
from engine.outbox import OutboxMessage
from engine.policy.models import PolicySet
from engine.policy.targets import Address
from engine.processor import Processor
from engine.store import keys
from engine.store.base import OutboxEntry
from engine.store.redis import RedisStore
from tests.clock import FakeClock

pytestmark = pytest.mark.redis
FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "01-firing-single.json"
SEVERITIES = ("P0", "P1", "P2", "P3")
POLICIES = PolicySet.model_validate(
    {
        "severities": {s: {} for s in SEVERITIES},
        "rules": [
            {"name": s, "matchers": [f'severity="{s}"'], "severity": s, "policy": "page"} for s in SEVERITIES
        ],
        "default": {"severity": "P3", "policy": "page"},
        "escalation_policies": {
            "page": {"levels": [{"after": "0s", "notify": ["user:a"]}, {"after": "5m", "notify": ["user:b"]}]}
        },
        "users": {"a": {"email": "a@x"}, "b": {"email": "b@x"}},
    }
)


def alerts(severity: str, n: int) -> Any:
    """One Alertmanager group (its own incident) firing at `severity`."""
    raw = json.loads(FIXTURE.read_text())
    alert = copy.deepcopy(raw["alerts"][0])
    alert["labels"] |= {"severity": severity, "alertname": f"A{n}"}
    alert["fingerprint"] = f"{n:016x}"
    raw |= {"alerts": [alert], "groupKey": f"g{n}", "commonLabels": alert["labels"]}
    return parse_payload(raw)[1]


async def lane(store: RedisStore, channel: str, urgent: bool) -> list[str]:
    """The incident ids of the messages on one lane of a queue, over every shard."""
    found = []
    for shard in range(keys.SHARDS):
        rows = await store.client.xrange(keys.stream(channel, shard, urgent))
        for _, fields in cast(list[tuple[bytes, dict[bytes, bytes]]], rows):
            found.append(json.loads(fields[b"m"])["incident_id"])
    return found


class Hanging:
    """An e-mail server that holds every P2/P3 send until released, and takes P0/P1 at once."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.changed = asyncio.Event()
        self.held: list[str] = []
        self.sent: list[tuple[str, str, float]] = []  # (incident, severity, monotonic)

    async def until(self, done: Callable[[], bool]) -> None:
        while not done():
            self.changed.clear()
            await self.changed.wait()

    def endpoint(self, address: str) -> str:
        return "smtp"

    def unusable(self, address: str) -> str | None:
        return None

    async def send(self, message: Message, thread: str | None = None) -> str | None:
        if message.severity in ("P2", "P3"):
            self.held.append(message.incident_id)
            self.changed.set()
            await self.release.wait()
        self.sent.append((message.incident_id, message.severity, time.monotonic()))
        self.changed.set()
        return None


@contextlib.asynccontextmanager
async def running(
    store: RedisStore, policies: PolicySet, channel: str, notifier: Hanging, **config: float
) -> AsyncIterator[Processor]:
    """A processor deciding on a clock that stands still, and the delivery loop as the worker
    runs it, `notifier` sending `channel`; stopped (sends in hand finished) on the way out."""
    clock = FakeClock()
    metrics = Metrics(CollectorRegistry())
    settings = DeliveryConfig("c1", poll_s=0.02, **config)  # type: ignore[arg-type]
    delivery = Delivery(store, {channel: notifier}, lambda: policies, clock, metrics, settings)
    await delivery.ensure_groups()
    loop = asyncio.create_task(delivery.run())
    try:
        yield Processor(store, lambda: policies, clock, metrics)
    finally:
        notifier.release.set()
        delivery.stop()
        await asyncio.wait_for(loop, 10)


async def test_p0_and_escalations_ride_the_urgent_lanes_p3_first_pages_the_rest(store: RedisStore) -> None:
    clock = FakeClock()
    metrics = Metrics(CollectorRegistry())
    proc = Processor(store, lambda: POLICIES, clock, metrics)
    [p3] = (await proc.ingest(alerts("P3", 1))).incidents
    [p0] = (await proc.ingest(alerts("P0", 2))).incidents
    assert await lane(store, keys.DISPATCH, urgent=True) == [p0]
    assert await lane(store, keys.DISPATCH, urgent=False) == [p3]

    notifier = Hanging()
    notifier.release.set()
    delivery = Delivery(store, {"email": notifier}, lambda: POLICIES, clock, metrics, DeliveryConfig("c1"))
    await delivery.ensure_groups()
    await delivery.drain()
    assert [(i, s) for i, s, _ in notifier.sent] == [(p0, "P0"), (p3, "P3")]  # the P0 read first

    # five minutes on, nobody answered: the P3's escalation (level 2) is urgent, as is the P0's
    clock.advance(301)
    for member in (p3, p0):
        inc = await store.load(member)
        assert inc is not None and inc.timer_ms is not None
        await proc.fire(member, inc.timer_ms)
    assert sorted(await lane(store, keys.DISPATCH, urgent=True)) == sorted([p3, p0])
    assert await lane(store, keys.DISPATCH, urgent=False) == []


async def test_an_urgent_retry_comes_back_on_the_urgent_lane(store: RedisStore) -> None:
    clock = FakeClock()
    proc = Processor(store, lambda: POLICIES, clock, Metrics(CollectorRegistry()))
    [p1] = (await proc.ingest(alerts("P1", 1))).incidents
    await store.ensure_groups()
    [entry] = await store.read_outbox("c1", 10)
    assert isinstance(entry, OutboxEntry) and entry.urgent and entry.message.urgent
    assert await store.move(entry, [], [(clock.now_ms() + 1000, entry.message.again())])
    assert await lane(store, keys.DISPATCH, urgent=True) == []  # acked, parked
    assert await store.pump_retries(clock.now_ms() + 1000) == 1
    assert await lane(store, keys.DISPATCH, urgent=True) == [p1]
    assert (await store.outbox_stats(clock.now_ms(), keys.DISPATCH))[:2] == (1, 0)  # both lanes counted


async def test_a_p0_page_is_sent_while_a_storm_of_p3_sends_hangs(store: RedisStore) -> None:
    """The e-mail worker has as many P3 sends in hand as it may (its server hangs on them) and
    more queued behind: a P0 page decided now still goes out at once, not after the backlog."""
    notifier = Hanging()
    async with running(store, POLICIES, "email", notifier, in_hand=4) as proc:
        for n in range(12):
            await proc.ingest(alerts("P3", n))
        async with asyncio.timeout(10):  # the worker is full of hanging sends (a read can
            await notifier.until(lambda: len(notifier.held) >= 4)  # take more than the bound)
        decided = time.monotonic()
        [p0] = (await proc.ingest(alerts("P0", 99))).incidents
        async with asyncio.timeout(5):
            await notifier.until(lambda: bool(notifier.sent))
        [(incident, severity, at)] = notifier.sent  # the P3 sends still hang: not waited for
        assert (incident, severity) == (p0, "P0")
        assert at - decided < 2  # a few polls of the loop, not the storm's backlog
    assert sorted(s for _, s, _ in notifier.sent).count("P3") >= 4


async def test_entries_of_two_shards_with_the_same_id_are_both_handled(store: RedisStore) -> None:
    """Stream ids are unique only within a stream: two shards' queues written in the same
    millisecond hand out the same id. One in hand must not hide the other (it sat unread until
    claimed as stale, 10 s later)."""
    clock = FakeClock()
    metrics = Metrics(CollectorRegistry())
    proc = Processor(store, lambda: POLICIES, clock, metrics)
    ids: dict[int, str] = {}
    for n in range(64):  # two P3 incidents on different shards
        [incident_id] = (await proc.ingest(alerts("P3", n))).incidents
        ids.setdefault(keys.shard_of_id(incident_id), incident_id)
        if len(ids) == 2:
            break
    await store.client.delete(
        *(keys.stream(keys.DISPATCH, s, u) for s in range(keys.SHARDS) for u in keys.LANES)
    )
    notifier = Hanging()
    delivery = Delivery(
        store, {"email": notifier}, lambda: POLICIES, clock, metrics, DeliveryConfig("c1", poll_s=0.02)
    )
    await delivery.ensure_groups()
    (first_shard, first), (second_shard, second) = ids.items()
    send = OutboxMessage(first, Action.TRIGGER, "user:a", 0, clock.now_ms(), Address("email", "a@x"))
    await store.client.xadd(keys.stream("email", first_shard), {"m": send.to_json()}, id="5-0")
    running = asyncio.create_task(delivery.run())
    try:
        async with asyncio.timeout(5):
            await notifier.until(lambda: notifier.held == [first])
        again = replace(send, incident_id=second)
        await store.client.xadd(keys.stream("email", second_shard), {"m": again.to_json()}, id="5-0")
        async with asyncio.timeout(3):
            await notifier.until(lambda: notifier.held == [first, second])
    finally:
        notifier.release.set()
        delivery.stop()
        await asyncio.wait_for(running, 10)


SLACK = PolicySet.model_validate(
    POLICIES.model_dump(by_alias=True, exclude_none=True)
    | {
        "escalation_policies": {"page": {"levels": [{"after": "0s", "notify": ["slack:#ops"]}]}},
        "channels": {"slack": {"token_env": "SLACK_TOKEN"}},
    }
)


async def test_a_p0_post_goes_ahead_of_a_rate_limited_backlog_to_the_same_channel(store: RedisStore) -> None:
    """Slack takes about one post a second per channel: a storm's P2 posts to #ops reserve turns
    far ahead (and are parked for them). A P0 post to #ops takes the next turn."""
    notifier = Hanging()
    notifier.release.set()
    async with running(store, SLACK, "slack", notifier) as proc:  # the clock stands still: parked
        for n in range(12):  # posts stay parked, the test sees only the order
            await proc.ingest(alerts("P2", n))
        async with asyncio.timeout(10):  # the burst went; the next is 1 s off; the rest parked
            await notifier.until(lambda: len(notifier.sent) >= 4)
        [p0] = (await proc.ingest(alerts("P0", 99))).incidents
        async with asyncio.timeout(4):
            await notifier.until(lambda: any(i == p0 for i, _, _ in notifier.sent))
        assert [s for _, s, _ in notifier.sent] == ["P2"] * 4 + ["P0"]  # 8 P2 posts still parked


async def test_bulk_sends_leave_room_for_an_urgent_one(store: RedisStore) -> None:
    """A channel kind's connections are shared by its sends: however many bulk sends wait on a
    slow endpoint, they hold at most `bulk_sends` of them, and a P0 page takes one of the rest."""
    notifier = Hanging()
    async with running(store, POLICIES, "email", notifier, bulk_sends=3) as proc:
        for n in range(12):
            await proc.ingest(alerts("P3", n))
        async with asyncio.timeout(10):
            await notifier.until(lambda: len(notifier.held) >= 3)
        await asyncio.sleep(0.3)  # the other nine are in hand too, and wait for a slot
        assert len(notifier.held) == 3
        [p0] = (await proc.ingest(alerts("P0", 99))).incidents
        async with asyncio.timeout(5):
            await notifier.until(lambda: bool(notifier.sent))
        assert [(i, s) for i, s, _ in notifier.sent] == [(p0, "P0")]


async def test_a_full_consumer_still_claims_a_dead_replicas_urgent_entries(store: RedisStore) -> None:
    """Full, a consumer reads and claims only the urgent lanes: a P0 page a dead replica held is
    taken over, the backlog's entries wait for room."""
    clock = FakeClock()
    proc = Processor(store, lambda: POLICIES, clock, Metrics(CollectorRegistry()))
    [p3] = (await proc.ingest(alerts("P3", 1))).incidents
    [p0] = (await proc.ingest(alerts("P0", 2))).incidents
    await store.ensure_groups()
    assert len(await store.read_outbox("dead-replica", 10)) == 2  # read, then the replica died
    claimed = await store.claim_stale("alive", 0, 10, urgent_only=True)
    assert [(e.urgent, e.message.incident_id) for e in claimed if isinstance(e, OutboxEntry)] == [(True, p0)]
    rest = await store.claim_stale("alive", 0, 10)  # with room: both lanes
    assert {e.message.incident_id for e in rest if isinstance(e, OutboxEntry)} == {p0, p3}
