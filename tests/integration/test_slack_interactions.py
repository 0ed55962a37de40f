"""Slack button clicks through the API (create_app, real redis-server): signed, forged, stale, replayed.

The outcome is read from the incident API, which does not depend on delivery; answers meant for the
clicker alone arrive at a local response_url receiver.
"""

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from engine.api import actions
from engine.api.actions import act
from engine.app import create_app
from engine.config import Settings
from engine.incident import Incident
from engine.policy.models import PolicySet
from tests.clock import FakeClock
from tests.integration.test_api import EngineTestServer, body
from tests.slack_sink import ResponseUrlSink

pytestmark = pytest.mark.redis
TOKEN = "s3cr3t-token"
SECRET = "test-signing-secret-0123456789abcdef"
ALICE, STRANGER = "U0ONCALL1", "U0STRANGER"
PATH = "/api/v1/slack/interactions"
REFERENCE = Path(__file__).parent.parent / "fixtures" / "slack" / "block_actions-payload.json"


def policies(slack: dict[str, Any] | None) -> PolicySet:
    doc: dict[str, Any] = {
        "severities": {"P1": {}, "P3": {}},
        "default": {"severity": "P1", "policy": "crit"},
        "escalation_policies": {"crit": {"levels": [{"after": "0s", "notify": ["user:alice"]}]}},
        "users": {"alice": {"slack": ALICE}},
        "channels": {"slack": slack} if slack is not None else {},
    }
    return PolicySet.model_validate(doc)


