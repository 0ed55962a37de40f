"""Delivery: outbox -> PagerDuty sink; retries, Retry-After, permanent failures, dead-replica claims."""

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from engine.delivery.loop import Delivery, DeliveryConfig
from engine.delivery.retry import backoff_s
from engine.events import Acknowledge
from engine.ingest.alertmanager import parse_payload
from engine.messages import Message
from engine.metrics import Metrics
from engine.notifiers import PagerDutyNotifier
from engine.policy.targets import resolve_target
from engine.processor import Processor
from engine.store import keys
from engine.store.connect import connect
from engine.store.redis import RedisStore
from tests.clock import FakeClock
from tests.integration.test_api import POLICIES, ROUTING_KEY, body
from tests.sinks import PagerDutySink, Reply

pytestmark = pytest.mark.redis


@dataclass
class Rig:
    store: RedisStore
    proc: Processor
    clock: FakeClock
    pd: PagerDutySink
    session: aiohttp.ClientSession
    metrics: Metrics

    def delivery(self, consumer: str = "c1", **kw: float) -> Delivery:
        notifier = PagerDutyNotifier(self.session, self.pd.url, {"platform": ROUTING_KEY}, timeout_s=2)
        config = DeliveryConfig(consumer=consumer, backoff_s=1, backoff_max_s=4, **kw)  # type: ignore[arg-type]
        return Delivery(
            self.store, {"pagerduty": notifier}, lambda: POLICIES, self.clock, self.metrics, config
        )

    async def drain(self, delivery: Delivery) -> int:
        """Dispatch and every channel's queue until nothing is due, without the loops' sleeps:
        how many sends were attempted."""
        await delivery.ensure_groups()
        return await delivery.drain()

    def sample(self, outcome: str, action: str = "trigger") -> float:
        value = self.metrics.registry.get_sample_value(
            "escalation_notifications_total", {"channel": "pagerduty", "action": action, "outcome": outcome}
        )
        return value or 0.0


@pytest.fixture
async def rig(redis_url: str) -> AsyncIterator[Rig]:
    store = RedisStore(await connect(redis_url))
    clock = FakeClock()
    metrics = Metrics(CollectorRegistry())
    async with PagerDutySink() as pd, aiohttp.ClientSession() as session:
        yield Rig(store, Processor(store, lambda: POLICIES, clock, metrics), clock, pd, session, metrics)
    await store.close()


async def open_incident(rig: Rig) -> str:
    result = await rig.proc.ingest(parse_payload(body("01-firing-single.json"))[1])
    return result.incidents[0]


async def test_a_5xx_is_retried_with_backoff_and_delivered_once(rig: Rig) -> None:
    incident_id = await open_incident(rig)
    delivery = rig.delivery()
    await rig.store.ensure_groups()
    rig.pd.script(Reply(500), Reply(503))
    assert await rig.drain(delivery) == 1  # fails: parked for a retry
    assert await rig.drain(delivery) == 0  # not due yet
    rig.clock.advance(5)
    assert await rig.drain(delivery) == 1  # second failure
    rig.clock.advance(10)
    assert await rig.drain(delivery) == 1  # delivered
    assert [e["event_action"] for e in rig.pd.events] == ["trigger"]
    assert len(rig.pd.requests) == 3
    assert (rig.sample("retry"), rig.sample("success")) == (2.0, 1.0)
    kinds = [e.kind.value for e in await rig.store.timeline(incident_id)]
    assert kinds.count("delivery_retry") == 2 and kinds[-1] == "delivered"


async def test_429_retry_after_is_honoured(rig: Rig) -> None:
    await open_incident(rig)
    delivery = rig.delivery()
    await rig.store.ensure_groups()
    rig.pd.script(Reply(429, headers={"Retry-After": "30"}))
    await rig.drain(delivery)
    rig.clock.advance(20)  # backoff alone (max 4s) would be due; Retry-After is not
    assert await rig.drain(delivery) == 0
    rig.clock.advance(11)
    assert await rig.drain(delivery) == 1
    assert len(rig.pd.events) == 1


