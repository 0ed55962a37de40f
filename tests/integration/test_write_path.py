"""The write path against a real redis-server: repeats are a counter bump, one policy snapshot per
webhook, and a timeline in time order when delivery outcomes race state changes."""

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from engine.delivery.loop import Delivery, DeliveryConfig
from engine.errors import StoreError
from engine.events import Resolve
from engine.ingest.alertmanager import parse_payload
from engine.messages import Message
from engine.metrics import Metrics
from engine.notifiers.base import Notifier
from engine.policy.models import PolicySet
from engine.processor import INGEST_SLOTS, Processor
from engine.store import keys
from engine.store.base import OutboxEntry
from engine.store.connect import connect
from engine.store.redis import RedisStore
from engine.timeline import TimelineEntry
from tests.clock import FakeClock
from tests.integration.test_store import payload
from tests.unit.escalation_helpers import POLICIES

pytestmark = pytest.mark.redis


def conflicts(proc: Processor) -> float:
    value = proc.metrics.registry.get_sample_value("escalation_commit_conflicts_total")
    return value or 0.0


async def test_repeats_bump_a_counter_without_rewriting_the_incident(store: RedisStore) -> None:
    clock = FakeClock()
    proc = Processor(store, lambda: POLICIES, clock, Metrics(CollectorRegistry()))
    _, alerts = parse_payload(payload("02-firing-group.json"))
    first = await proc.ingest(alerts)
    [incident_id] = first.incidents
    before = await store.load(incident_id)
    assert before is not None and before.version == 1
    raw_before = await store.client.hget(keys.incident(incident_id), "d")

    # an Alertmanager HA pair and its retries: 40 copies of the group at once
    results = await asyncio.gather(*(proc.ingest(alerts) for _ in range(40)))

    assert sum(r.duplicates for r in results) == 40 * len(alerts)
    after = await store.load(incident_id)
    assert after is not None and after.version == 1  # never rewritten
    assert await store.client.hget(keys.incident(incident_id), "d") == raw_before
    assert after.duplicates == 40 * len(alerts)
    assert conflicts(proc) == 0.0
    # a real change still commits, and keeps the count
    resolved = await proc.act(incident_id, Resolve("alice"))
    assert resolved.version == 2 and resolved.duplicates == 40 * len(alerts)
    listed = await store.list_incidents(10)
    assert [i.duplicates for i in listed] == [40 * len(alerts)]


async def test_repeats_of_a_resolved_incident_count_nothing_on_it(store: RedisStore) -> None:
    proc = Processor(store, lambda: POLICIES, FakeClock(), Metrics(CollectorRegistry()))
    _, alerts = parse_payload(payload("01-firing-single.json"))
    [incident_id] = (await proc.ingest(alerts)).incidents
    await proc.act(incident_id, Resolve("alice"))
    again = await proc.ingest(alerts)
    assert again.duplicates == 1 and again.opened == 0
    inc = await store.load(incident_id)
    assert inc is not None and inc.duplicates == 0 and inc.version == 2


async def test_one_webhook_is_routed_and_decided_under_one_policy_snapshot(store: RedisStore) -> None:
    reads = 0

    def policies() -> PolicySet:
        nonlocal reads
        reads += 1
        return POLICIES

    proc = Processor(store, policies, FakeClock(), Metrics(CollectorRegistry()))
    _, alerts = parse_payload(payload("02-firing-group.json"))
    await proc.ingest(alerts)
    assert reads == 1
    await proc.ingest(alerts)  # all repeats
    assert reads == 2


class SlowSend:
    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock

    def endpoint(self, address: str) -> str:
        return address

    def unusable(self, address: str) -> str | None:
        return None

    async def send(self, message: Message, thread: str | None = None) -> str | None:
        self.clock.advance(0.040)  # the send takes 40 ms; its outcome is stamped after it
        return None


class RacingStore(RedisStore):
    """Appends a delivery outcome only after a resolve (decided 3 ms later) has committed."""

    race: Processor | None = None
    clock: FakeClock | None = None

    async def append_timeline(self, incident_id: str, entry: TimelineEntry) -> None:
        if self.race is not None and self.clock is not None:
            race, self.race = self.race, None
            self.clock.advance(0.003)
            await race.act(incident_id, Resolve("alice"))
        await super().append_timeline(incident_id, entry)


