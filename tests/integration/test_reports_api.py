"""The review and the report over HTTP: the engine in process, a real redis-server, a fake clock and
an email channel that records what it is asked to send."""

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry

from engine.app import create_app
from engine.config import Settings
from engine.messages import Message
from engine.policy.models import PolicySet
from tests.clock import FakeClock
from tests.integration.test_api import TOKEN, EngineTestServer, body
from tests.unit.test_reports import MONDAY, POLICY_DOC

pytestmark = pytest.mark.redis
AUTH = {"Authorization": f"Bearer {TOKEN}"}
POLICIES = PolicySet.model_validate(
    {
        **POLICY_DOC,
        "rules": [
            {"name": "critical", "matchers": ['severity="critical"'], "severity": "P1", "policy": "std"}
        ],
    }
)


class Outbox:
    """An email channel that always delivers."""

    def __init__(self) -> None:
        self.sent: list[Message] = []

    async def send(self, message: Message, thread: str | None = None) -> str | None:
        self.sent.append(message)
        return None

    def endpoint(self, address: str) -> str:
        return "smtp"

    def unusable(self, address: str) -> str | None:
        return None


@dataclass
class Rig:
    client: TestClient[Any, Any]
    clock: FakeClock
    email: Outbox

    async def act(self, incident_id: str, action: str, **fields: str) -> None:
        resp = await self.client.post(f"/api/v1/incidents/{incident_id}/{action}", json=fields, headers=AUTH)
        assert resp.status == 200, await resp.text()

    async def timeline_kinds(self, incident_id: str) -> list[str]:
        resp = await self.client.get(f"/api/v1/incidents/{incident_id}")
        return [e["kind"] for e in (await resp.json())["timeline"]]


@pytest.fixture
async def rig(redis_url: str) -> AsyncIterator[Rig]:
    settings = Settings(auth_token=TOKEN, delivery_poll_s=0.05, redis_url=redis_url)
    clock = FakeClock(MONDAY)
    email = Outbox()
    app = create_app(
        settings, POLICIES, clock=clock, notifiers={"email": email}, registry=CollectorRegistry()
    )
    async with TestClient(EngineTestServer(app)) as client:
        yield Rig(client, clock, email)


async def resolved_incident(rig: Rig) -> str:
    """A P1 paged to alice by email, acknowledged by her after 4 minutes, resolved after 65."""
    resp = await rig.client.post("/api/v1/alertmanager", json=body("01-firing-single.json"), headers=AUTH)
    assert resp.status == 200, await resp.text()
    (incident_id,) = (await resp.json())["incidents"]
    for _ in range(250):
        if "delivered" in await rig.timeline_kinds(incident_id):
            break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError("the page was not delivered")
    rig.clock.advance(4 * 60)
    await rig.act(incident_id, "ack", by="alice")
    rig.clock.advance(61 * 60)
    await rig.act(incident_id, "resolve", by="alice", note="rolled back")
    assert isinstance(incident_id, str)
    return incident_id


async def test_the_postmortem_of_a_resolved_p1(rig: Rig) -> None:
    incident_id = await resolved_incident(rig)
    rig.clock.advance(3600)
    resp = await rig.client.get(f"/api/v1/incidents/{incident_id}/postmortem")
    assert resp.status == 200, await resp.text()
    assert resp.content_type == "text/markdown" and resp.charset == "utf-8"
    text = await resp.text()
    assert text.startswith("# Post-incident review: HighErrorRate checkout")
    assert "**Review required:** yes — P1 incident" in text
    assert "| Time to acknowledge | 4m (by alice) | 15m (P1 ack_within) | met, 11m to spare |" in text
    assert "| Time to resolve | 1h 5m (by alice) |" in text
    assert "| alice | email:alice@example.com | 1 |" in text
    assert "- **Services:** checkout" in text
    assert "acknowledged: Acknowledged by alice" in text and "resolved: Resolved: rolled back" in text
    assert "5. Why 5? → (root cause)" in text and "| Item | Owner | Due date | Status |" in text


async def test_an_unknown_incident_is_a_json_404(rig: Rig) -> None:
    resp = await rig.client.get("/api/v1/incidents/no-such-incident/postmortem")
    assert resp.status == 404
    assert "no-such-incident" in (await resp.json())["error"]


async def test_the_report_in_json_and_markdown(rig: Rig) -> None:
    await resolved_incident(rig)
    resp = await rig.client.get("/api/v1/reports")
    assert resp.status == 200, await resp.text()
    data = await resp.json()
    assert data["incidents"] == 1 and data["truncated"] is False
    p1 = next(s for s in data["by_severity"] if s["severity"] == "P1")
    assert p1["mtta_s"] == {"median": 240.0, "p90": 240.0, "count": 1}
    assert p1["mttr_s"] == {"median": 3900.0, "p90": 3900.0, "count": 1}
    assert (p1["target_met"], p1["target_missed"]) == (1, 0)
    assert data["by_service"][0]["service"] == "checkout"
    assert data["pages_per_person"] == [{"person": "alice", "pages": 1, "out_of_hours": 0, "incidents": 1}]
    assert data["noisiest_alerts"] == [
        {"alertname": "HighErrorRate", "service": "checkout", "incidents": 1, "alerts": 1}
    ]
    resp = await rig.client.get("/api/v1/reports", params={"since": "7d", "format": "markdown"})
    assert resp.status == 200 and resp.content_type == "text/markdown"
    text = await resp.text()
    assert "**Incidents:** 1" in text and "| alice | 1 | 0 | 1 |" in text


async def test_the_report_window_ends_at_since(rig: Rig) -> None:
    await resolved_incident(rig)
    rig.clock.advance(2 * 3600)  # the incident opened 3h05m ago
    assert (await (await rig.client.get("/api/v1/reports?since=3h")).json())["incidents"] == 0
    assert (await (await rig.client.get("/api/v1/reports?since=4h")).json())["incidents"] == 1


@pytest.mark.parametrize(
    ("query", "name"),
    [("since=yesterday", "since"), ("since=367d", "since"), ("since=0s", "since"), ("format=xml", "format")],
)
async def test_bad_parameters_are_400s_that_name_them(rig: Rig, query: str, name: str) -> None:
    resp = await rig.client.get(f"/api/v1/reports?{query}")
    assert resp.status == 400
    assert (await resp.json())["error"].startswith(f"{name}:")