async def test_a_400_is_permanent_and_recorded(rig: Rig) -> None:
    incident_id = await open_incident(rig)
    delivery = rig.delivery()
    await rig.store.ensure_groups()
    rig.pd.script(
        Reply(400, json={"status": "invalid event", "message": "Event object is invalid", "errors": ["x"]})
    )
    await rig.drain(delivery)
    rig.clock.advance(3600)
    assert await rig.drain(delivery) == 0
    assert rig.sample("failed") == 1.0 and rig.pd.events == []
    *_, failed, dead = await rig.store.timeline(incident_id)
    assert failed.kind == "delivery_failed" and "Event object is invalid" in failed.text
    assert dead.kind == "dead_letter" and dead.text.startswith("trigger to pagerduty:platform: kept as")


async def test_it_gives_up_after_max_attempts(rig: Rig) -> None:
    await open_incident(rig)
    delivery = rig.delivery(max_attempts=2)
    await rig.store.ensure_groups()
    rig.pd.script(Reply(500), Reply(500), Reply(500))
    await rig.drain(delivery)
    rig.clock.advance(10)
    await rig.drain(delivery)
    rig.clock.advance(100)
    assert await rig.drain(delivery) == 0
    assert len(rig.pd.requests) == 2 and rig.sample("failed") == 1.0


async def test_a_dead_replicas_pending_delivery_is_claimed_by_another(rig: Rig) -> None:
    await open_incident(rig)
    await rig.store.ensure_groups()
    dead = await rig.store.read_outbox("dead-replica", 10)  # read, then the replica dies
    assert len(dead) == 1
    await asyncio.sleep(0.05)
    claimed = await rig.store.claim_stale("alive", min_idle_ms=10, count=10)
    assert [c.entry_id for c in claimed] == [dead[0].entry_id]
    live = rig.delivery("alive")
    await live.handle(claimed[0])
    assert await rig.drain(live) == 1
    assert [e["event_action"] for e in rig.pd.events] == ["trigger"]
    assert await rig.store.claim_stale("alive", min_idle_ms=0, count=10) == []  # acked


async def test_a_page_still_waiting_when_the_incident_is_acknowledged_is_not_sent(rig: Rig) -> None:
    incident_id = await open_incident(rig)
    await rig.store.ensure_groups()
    delivery = rig.delivery()
    rig.pd.script(Reply(500))
    await rig.drain(delivery)  # the first attempt fails; a retry is parked
    await rig.proc.act(incident_id, Acknowledge("alice"))  # until: acknowledged
    rig.clock.advance(10)
    await rig.drain(delivery)
    # the late page is not sent; the ack mirror is (PagerDuty drops an ack for a key it never saw)
    assert [e["event_action"] for e in rig.pd.events] == ["acknowledge"]
    texts = [e.text for e in await rig.store.timeline(incident_id) if e.kind == "page_skipped"]
    assert texts == ["trigger to pagerduty:platform skipped: already acknowledged"]


async def test_a_page_for_an_incident_resolved_before_delivery_is_skipped(rig: Rig) -> None:
    incident_id = await open_incident(rig)
    await rig.store.ensure_groups()
    from engine.events import Resolve

    await rig.proc.act(incident_id, Resolve("alice"))
    await rig.drain(rig.delivery())
    # the trigger is skipped; the resolve mirror still goes out (PagerDuty drops it harmlessly)
    assert [e["event_action"] for e in rig.pd.events] == ["resolve"]
    kinds = [e.kind.value for e in await rig.store.timeline(incident_id)]
    assert "page_skipped" in kinds


async def test_ack_is_mirrored_to_pagerduty(rig: Rig) -> None:
    incident_id = await open_incident(rig)
    await rig.store.ensure_groups()
    delivery = rig.delivery()
    await rig.drain(delivery)
    await rig.proc.act(incident_id, Acknowledge("alice"))
    await rig.drain(delivery)
    assert [e["event_action"] for e in rig.pd.events] == ["trigger", "acknowledge"]
    assert rig.pd.events[1]["dedup_key"] == incident_id


