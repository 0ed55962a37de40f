"""Each channel kind has its own queue and workers: a rate-limited or hanging Slack never delays a
PagerDuty page, and PagerDuty's own faults end in exactly one page. A running engine in process,
a real redis-server, the strict Slack and PagerDuty sinks."""

import asyncio
import statistics
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry

from engine.app import create_app
from engine.config import Settings
from engine.incident import Incident
from engine.notifiers import PagerDutyNotifier
from engine.notifiers.base import Notifier
from engine.notifiers.slack import SlackNotifier
from engine.policy.models import PolicySet
from engine.store.redis import RedisStore
from tests.integration.test_api import ROUTING_KEY, TOKEN, EngineTestServer, body, wait_for
from tests.sinks import PagerDutySink, Recorded, Reply
from tests.slack_sink import TOKEN as SLACK_TOKEN
from tests.slack_sink import SlackSink

pytestmark = pytest.mark.redis
POLICIES = PolicySet.model_validate(
    {
        "severities": {"P0": {}},
        "default": {"severity": "P0", "policy": "crit"},
        "escalation_policies": {
            "crit": {"levels": [{"after": "0s", "notify": ["slack:#ops", "pagerduty:platform"]}]}
        },
        "channels": {
            "slack": {"token_env": "SLACK_TOKEN"},
            "pagerduty": {"services": {"platform": {"routing_key_env": "PD_KEY"}}},
        },
    }
)


class TimedPagerDutySink(PagerDutySink):
    """Notes when each request arrives (monotonic), to measure page latency without polling."""

    def __init__(self) -> None:
        super().__init__()
        self.arrived: list[float] = []

    async def _answer(self, request: Recorded) -> Reply:
        self.arrived.append(time.monotonic())
        return await super()._answer(request)


@dataclass
class Live:
    client: TestClient[Any, Any]
    pd: TimedPagerDutySink
    slack: SlackSink
    registry: CollectorRegistry

    async def page(self, n: int) -> None:
        """A new incident (its own Alertmanager group), accepted."""
        raw = body("01-firing-single.json")
        raw["alerts"][0]["labels"]["alertname"] = f"Storm{n}"
        raw["groupKey"] = f"storm-{n}"
        headers = {"Authorization": f"Bearer {TOKEN}"}
        resp = await self.client.post("/api/v1/alertmanager", json=raw, headers=headers)
        assert resp.status == 200, await resp.text()

    async def pd_latencies(self, count: int) -> list[float]:
        """Page `count` incidents one by one; seconds from each webhook's 200 to its PagerDuty event."""
        took = []
        for n in range(count):
            start = time.monotonic()
            await self.page(n)
            await wait_for(lambda n=n: len(self.pd.events) == n + 1, 5)  # type: ignore[misc]
            took.append(self.pd.arrived[-1] - start)
        return took


@pytest.fixture
async def live(redis_url: str) -> AsyncIterator[Live]:
    settings = Settings(
        auth_token=TOKEN,
        redis_url=redis_url,
        delivery_poll_s=0.2,
        delivery_timeout_s=10,
        delivery_backoff_s=0.2,
    )
    registry = CollectorRegistry()
    async with TimedPagerDutySink() as pd, SlackSink() as slack, aiohttp.ClientSession() as session:
        notifiers: dict[str, Notifier] = {
            "pagerduty": PagerDutyNotifier(session, pd.url, {"platform": ROUTING_KEY}),
            "slack": SlackNotifier(session, SLACK_TOKEN, slack.url),
        }
        app = create_app(settings, POLICIES, notifiers=notifiers, registry=registry)
        async with TestClient(EngineTestServer(app)) as client:
            yield Live(client, pd, slack, registry)


def report(what: str, took: list[float]) -> None:
    ms = sorted(t * 1000 for t in took)
    print(f"{what}: PagerDuty page {statistics.median(ms):.1f} ms median, {ms[-1]:.1f} ms max, n={len(ms)}")


