"""Status updates, reassignment and incidents opened by hand, through the API of a running engine
to the strict Slack and PagerDuty sinks: what people see in the channel and the thread."""

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry

from engine.app import create_app
from engine.config import Settings
from engine.notifiers import PagerDutyNotifier
from engine.notifiers.base import Notifier
from engine.notifiers.slack import SlackNotifier
from engine.policy.models import PolicySet
from tests.integration.test_api import ROUTING_KEY, TOKEN, EngineTestServer, wait_for
from tests.sinks import PagerDutySink
from tests.slack_sink import TOKEN as SLACK_TOKEN
from tests.slack_sink import SlackSink

pytestmark = pytest.mark.redis
AUTH = {"Authorization": f"Bearer {TOKEN}"}
POLICIES = PolicySet.model_validate(
    {
        "severities": {"P0": {"update_every": "30m"}, "P3": {}},
        "default": {"severity": "P3", "policy": "crit"},
        "escalation_policies": {
            "crit": {"levels": [{"after": "0s", "notify": ["slack:#ops", "pagerduty:platform"]}]}
        },
        "users": {"bob": {"slack": "U0BOB"}},
        "channels": {
            "slack": {"token_env": "SLACK_TOKEN"},
            "pagerduty": {"services": {"platform": {"routing_key_env": "PD_KEY"}}},
        },
    }
)


@dataclass
class Live:
    client: TestClient[Any, Any]
    pd: PagerDutySink
    slack: SlackSink

    async def post(self, path: str, body: dict[str, Any], status: int = 200) -> dict[str, Any]:
        resp = await self.client.post(path, json=body, headers=AUTH)
        assert resp.status == status, await resp.text()
        found: dict[str, Any] = await resp.json()
        return found

    def posts(self) -> list[dict[str, Any]]:
        return list(self.slack.calls["chat.postMessage"])


@pytest.fixture
async def live(redis_url: str) -> AsyncIterator[Live]:
    settings = Settings(auth_token=TOKEN, redis_url=redis_url, delivery_poll_s=0.2)
    async with PagerDutySink() as pd, SlackSink() as slack, aiohttp.ClientSession() as session:
        notifiers: dict[str, Notifier] = {
            "pagerduty": PagerDutyNotifier(session, pd.url, {"platform": ROUTING_KEY}),
            "slack": SlackNotifier(session, SLACK_TOKEN, slack.url),
        }
        app = create_app(settings, POLICIES, notifiers=notifiers, registry=CollectorRegistry())
        async with TestClient(EngineTestServer(app)) as client:
            yield Live(client, pd, slack)


async def test_a_report_opened_by_hand_pages_updates_are_threaded_and_reassign_hands_over(live: Live) -> None:
    opened = await live.post(
        "/api/v1/incidents",
        {"title": "EU customers cannot pay", "severity": "P0", "reporter": "support-desk",
         "labels": {"service": "checkout"}, "description": "Ticket #4711"},
        status=201,
    )  # fmt: skip
    incident_id = opened["id"]
    assert (opened["title"], opened["severity"], opened["opened_by"]) == (
        "EU customers cannot pay",
        "P0",
        "support-desk",
    )
    assert opened["next_update_due_at"] is not None  # P0 declares update_every: 30m
    await wait_for(lambda: len(live.pd.events) == 1 and len(live.posts()) == 1)
    [page] = live.posts()
    assert page["channel"] == "#ops" and "EU customers cannot pay" in page["text"]

    view = await live.post(
        f"/api/v1/incidents/{incident_id}/status",
        {"by": "alice", "status": "identified", "message": "Payment provider outage in eu-west"},
    )
    assert [(u["number"], u["status"], u["message"]) for u in view["updates"]] == [
        (1, "identified", "Payment provider outage in eu-west")
    ]
    await wait_for(lambda: len(live.posts()) == 2)
    reply = live.posts()[1]
    assert reply["thread_ts"] and "UPDATE #1 (Identified) by alice" in reply["text"]
    assert "Payment provider outage in eu-west" in reply["text"]
    assert len(live.pd.events) == 1  # PagerDuty's Events API has no updates: not sent there

    handed = await live.post(
        f"/api/v1/incidents/{incident_id}/reassign", {"by": "alice", "to": "user:bob", "note": "DB expert"}
    )
    assert handed["assignee"] == "user:bob" and handed["status"] == "triggered"
    await wait_for(lambda: len(live.posts()) == 4)
    by_channel = {p["channel"]: p for p in live.posts()[2:]}
    assert "EU customers cannot pay" in by_channel.pop("U0BOB")["text"]  # bob paged by DM
    [(ops, told)] = by_channel.items()  # the channel told, in the page's thread
    assert ops == reply["channel"] and told["thread_ts"] == reply["thread_ts"]
    assert "Reassigned to user:bob by alice" in told["text"]

    done = await live.post(
        f"/api/v1/incidents/{incident_id}/status",
        {"by": "bob", "status": "resolved", "message": "Provider back"},
    )
    assert done["status"] == "resolved" and done["resolved_by"] == "bob"
    await wait_for(lambda: [e["event_action"] for e in live.pd.events][-1:] == ["resolve"])
    detail = await (await live.client.get(f"/api/v1/incidents/{incident_id}")).json()
    kinds = [e["kind"] for e in detail["timeline"]]
    assert kinds.count("status_update") == 2 and "reassigned" in kinds and kinds[0] == "opened"
    assert detail["timeline"][0]["actor"] == "support-desk"


async def test_bad_requests_name_the_field_and_change_nothing(live: Live) -> None:
    opened = await live.post("/api/v1/incidents", {"title": "x", "reporter": "s"}, status=201)
    assert opened["severity"] == "P3"  # routed like an alert with its labels: the default
    incident_id = opened["id"]
    for path, body, field in [
        ("/api/v1/incidents", {"title": "x", "severity": "P9"}, "severity"),
        ("/api/v1/incidents", {"reporter": "s"}, "title"),
        (f"/api/v1/incidents/{incident_id}/status", {"status": "done", "message": "x"}, "status"),
        (f"/api/v1/incidents/{incident_id}/status", {"status": "identified"}, "message"),
        (f"/api/v1/incidents/{incident_id}/reassign", {"to": "user:nobody"}, "to"),
    ]:
        resp = await live.client.post(path, json=body, headers=AUTH)
        assert resp.status == 422, (path, body, await resp.text())
        assert field in (await resp.json())["error"]
    bad_label = {"title": "x", "labels": {"bad name": "x"}}
    assert (await live.client.post("/api/v1/incidents", json=bad_label, headers=AUTH)).status == 422
    assert (await live.client.post("/api/v1/incidents", json={"title": "x"})).status == 401
    detail = await (await live.client.get(f"/api/v1/incidents/{incident_id}")).json()
    assert detail["updates"] == [] and detail["assignee"] is None


async def test_a_resolved_incident_takes_no_update_and_no_new_owner(live: Live) -> None:
    incident_id = (await live.post("/api/v1/incidents", {"title": "x", "reporter": "s"}, status=201))["id"]
    await live.post(f"/api/v1/incidents/{incident_id}/resolve", {"by": "alice"})
    for action, body in (
        ("status", {"status": "monitoring", "message": "x"}),
        ("reassign", {"to": "user:bob"}),
    ):
        resp = await live.client.post(f"/api/v1/incidents/{incident_id}/{action}", json=body, headers=AUTH)
        assert resp.status == 409 and "is resolved" in (await resp.json())["error"]