class Slack:
    """The engine, a response_url receiver, and Slack's side of the signing."""

    def __init__(self, client: TestClient[Any, Any], hook: ResponseUrlSink, clock: FakeClock) -> None:
        self.client = client
        self.hook = hook
        self.clock = clock

    async def incident(self) -> str:
        resp = await self.client.post(
            "/api/v1/alertmanager",
            data=json.dumps(body("01-firing-single.json")),
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        assert resp.status == 200, await resp.text()
        incident_id: str = (await resp.json())["incidents"][0]
        return incident_id

    async def state(self, incident_id: str) -> dict[str, Any]:
        resp = await self.client.get(f"/api/v1/incidents/{incident_id}")
        doc: dict[str, Any] = await resp.json()
        return doc

    def click(self, incident_id: str, action_id: str = "incident_ack", user: str = ALICE) -> bytes:
        """The reference payload, clicked by `user` on `action_id` of `incident_id`, form-encoded."""
        payload = json.loads(REFERENCE.read_text())
        payload["user"]["id"] = user
        payload["actions"][0].update(action_id=action_id, value=incident_id)
        payload["response_url"] = self.hook.url
        return urlencode({"payload": json.dumps(payload, separators=(",", ":"))}).encode()

    def sign(self, raw: bytes, secret: str = SECRET, age_s: int = 0) -> dict[str, str]:
        ts = str(self.clock.now_ms() // 1000 - age_s)
        digest = hmac.new(secret.encode(), b"v0:" + ts.encode() + b":" + raw, hashlib.sha256).hexdigest()
        return {
            "X-Slack-Request-Timestamp": ts,
            "X-Slack-Signature": f"v0={digest}",
            "Content-Type": "application/x-www-form-urlencoded",
        }

    async def post(self, raw: bytes, headers: dict[str, str]) -> aiohttp.ClientResponse:
        return await self.client.post(PATH, data=raw, headers=headers)


async def _engine(redis_url: str, slack: dict[str, Any] | None) -> AsyncIterator[Slack]:
    settings = Settings(auth_token=TOKEN, delivery_poll_s=0.2, redis_url=redis_url)
    clock = FakeClock(int(time.time() * 1000))
    async with ResponseUrlSink() as hook:
        if slack is not None:
            slack = {"response_url_prefix": hook.url.rsplit("/actions/", 1)[0] + "/", **slack}
        app = create_app(settings, policies(slack), clock=clock, notifiers={})
        async with TestClient(EngineTestServer(app)) as client:
            yield Slack(client, hook, clock)


@pytest.fixture
async def engine(redis_url: str, tmp_path: Path) -> AsyncIterator[Slack]:
    secret_file = tmp_path / "slack-signing-secret"
    secret_file.write_text(SECRET + "\n")
    async for e in _engine(redis_url, {"signing_secret_file": str(secret_file)}):
        yield e


async def test_a_signed_ack_from_a_known_user_acknowledges(engine: Slack) -> None:
    incident_id = await engine.incident()
    raw = engine.click(incident_id)
    resp = await engine.post(raw, engine.sign(raw))
    assert resp.status == 200, await resp.text()
    state = await engine.state(incident_id)
    assert (state["status"], state["acknowledged_by"]) == ("acknowledged", "alice")
    assert engine.hook.requests == []  # the page is edited by delivery; nothing only for the clicker


async def test_resolve_button_resolves(engine: Slack) -> None:
    incident_id = await engine.incident()
    raw = engine.click(incident_id, "incident_resolve")
    assert (await engine.post(raw, engine.sign(raw))).status == 200
    state = await engine.state(incident_id)
    assert (state["status"], state["resolved_by"]) == ("resolved", "alice")


async def test_snooze_button_snoozes_30m_and_says_so_in_the_thread(engine: Slack) -> None:
    incident_id = await engine.incident()
    raw = engine.click(incident_id, "incident_snooze")
    assert (await engine.post(raw, engine.sign(raw))).status == 200
    state = await engine.state(incident_id)
    assert state["status"] == "snoozed"
    assert state["snoozed_until"] is not None
    [note] = engine.hook.requests
    assert note.json == {
        "response_type": "in_channel",
        "replace_original": False,
        "text": ":zzz: Snoozed for 30m by alice",
        "thread_ts": "1795455912.001200",
    }


@pytest.mark.parametrize(
    ("secret", "age_s"),
    [("not-the-secret", 0), (SECRET, 301), (SECRET, -301)],
    ids=["forged", "stale", "from-the-future"],
)
async def test_forged_and_stale_clicks_get_401_and_change_nothing(
    engine: Slack, secret: str, age_s: int
) -> None:
    incident_id = await engine.incident()
    raw = engine.click(incident_id)
    resp = await engine.post(raw, engine.sign(raw, secret, age_s))
    assert resp.status == 401
    assert await resp.json() == {
        "error": "Slack signature missing, invalid or older than 5 minutes",
        "detail": None,
    }
    assert (await engine.state(incident_id))["status"] == "triggered"
    assert engine.hook.requests == []


async def test_a_replayed_click_with_its_old_timestamp_is_refused(engine: Slack) -> None:
    incident_id = await engine.incident()
    raw = engine.click(incident_id)
    headers = engine.sign(raw)
    assert (await engine.post(raw, headers)).status == 200
    resp = await engine.client.post(
        f"/api/v1/incidents/{incident_id}/unack",
        json={"by": "ops"},
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert resp.status == 200
    engine.clock.advance(301)
    resp = await engine.post(raw, headers)  # the same bytes and headers, captured and sent again
    assert resp.status == 401
    assert (await engine.state(incident_id))["status"] == "triggered"


@pytest.mark.parametrize("drop", ["X-Slack-Signature", "X-Slack-Request-Timestamp"])
async def test_a_click_without_signature_headers_gets_401(engine: Slack, drop: str) -> None:
    incident_id = await engine.incident()
    raw = engine.click(incident_id)
    headers = engine.sign(raw)
    del headers[drop]
    assert (await engine.post(raw, headers)).status == 401
    assert (await engine.state(incident_id))["status"] == "triggered"


async def test_an_unknown_slack_user_gets_an_ephemeral_answer_and_nothing_changes(engine: Slack) -> None:
    incident_id = await engine.incident()
    raw = engine.click(incident_id, user=STRANGER)
    assert (await engine.post(raw, engine.sign(raw))).status == 200
    assert (await engine.state(incident_id))["status"] == "triggered"
    [answer] = engine.hook.requests
    assert answer.json["response_type"] == "ephemeral"
    assert answer.json["replace_original"] is False
    assert answer.json["text"].startswith("You are not on this policy")


async def test_an_unknown_incident_or_impossible_action_is_explained_to_the_clicker(engine: Slack) -> None:
    raw = engine.click("inc-nope")
    assert (await engine.post(raw, engine.sign(raw))).status == 200
    incident_id = await engine.incident()
    for action_id in ("incident_resolve", "incident_ack"):
        raw = engine.click(incident_id, action_id)
        assert (await engine.post(raw, engine.sign(raw))).status == 200
    texts = [r.json["text"] for r in engine.hook.requests]
    assert texts == [
        "There is no incident inc-nope: nothing was changed.",
        f"Incident {incident_id} is already resolved (by alice).",
    ]
    assert all(r.json["response_type"] == "ephemeral" for r in engine.hook.requests)


async def test_a_response_url_outside_the_prefix_is_never_called(engine: Slack) -> None:
    raw = engine.click("inc-nope").replace(b"127.0.0.1", b"evil.example")
    assert (await engine.post(raw, engine.sign(raw))).status == 200
    assert engine.hook.requests == []


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        (b"payload=%7Bnot-json", "payload is not valid JSON"),
        (b"nothing=here", "form field 'payload' is missing"),
        (
            b"payload=" + json.dumps({"type": "block_actions", "user": {"id": ALICE}}).encode(),
            "invalid block_actions",
        ),
    ],
)
async def test_malformed_signed_payloads_get_400_naming_the_problem(
    engine: Slack, raw: bytes, says: str
) -> None:
    resp = await engine.post(raw, engine.sign(raw))
    assert resp.status == 400
    assert says in (await resp.json())["error"]


async def test_a_slow_action_finishes_after_the_answer(
    engine: Slack, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def slow_act(*args: Any, **kwargs: Any) -> Incident:
        await asyncio.sleep(0.5)
        return await act(*args, **kwargs)

    monkeypatch.setattr("engine.api.slack.act", slow_act)
    monkeypatch.setattr(actions, "CHAT_ANSWER_WITHIN_S", 0.05)
    incident_id = await engine.incident()
    raw = engine.click(incident_id)
    started = time.monotonic()
    assert (await engine.post(raw, engine.sign(raw))).status == 200
    assert time.monotonic() - started < 0.4
    assert (await engine.state(incident_id))["status"] == "triggered"
    for _ in range(100):
        if (await engine.state(incident_id))["status"] == "acknowledged":
            break
        await asyncio.sleep(0.05)
    assert (await engine.state(incident_id))["acknowledged_by"] == "alice"


async def test_without_channels_slack_the_endpoint_is_404(redis_url: str) -> None:
    async for e in _engine(redis_url, None):
        resp = await e.post(b"payload=%7B%7D", {})
        assert resp.status == 404
        assert "channels.slack" in (await resp.json())["error"]


async def test_without_a_readable_signing_secret_the_endpoint_is_503(redis_url: str) -> None:
    async for e in _engine(redis_url, {"signing_secret_env": "SLACK_SIGNING_SECRET_NOT_SET_ANYWHERE"}):
        resp = await e.post(b"payload=%7B%7D", {})
        assert resp.status == 503
        assert "SLACK_SIGNING_SECRET_NOT_SET_ANYWHERE" in (await resp.json())["error"]
    async for e in _engine(redis_url, {}):
        resp = await e.post(b"payload=%7B%7D", {})
        assert resp.status == 503
        assert "signing_secret_env" in (await resp.json())["error"]