async def test_the_timeline_is_in_time_order_when_an_outcome_is_appended_after_a_later_commit(
    redis_url: str,
) -> None:
    store = RacingStore(await connect(redis_url))
    clock = FakeClock()
    metrics = Metrics(CollectorRegistry())
    proc = Processor(store, lambda: POLICIES, clock, metrics)
    _, alerts = parse_payload(payload("01-firing-single.json"))
    [incident_id] = (await proc.ingest(alerts)).incidents
    notifiers: Mapping[str, Notifier] = {"email": SlowSend(clock)}
    delivery = Delivery(store, notifiers, lambda: POLICIES, clock, metrics, DeliveryConfig("c1"))
    await store.ensure_groups()
    pending = await store.read_outbox("c1", 10)
    [entry] = [e for e in pending if isinstance(e, OutboxEntry) and e.message.target == "user:a"]
    try:
        await delivery.handle(entry)  # the dispatch: one send queued on email's own stream
        await delivery.ensure_groups()
        [send] = await store.read_outbox("c1", 10, "email")
        store.race, store.clock = proc, clock
        await delivery.handle(send)
        timeline = await store.timeline(incident_id)
        kinds = [e.kind.value for e in timeline]
        assert kinds[-2:] == ["delivered", "resolved"]  # stored the other way round
        assert [e.at_ms for e in timeline] == sorted(e.at_ms for e in timeline)
        raw = await store.client.lrange(keys.timeline(incident_id), 0, -1)
        assert [TimelineEntry.from_json(r).kind.value for r in raw][-2:] == ["resolved", "delivered"]
    finally:
        await store.close()


class Recording:
    def __init__(self) -> None:
        self.sent: list[str] = []

    def endpoint(self, address: str) -> str:
        return address

    def unusable(self, address: str) -> str | None:
        return None

    async def send(self, message: Message, thread: str | None = None) -> str | None:
        self.sent.append(message.address)
        return None


SCHEDULED = PolicySet.model_validate(
    {
        "severities": {"P3": {}},
        "default": {"severity": "P3", "policy": "std"},
        "escalation_policies": {
            "std": {"levels": [{"after": "0s", "notify": ["schedule:primary", "schedule:weekend"]}]}
        },
        "users": {"a": {"email": "a@x"}, "b": {"email": "b@x"}, "c": {"email": "c@x"}},
        "schedules": {
            "primary": {
                "time_zone": "UTC",
                "rotations": [
                    {"participants": ["a", "b"], "shift": "1d", "handoff": "09:00", "start": "2027-01-04"}
                ],
            },
            "weekend": {
                "time_zone": "UTC",
                "rotations": [
                    {
                        "participants": ["b"],
                        "shift": "1d",
                        "handoff": "09:00",
                        "start": "2027-01-04",
                        "only": [{"days": ["sat"]}],
                    }
                ],
                "fallback": "user:c",
            },
        },
    }
)


async def test_a_schedule_target_pages_who_is_on_call_at_send_time_and_notes_an_empty_slot(
    redis_url: str,
) -> None:
    store = RedisStore(await connect(redis_url))
    clock = FakeClock(int(datetime(2027, 1, 5, 10, tzinfo=UTC).timestamp() * 1000))  # Tuesday: b's day
    metrics = Metrics(CollectorRegistry())
    try:
        proc = Processor(store, lambda: SCHEDULED, clock, metrics)
        [incident_id] = (await proc.ingest(parse_payload(payload("01-firing-single.json"))[1])).incidents
        email = Recording()
        delivery = Delivery(store, {"email": email}, lambda: SCHEDULED, clock, metrics, DeliveryConfig("c1"))
        await store.ensure_groups()
        clock.advance(24 * 3600)  # sent a day late: Wednesday is a's day again
        await delivery.ensure_groups()
        await delivery.drain()
        assert sorted(email.sent) == ["a@x", "c@x"]  # primary's on-call now; weekend's slot is empty
        notes = [e.text for e in await store.timeline(incident_id) if e.kind == "nobody_on_call"]
        empty = "nobody on call at 2027-01-06T10:00:00.000Z"
        assert notes == [f"schedule:weekend: {empty}: paging its fallback user:c"]
    finally:
        await store.close()