async def test_slack_answering_429_retry_after_30_does_not_hold_a_pagerduty_page(live: Live) -> None:
    live.slack.script(*[Reply(429, headers={"Retry-After": "30"})] * 50)
    took = await live.pd_latencies(20)
    report("Slack 429 Retry-After 30", took)
    assert max(took) < 1.0  # Slack holds its own queue for 30 s; PagerDuty's never waits on it
    # the 429 paused the #ops endpoint: Slack was asked once, not once per incident
    assert len(live.slack.requests) == 1 and live.slack.calls["chat.postMessage"] == []
    deferred = live.registry.get_sample_value(
        "escalation_notifications_deferred_total", {"channel": "slack", "reason": "rate_limit"}
    )
    assert deferred and deferred >= 19


async def test_a_hanging_slack_does_not_hold_a_pagerduty_page(live: Live) -> None:
    live.slack.script(*[Reply(200, delay_s=30)] * 50)  # answers never come within the 10 s timeout
    took = await live.pd_latencies(10)
    report("Slack hanging", took)
    assert max(took) < 1.0
    assert live.slack.calls["chat.postMessage"] == []


async def test_pagerduty_500_500_429_then_202_is_delivered_exactly_once(live: Live) -> None:
    live.pd.script(Reply(500), Reply(500), Reply(429, headers={"Retry-After": "1"}))
    start = time.monotonic()
    await live.page(1)
    await wait_for(lambda: len(live.pd.events) == 1, 10)
    took = time.monotonic() - start
    await asyncio.sleep(1.5)  # nothing more arrives
    assert [r.json["event_action"] for r in live.pd.requests] == ["trigger"] * 4
    assert len(live.pd.events) == 1 and took >= 1.0  # the 429's Retry-After was waited out
    assert live.slack.calls["chat.postMessage"][0]["channel"] == "#ops"  # Slack unaffected


async def test_a_pagerduty_that_hangs_times_out_and_is_retried(redis_url: str) -> None:
    settings = Settings(
        auth_token=TOKEN,
        redis_url=redis_url,
        delivery_poll_s=0.2,
        delivery_timeout_s=0.5,
        delivery_backoff_s=0.2,
    )
    levels = [{"after": "0s", "notify": ["pagerduty:platform"]}]
    policies = PolicySet.model_validate(
        POLICIES.model_dump(by_alias=True) | {"escalation_policies": {"crit": {"levels": levels}}}
    )
    async with PagerDutySink() as pd, aiohttp.ClientSession() as session:
        notifiers = {"pagerduty": PagerDutyNotifier(session, pd.url, {"platform": ROUTING_KEY})}
        app = create_app(settings, policies, notifiers=notifiers, registry=CollectorRegistry())
        async with TestClient(EngineTestServer(app)) as client:
            pd.script(Reply(202, {"status": "success"}, delay_s=5))
            live = Live(client, pd, SlackSink(), CollectorRegistry())  # type: ignore[arg-type]
            await live.page(1)
            await wait_for(lambda: len(pd.requests) == 2, 5)
            # at least once: the hung attempt may have landed too; both carry the incident's dedup_key
            assert len({r.json["dedup_key"] for r in pd.requests}) == 1
            incidents = await (await client.get("/api/v1/incidents")).json()
            [incident] = incidents["incidents"]
            detail = await (await client.get(f"/api/v1/incidents/{incident['id']}")).json()
            texts = [e["text"] for e in detail["timeline"] if e["kind"] == "delivery_retry"]
            assert any("within 0.5s" in text for text in texts), texts


async def test_a_slack_backlog_is_paced_one_turn_apart_not_parked_again_and_again(live: Live) -> None:
    """Slack holds #ops to about one message a second (burst 3): sends whose turn is far are
    parked until the turn reserved for them, so each is deferred once, and they arrive in turn."""
    start = time.monotonic()
    for n in range(8):
        await live.page(n)
    await wait_for(lambda: len(live.slack.calls["chat.postMessage"]) == 8, 15)
    took = time.monotonic() - start
    deferred = live.registry.get_sample_value(
        "escalation_notifications_deferred_total", {"channel": "slack", "reason": "rate_limit"}
    )
    assert deferred is not None and deferred <= 8  # once each at most (it was dozens)
    assert took >= 4.0  # the rate held: 3 at once, then about one a second


