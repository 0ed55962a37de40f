"""End to end: real Alertmanager -> engine process (embedded redis) -> local PagerDuty, webhook sinks."""

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.e2e.harness import AUDIT_SECRET, ROUTING_KEY, Alertmanager, EngineProcess, wait_for
from tests.sinks import PagerDutySink, WebhookSink

pytestmark = pytest.mark.e2e

POLICY = """
severities:
  P0: {{description: Complete outage, ack_within: 15m}}
  P3: {{description: Minor}}
rules:
  - name: critical
    matchers: ['severity="critical"']
    severity: P0
    policy: fast
default: {{severity: P3, policy: fast}}
escalation_policies:
  fast:
    until: acknowledged
    levels:
      - after: 0s
        notify: [pagerduty:platform]
      - after: {level2}
        notify: [webhook:audit]
      - after: {level3}
        notify: [pagerduty:platform]
channels:
  pagerduty:
    url: {pd_url}
    services:
      platform: {{routing_key_env: PD_KEY}}
  webhook:
    endpoints:
      audit: {{url: '{hook_url}', secret_env: AUDIT_SECRET}}
"""


def now_rfc3339(offset_s: float = 0) -> str:
    return (datetime.now(UTC) + timedelta(seconds=offset_s)).isoformat().replace("+00:00", "Z")


@pytest.fixture
async def sinks() -> AsyncIterator[tuple[PagerDutySink, WebhookSink]]:
    async with PagerDutySink() as pd, WebhookSink(secret=AUDIT_SECRET) as hook:
        yield pd, hook


def write_policy(tmp: Path, pd: PagerDutySink, hook: WebhookSink, level2: str, level3: str) -> Path:
    d = tmp / "policies"
    d.mkdir()
    (d / "policy.yaml").write_text(
        POLICY.format(pd_url=pd.url, hook_url=hook.url, level2=level2, level3=level3)
    )
    return d


async def test_alertmanager_to_pages_ack_and_resolve(
    tmp_path: Path, sinks: tuple[PagerDutySink, WebhookSink]
) -> None:
    pd, hook = sinks
    engine = EngineProcess(
        write_policy(tmp_path, pd, hook, "3s", "8s"), tmp_path / "data", tmp_path / "engine.log"
    )
    await engine.start()
    am = Alertmanager(tmp_path, engine.url)
    try:
        await am.start()
        alert = {
            "labels": {"alertname": "CheckoutDown", "service": "checkout", "severity": "critical"},
            "annotations": {
                "summary": "checkout returns 5xx",
                "runbook_url": "https://runbooks.example/checkout",
            },
            "startsAt": now_rfc3339(),
            "generatorURL": "http://prometheus.example/graph",
        }
        await am.post_alerts([alert])

        await wait_for(lambda: len(pd.events) >= 1, 15, "the PagerDuty trigger")
        triggered_at = time.monotonic()
        trigger = pd.events[0]
        assert trigger["event_action"] == "trigger" and trigger["routing_key"] == ROUTING_KEY
        assert trigger["payload"]["severity"] == "critical"
        assert trigger["payload"]["summary"].startswith("[P0] checkout - checkout returns 5xx")
        incident_id = trigger["dedup_key"]

        # level 2 at 3s after the trigger: not before its deadline
        await wait_for(lambda: len(hook.requests) >= 1, 10, "the level-2 page")
        assert time.monotonic() - triggered_at > 2.5
        page = hook.requests[0].json
        assert page is not None and page["incident_id"] == incident_id and page["level"] == 1

        view = await engine.call("POST", f"/api/v1/incidents/{incident_id}/ack", json={"by": "alice"})
        assert view["status"] == "acknowledged"
        await wait_for(lambda: any(e["event_action"] == "acknowledge" for e in pd.events), 10, "acknowledge")

        # level 3 was due 8s after the trigger: the ack stopped it
        await asyncio.sleep(max(0.0, 9.5 - (time.monotonic() - triggered_at)))
        assert [e["event_action"] for e in pd.events] == ["trigger", "acknowledge"]
        assert len(hook.requests) == 2  # the level-2 page, then its acknowledge mirror
        assert json.loads(hook.requests[1].body)["action"] == "acknowledge"

        await am.post_alerts([{**alert, "endsAt": now_rfc3339(-1)}])
        await wait_for(lambda: any(e["event_action"] == "resolve" for e in pd.events), 20, "resolve")
        view = await engine.call("GET", f"/api/v1/incidents/{incident_id}")
        assert view["status"] == "resolved" and view["resolved_by"] == "alertmanager"
        assert view["acknowledged_by"] == "alice"
        kinds = [e["kind"] for e in view["timeline"]]
        for kind in ("opened", "paged", "delivered", "acknowledged", "resolved"):
            assert kind in kinds
    finally:
        am.stop()
        engine.stop()


async def test_a_killed_engine_still_fires_the_next_level_once(
    tmp_path: Path, sinks: tuple[PagerDutySink, WebhookSink]
) -> None:
    pd, hook = sinks
    engine = EngineProcess(
        write_policy(tmp_path, pd, hook, "4s", "1h"), tmp_path / "data", tmp_path / "engine.log"
    )
    await engine.start()
    try:
        body = json.loads((Path(__file__).parent.parent / "fixtures" / "01-firing-single.json").read_text())
        await engine.call("POST", "/api/v1/alertmanager", json=body)
        await wait_for(lambda: len(pd.events) == 1, 10, "the first page")
        engine.kill()  # SIGKILL between level 1 and level 2
        await asyncio.sleep(1)
        await engine.start()
        await wait_for(lambda: len(hook.requests) >= 1, 15, "level 2 after the restart")
        await asyncio.sleep(2)
        assert len(hook.requests) == 1
        assert len(pd.events) == 1  # level 1 was not paged again
    finally:
        engine.stop()


async def test_two_engines_on_one_redis_page_each_level_once(
    tmp_path: Path, sinks: tuple[PagerDutySink, WebhookSink]
) -> None:
    from tests.servers import RedisServer

    pd, hook = sinks
    policies = write_policy(tmp_path, pd, hook, "3s", "1h")
    with RedisServer() as redis:
        engines = [
            EngineProcess(
                policies, tmp_path / f"d{n}", tmp_path / f"e{n}.log", {"ESCALATION_REDIS_URL": redis.url}
            )
            for n in range(2)
        ]
        for e in engines:
            await e.start()
        try:
            raw = json.loads((Path(__file__).parent.parent / "fixtures" / "02-firing-group.json").read_text())
            # an Alertmanager HA pair: both replicas deliver the same group to different engines
            await asyncio.gather(*(e.call("POST", "/api/v1/alertmanager", json=raw) for e in engines))
            await wait_for(lambda: len(hook.requests) >= 1, 10, "level 2")
            await asyncio.sleep(2)
            assert len(pd.events) == 1 and len(hook.requests) == 1
            listed = await engines[1].call("GET", "/api/v1/incidents")
            assert len(listed["incidents"]) == 1 and listed["incidents"][0]["duplicates"] == 3  # per alert
        finally:
            for e in engines:
                e.stop()