RULED = PolicySet.model_validate(
    {
        "severities": {"P1": {}},
        "default": {"severity": "P1", "policy": "p"},
        "escalation_policies": {
            "p": {"until": "resolved", "levels": [{"after": "0s", "notify": ["user:alice"]}]}
        },
        "users": {
            "alice": {
                "email": "alice@x",
                "notify": [
                    {"after": "0s", "via": "email"},
                    {"after": "5m", "via": "slack"},  # no Slack address: reaches nothing
                    {"after": "10m", "via": "pagerduty:platform"},
                ],
            }
        },
    }
)


@pytest.mark.parametrize("ack_after_s", [None, 300])
async def test_a_persons_own_notification_rules_run_until_someone_acknowledges(
    redis_url: str, ack_after_s: int | None
) -> None:
    from engine.events import Acknowledge

    store = RedisStore(await connect(redis_url))
    clock = FakeClock()
    metrics = Metrics(CollectorRegistry())
    email, pagerduty = Recording(), Recording()
    notifiers: Mapping[str, Notifier] = {"email": email, "pagerduty": pagerduty}
    try:
        proc = Processor(store, lambda: RULED, clock, metrics)
        [incident_id] = (await proc.ingest(parse_payload(payload("01-firing-single.json"))[1])).incidents
        delivery = Delivery(store, notifiers, lambda: RULED, clock, metrics, DeliveryConfig("c1"))
        await store.ensure_groups()

        await delivery.ensure_groups()

        async def drain() -> None:
            await delivery.drain()

        await drain()
        assert (email.sent, pagerduty.sent) == (["alice@x"], [])  # at once: her email
        if ack_after_s is not None:
            clock.advance(ack_after_s)
            await proc.act(incident_id, Acknowledge("alice"))
            await drain()
        clock.advance(601 - (ack_after_s or 0))
        await drain()
        kinds = [(e.kind.value, e.text) for e in await store.timeline(incident_id)]
        if ack_after_s is None:
            assert pagerduty.sent == ["platform"]  # 10m on, still unacknowledged: her next step
        else:
            assert pagerduty.sent == []
            assert ("page_skipped", "trigger to user:alice skipped: incident is acknowledged now") in kinds
    finally:
        await store.close()


class FailingStore(RedisStore):
    """Its first commit fails as an unreachable Redis would; counts the commits tried."""

    commits = 0

    async def commit(self, *args: object, **kw: object) -> None:
        self.commits += 1
        if self.commits == 1:
            raise StoreError("commit decision: connection reset")
        await asyncio.sleep(0.01)
        await super().commit(*args, **kw)  # type: ignore[arg-type]


async def test_a_webhook_that_fails_leaves_none_of_its_decisions_running(redis_url: str) -> None:
    store = FailingStore(await connect(redis_url))
    try:
        proc = Processor(store, lambda: POLICIES, FakeClock(), Metrics(CollectorRegistry()))
        raws = [payload("01-firing-single.json", groupKey=f'{{}}:{{g="{i}"}}') for i in range(300)]
        alerts = [a for raw in raws for a in parse_payload(raw)[1]]  # 300 incidents, one webhook
        with pytest.raises(StoreError):
            await proc.ingest(alerts)
        tried = store.commits
        await asyncio.sleep(0.5)
        assert store.commits == tried < 300  # the 503 is the end of that webhook's work
        assert proc._ingest_slots._value == INGEST_SLOTS
    finally:
        await store.close()


class PeakStore(RedisStore):
    """Records the most commits in flight at once."""

    in_flight = 0
    peak = 0

    async def commit(self, *args: Any, **kw: Any) -> None:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await super().commit(*args, **kw)
        finally:
            self.in_flight -= 1


async def test_a_webhook_of_thousands_of_alerts_is_decided_in_bounded_batches(redis_url: str) -> None:
    store = PeakStore(await connect(redis_url))
    try:
        proc = Processor(store, lambda: POLICIES, FakeClock(), Metrics(CollectorRegistry()))
        raws = [payload("01-firing-single.json", groupKey=f'{{}}:{{g="{i}"}}') for i in range(2000)]
        result = await proc.ingest([a for raw in raws for a in parse_payload(raw)[1]])
        assert result.opened == 2000  # every alert's incident, from one webhook
        assert 1 < store.peak <= INGEST_SLOTS  # side by side, but never more than the slots at once
    finally:
        await store.close()