def test_targets_expand_to_contact_methods() -> None:
    from tests.unit.escalation_helpers import POLICIES as P

    assert resolve_target("user:a", P).addresses == [("email", "a@x", "a")]
    assert resolve_target("user:nobody", P).addresses == []
    assert resolve_target("pagerduty:p", P).addresses == [("pagerduty", "p", "")]
    assert resolve_target("schedule:primary", P).addresses == []


def test_backoff_grows_with_jitter_and_is_capped() -> None:
    for attempt in range(10):
        delay = backoff_s(attempt, 2.0, 60.0)
        assert 1.0 <= delay <= min(60.0, 2.0 * 2**attempt)


class Crashing:
    """A notifier with a bug: it raises something that is not a delivery outcome."""

    def __init__(self) -> None:
        self.calls = 0

    def endpoint(self, address: str) -> str:
        return address

    def unusable(self, address: str) -> str | None:
        return None

    async def send(self, message: Message, thread: str | None = None) -> str | None:
        self.calls += 1
        raise UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed")


def dead_letters(rig: Rig, reason: str) -> float:
    """Dead letters for `reason`, summed over the queues (dispatch and each channel)."""
    return sum(
        rig.metrics.registry.get_sample_value(
            "escalation_dead_letters_total", {"reason": reason, "channel": q}
        )
        or 0.0
        for q in ("dispatch", "pagerduty", "email", "slack", "webhook", "telegram", "teams")
    )


async def test_an_entry_whose_delivery_crashes_is_retried_with_backoff_then_dead_lettered(rig: Rig) -> None:
    incident_id = await open_incident(rig)
    await rig.store.ensure_groups()
    crashing = Crashing()
    config = DeliveryConfig(consumer="c1", backoff_s=1, backoff_max_s=4, max_attempts=3)
    delivery = Delivery(rig.store, {"pagerduty": crashing}, lambda: POLICIES, rig.clock, rig.metrics, config)
    assert await rig.drain(delivery) == 1  # crashes: parked for a retry, acked from the stream
    assert await rig.drain(delivery) == 0  # not due yet: backoff, not a busy loop
    for _ in range(2):
        rig.clock.advance(10)
        assert await rig.drain(delivery) == 1
    rig.clock.advance(100)
    assert await rig.drain(delivery) == 0  # given up: nothing pending, nothing to reclaim
    assert crashing.calls == 3
    assert await rig.store.claim_stale("c2", min_idle_ms=0, count=10) == []
    [dead] = await rig.store.dead_letters(10)
    assert json.loads(dead.message)["incident_id"] == incident_id
    assert "failed 3 times: UnicodeEncodeError" in dead.reason
    assert dead_letters(rig, "crashed") == 1.0
    last = (await rig.store.timeline(incident_id))[-1]
    assert last.kind == "dead_letter" and f"kept as dead letter {dead.id}" in last.text


async def test_an_unreadable_outbox_entry_is_dead_lettered_and_the_rest_delivered(rig: Rig) -> None:
    await rig.store.ensure_groups()
    await rig.store.client.xadd(keys.outbox(3), {"m": b"\xff not json"})
    await rig.store.client.xadd(keys.outbox(5), {"other": "field"})
    await open_incident(rig)
    delivery = rig.delivery()
    await rig.drain(delivery)
    assert [e["event_action"] for e in rig.pd.events] == ["trigger"]
    dead = await rig.store.dead_letters(10)
    assert len(dead) == 2 and all(d.reason.startswith("unreadable outbox entry") for d in dead)
    assert dead_letters(rig, "unreadable") == 2.0
    assert await rig.drain(delivery) == 0
    assert await rig.store.claim_stale("c2", min_idle_ms=0, count=10) == []