async def test_a_parked_send_reads_the_incident_record_but_not_its_alerts(
    live: Live, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The dispatcher and a send parked for its turn need the incident's status and policy, not
    its alerts (a storm's grouped incident holds hundreds): only a message that goes reads them."""
    loads: list[str] = []
    real, real_shown = RedisStore.load, RedisStore.load_shown

    async def load(self: RedisStore, incident_id: str, alerts: bool = True) -> Incident | None:
        loads.append("all" if alerts else "record")
        return await real(self, incident_id, alerts)

    async def load_shown(self: RedisStore, incident_id: str, limit: int) -> Incident | None:
        loads.append("shown")
        return await real_shown(self, incident_id, limit)

    monkeypatch.setattr(RedisStore, "load", load)
    monkeypatch.setattr(RedisStore, "load_shown", load_shown)
    live.slack.script(*[Reply(429, headers={"Retry-After": "30"})] * 50)
    await live.page(0)  # Slack answers 429: #ops is paused, every later send there is parked
    await wait_for(lambda: len(live.pd.events) == 1 and len(live.slack.requests) == 1, 5)
    loads.clear()
    for n in range(1, 11):
        await live.page(n)

    def parked() -> float:
        labels = {"channel": "slack", "reason": "rate_limit"}
        return live.registry.get_sample_value("escalation_notifications_deferred_total", labels) or 0

    await wait_for(lambda: len(live.pd.events) == 11 and parked() >= 10, 5)
    assert loads.count("shown") == 10  # one read of alerts per PagerDuty page that went out
    assert loads.count("all") == 0  # never all of them
    assert loads.count("record") >= 30  # dispatch (2 targets each: 1 read) and each send's decision
    assert live.pd.events[-1]["payload"]["custom_details"]["alerts"]  # the page still lists them


async def test_sends_that_cannot_go_fail_at_once_not_one_rate_limit_turn_at_a_time(redis_url: str) -> None:
    """Slack's bot token is missing: every send to #ops fails permanently, and knows it before
    trying. Slack's rate limit (3 at once, then one a second) must not space the failures out
    (ten took over seven seconds), and what was never tried says nothing about the endpoint."""
    settings = Settings(auth_token=TOKEN, redis_url=redis_url, delivery_poll_s=0.2, delivery_backoff_s=0.2)
    registry = CollectorRegistry()
    async with PagerDutySink() as pd, SlackSink() as slack, aiohttp.ClientSession() as session:
        notifiers: dict[str, Notifier] = {
            "pagerduty": PagerDutyNotifier(session, pd.url, {"platform": ROUTING_KEY}),
            "slack": SlackNotifier(
                session, ValueError("environment variable SLACK_TOKEN is not set"), slack.url
            ),
        }
        app = create_app(settings, POLICIES, notifiers=notifiers, registry=registry)
        async with TestClient(EngineTestServer(app)) as client:
            live = Live(client, pd, slack, registry)  # type: ignore[arg-type]
            start = time.monotonic()
            for n in range(10):
                await live.page(n)

            def failed() -> float:
                labels = {"reason": "failed", "channel": "slack"}
                return registry.get_sample_value("escalation_dead_letters_total", labels) or 0

            await wait_for(lambda: failed() == 10, 5)
            took = time.monotonic() - start
            deferred = registry.get_sample_value(
                "escalation_notifications_deferred_total", {"channel": "slack", "reason": "rate_limit"}
            )
            assert deferred == 0 and took < 3, (deferred, took)
            assert slack.requests == []  # never tried
            breaker = registry.get_sample_value(
                "escalation_breaker_state", {"channel": "slack", "endpoint": "#ops"}
            )
            assert breaker is None  # no breaker for #ops at all: nothing was learned about it
            headers = {"Authorization": f"Bearer {TOKEN}"}
            letters = await (await client.get("/api/v1/deadletters", headers=headers)).json()
            assert any("SLACK_TOKEN is not set" in d["reason"] for d in letters["dead_letters"]), letters
