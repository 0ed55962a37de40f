"""A channel down for good: retries, the breaker opens, the person's page fails over to their next
contact method (a real SMTP server), the failed send is a dead letter, and re-driving it once the
channel is back sends it. Steps driven on a fake clock against a real redis-server."""

import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from engine.delivery.loop import Delivery, DeliveryConfig
from engine.events import Acknowledge
from engine.ingest.alertmanager import parse_payload
from engine.metrics import Metrics
from engine.notifiers import close_notifiers
from engine.notifiers.base import Notifier
from engine.notifiers.slack import SlackNotifier
from engine.policy.models import PolicySet
from engine.processor import Processor
from engine.store.connect import connect
from engine.store.redis import RedisStore
from tests.clock import FakeClock
from tests.integration.test_api import body
from tests.sinks import refused_url
from tests.slack_sink import TOKEN, SlackSink
from tests.unit.test_notifier_email import Handler, notifier, smtp_server

__all__ = ["smtp_server"]
pytestmark = pytest.mark.redis

POLICIES = PolicySet.model_validate(
    {
        "severities": {"P1": {}},
        "default": {"severity": "P1", "policy": "std"},
        "escalation_policies": {"std": {"levels": [{"after": "0s", "notify": ["user:alice"]}]}},
        # her rule pages Slack only; email is her next contact method, for failover
        "users": {
            "alice": {
                "email": "alice@example.com",
                "slack": "U01ALICE",
                "notify": [{"after": "0s", "via": "slack"}],
            }
        },
        "channels": {
            "slack": {"token_env": "SLACK_TOKEN"},
            "email": {"smtp_host": "127.0.0.1", "from": "engine@example.com", "starttls": False},
        },
    }
)


@dataclass
class Rig:
    store: RedisStore
    proc: Processor
    clock: FakeClock
    metrics: Metrics
    delivery: Delivery

    def sample(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0

    async def timeline(self, incident_id: str) -> list[tuple[str, str]]:
        return [(e.kind.value, e.text) for e in await self.store.timeline(incident_id)]

    async def page(self, alertname: str) -> str:
        raw = body("01-firing-single.json")
        raw["alerts"][0]["labels"]["alertname"] = alertname
        raw["groupKey"] = alertname
        return (await self.proc.ingest(parse_payload(raw)[1])).incidents[0]


@pytest.fixture
async def rig(redis_url: str, smtp_server: Any) -> AsyncIterator[tuple[Rig, Handler, aiohttp.ClientSession]]:
    store = RedisStore(await connect(redis_url))
    clock = FakeClock()
    metrics = Metrics(CollectorRegistry())
    server = smtp_server(Handler())
    async with aiohttp.ClientSession() as session:
        notifiers: Mapping[str, Notifier] = {
            "slack": SlackNotifier(session, TOKEN, refused_url() + "/api/"),  # Slack is down
            "email": notifier(server.port),
        }
        config = DeliveryConfig("c1", backoff_s=1, backoff_max_s=2, max_attempts=2, breaker_failures=2)
        delivery = Delivery(store, notifiers, lambda: POLICIES, clock, metrics, config)
        await delivery.ensure_groups()
        proc = Processor(store, lambda: POLICIES, clock, metrics)
        yield Rig(store, proc, clock, metrics, delivery), server.handler, session
        await close_notifiers(notifiers.values())
    await store.close()


async def test_a_channel_down_for_good_fails_over_is_dead_lettered_and_redriven(
    rig: tuple[Rig, Handler, aiohttp.ClientSession],
) -> None:
    r, smtp, session = rig
    first = await r.page("DiskFull")
    assert await r.delivery.drain() == 1  # Slack refused: a retry is parked
    assert smtp.envelopes == []
    r.clock.advance(3)
    await r.delivery.drain()  # the last attempt fails: dead letter, and her email instead
    assert [e.rcpt_tos for e in smtp.envelopes] == [["alice@example.com"]]
    text = smtp.emails()[0].get_body(("plain",))
    assert text is not None and f"Incident {first}" in text.get_content()
    kinds = await r.timeline(first)
    assert [k for k, _ in kinds].count("delivery_retry") == 1
    failover = next(text for kind, text in kinds if kind == "failover")
    assert failover.endswith("failing over to email:alice@example.com, alice's next contact method")
    assert "gave up after 2 attempts" in failover
    breaker = next(text for kind, text in kinds if kind == "breaker")
    assert breaker.startswith("slack U01ALICE: circuit breaker open after 2 failures")
    assert r.sample("escalation_breaker_state", channel="slack", endpoint="U01ALICE") == 1
    assert r.sample("escalation_failovers_total", from_channel="slack", to_channel="email") == 1

    [dead] = await r.store.dead_letters(10)
    assert (dead.channel, json.loads(dead.message)["address"]) == ("slack", "U01ALICE")
    assert r.sample("escalation_dead_letters_total", reason="failed", channel="slack") == 1
    assert any(k == "dead_letter" and dead.id in t for k, t in kinds)

    # the breaker is open: the next page does not wait on Slack at all, it goes by email at once
    second = await r.page("CPUHigh")
    await r.delivery.drain()
    assert len(smtp.envelopes) == 2
    held = [t for k, t in await r.timeline(second) if k == "failover"]
    assert held == [
        "trigger to slack:U01ALICE (user:alice) not tried: slack U01ALICE is down (breaker open); "
        "failing over to email:alice@example.com, alice's next contact method"
    ]
    assert len(await r.store.dead_letters(10)) == 1  # handed over, not failed: no dead letter
    assert r.sample("escalation_notifications_deferred_total", channel="slack", reason="breaker_open") == 1

    # Slack is back (a reload with the right URL), the breaker's time is up: re-drive the dead letter
    async with SlackSink() as slack:
        r.delivery.notifiers = {**r.delivery.notifiers, "slack": SlackNotifier(session, TOKEN, slack.url)}
        r.clock.advance(31)
        assert await r.store.redrive(dead.id) is not None
        assert await r.store.redrive(dead.id) is None  # once
        assert await r.delivery.drain() == 1
        [posted] = slack.calls["chat.postMessage"]
        assert posted["channel"] == "U01ALICE" and first in json.dumps(posted["blocks"])
    assert await r.store.dead_letters(10) == []
    assert r.sample("escalation_breaker_state", channel="slack", endpoint="U01ALICE") == 0
    assert ("breaker", "slack U01ALICE: circuit breaker closed, sends go through again") in await r.timeline(
        first
    )


async def test_a_redriven_page_for_an_incident_acknowledged_since_is_skipped(
    rig: tuple[Rig, Handler, aiohttp.ClientSession],
) -> None:
    r, _, _ = rig
    incident_id = await r.page("DiskFull")
    await r.delivery.drain()
    r.clock.advance(3)
    await r.delivery.drain()
    [dead] = await r.store.dead_letters(10)
    await r.proc.act(incident_id, Acknowledge("alice"))
    await r.delivery.drain()
    await r.store.redrive(dead.id)
    r.clock.advance(31)
    await r.delivery.drain()
    skipped = [t for k, t in await r.timeline(incident_id) if k == "page_skipped"]
    assert skipped == ["trigger to user:alice skipped: already acknowledged"]