async def test_a_slow_replica_whose_entry_was_claimed_and_finished_queues_nothing_twice(rig: Rig) -> None:
    await open_incident(rig)
    slow, alive = rig.delivery("slow"), rig.delivery("alive")
    await slow.ensure_groups()
    [entry] = await rig.store.read_outbox("slow", 10)  # the slow replica reads, then stalls
    await asyncio.sleep(0.05)
    [claimed] = await rig.store.claim_stale("alive", min_idle_ms=10, count=10)
    await alive.handle(claimed)  # dispatched: one send queued on PagerDuty's stream
    await slow.handle(entry)  # the slow replica wakes up and dispatches too: refused
    assert len(await rig.store.read_outbox("alive", 10, "pagerduty")) == 1


async def test_due_retries_come_back_while_the_stream_stays_busy(rig: Rig) -> None:
    incident_id = await open_incident(rig)
    delivery = rig.delivery()
    rig.pd.script(Reply(500))
    assert await rig.drain(delivery) == 1  # parked for a retry
    rig.clock.advance(5)
    worker = delivery.workers["pagerduty"]
    for n in range(3):  # new work keeps arriving on PagerDuty's stream
        await rig.store.client.xadd(keys.stream("pagerduty", n), {"m": b"not json"})
    await worker.step()
    await worker.step()
    assert [e["event_action"] for e in rig.pd.events] == ["trigger"]  # the retry was not starved
    assert "delivered" in [e.kind.value for e in await rig.store.timeline(incident_id)]


async def test_a_slow_send_is_kept_alive_and_never_taken_over_by_another_replica(rig: Rig) -> None:
    """The claim window is seconds: a send that outlasts it is still this replica's, not a
    dead one's, so another replica must not send the same page meanwhile."""
    await open_incident(rig)
    slow = rig.delivery("slow", claim_idle_s=0.6)
    await slow.ensure_groups()
    [entry] = await rig.store.read_outbox("slow", 10)
    await slow.handle(entry)  # dispatched onto PagerDuty's queue
    rig.pd.script(Reply(202, {"status": "success"}, delay_s=1.5))
    sending = asyncio.create_task(slow.workers["pagerduty"].step())
    await asyncio.sleep(1.2)  # twice the claim window into the send
    assert await rig.store.claim_stale("other", min_idle_ms=600, count=10, channel="pagerduty") == []
    assert await sending == 1
    assert len(rig.pd.requests) == 1


async def until(check: Callable[[], bool], timeout_s: float) -> None:
    async with asyncio.timeout(timeout_s):
        while not check():  # noqa: ASYNC110 - the sink has no event to wait on
            await asyncio.sleep(0.01)


async def test_a_slow_send_holds_only_its_own_incident_never_the_pages_read_after_it(rig: Rig) -> None:
    """No head-of-line blocking: while one page takes 1.5 s at PagerDuty, another incident's page,
    read after it, goes out at once; the slow incident's acknowledgement waits for its page."""
    slow_id = await open_incident(rig)
    delivery = rig.delivery(poll_s=0.05)
    await delivery.ensure_groups()
    rig.pd.script(Reply(202, {"status": "success"}, delay_s=1.5))  # the notifier waits 2 s
    running = asyncio.create_task(delivery.run())
    try:
        await until(lambda: len(rig.pd.requests) == 1, 5)  # the slow page is in flight
        await rig.proc.act(slow_id, Acknowledge("alice"))
        other = body("01-firing-single.json")
        other["groupKey"] = '{}:{alertname="Another"}'
        other["alerts"][0]["labels"]["instance"] = "another-host"
        other["alerts"][0]["fingerprint"] = "0123456789abcdef"
        other_id = (await rig.proc.ingest(parse_payload(other)[1])).incidents[0]
        delivery.dispatcher.wake.set()
        # well before the slow answer (the sink records an event as it arrives, before its delay)
        await until(lambda: [e["dedup_key"] for e in rig.pd.events] == [slow_id, other_id], 1)
        assert len(rig.pd.requests) == 2  # and the acknowledgement is still held behind its page
        await until(lambda: len(rig.pd.events) == 3, 5)
        assert [e["event_action"] for e in rig.pd.events if e["dedup_key"] == slow_id] == [
            "trigger",
            "acknowledge",
        ]
    finally:
        delivery.stop()
        await running
