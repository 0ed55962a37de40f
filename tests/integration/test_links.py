"""Signed one-click links against the engine in process and a real redis-server (and, once, a real
SMTP server): GET asks and changes nothing, POST acts once, anything forged or stale changes nothing."""

import email
import email.policy
import html
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from pydantic import SecretStr

from engine import links
from engine.api import keys
from engine.app import create_app
from engine.config import Settings
from engine.events import Action
from engine.messages import build_message
from engine.notifiers import PagerDutyNotifier
from tests.clock import FakeClock
from tests.integration.test_api import POLICIES, ROUTING_KEY, TOKEN, EngineTestServer, body
from tests.sinks import PagerDutySink
from tests.unit.test_notifier_email import Handler, notifier, smtp_server

__all__ = ["smtp_server"]  # the fixture, shared with the email notifier's tests
pytestmark = pytest.mark.redis
SECRET = "link-secret-for-tests-0123456789"
PUBLIC = "https://oncall.example"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@dataclass
class Rig:
    client: TestClient[Any, Any]
    clock: FakeClock

    async def open_incident(self) -> str:
        resp = await self.client.post(
            "/api/v1/alertmanager", json=body("01-firing-single.json"), headers=AUTH
        )
        assert resp.status == 200, await resp.text()
        (incident_id,) = (await resp.json())["incidents"]
        assert isinstance(incident_id, str)
        return incident_id

    async def incident(self, incident_id: str) -> dict[str, Any]:
        resp = await self.client.get(f"/api/v1/incidents/{incident_id}", headers=AUTH)
        assert resp.status == 200, await resp.text()
        found: dict[str, Any] = await resp.json()
        return found

    def path(self, incident_id: str, action: str, ttl_s: int = 3600) -> str:
        return "/ack/" + links.sign(SECRET.encode(), incident_id, action, self.clock.now_ms() + ttl_s * 1000)

    async def get(self, path: str) -> tuple[int, str]:
        resp = await self.client.get(path)
        return resp.status, await resp.text()

    async def post(self, path: str, form: dict[str, str] | None = None) -> tuple[int, str]:
        resp = await self.client.post(path, data=form)
        assert resp.content_type == "text/html"
        return resp.status, await resp.text()


@pytest.fixture
async def rig(redis_url: str) -> AsyncIterator[Rig]:
    settings = Settings(
        auth_token=TOKEN,
        redis_url=redis_url,
        public_url=PUBLIC,
        link_secret=SecretStr(SECRET),
        delivery_poll_s=0.2,
    )
    clock = FakeClock()
    async with PagerDutySink() as pd, aiohttp.ClientSession() as session:
        notifiers = {"pagerduty": PagerDutyNotifier(session, pd.url, {"platform": ROUTING_KEY})}
        app = create_app(settings, POLICIES, notifiers=notifiers, clock=clock)
        async with TestClient(EngineTestServer(app)) as client:
            yield Rig(client, clock)


def unchanged(before: dict[str, Any], after: dict[str, Any]) -> bool:
    fields = ("status", "acknowledged_by", "acknowledged_at", "resolved_by")
    return all(before[f] == after[f] for f in fields)


async def test_get_shows_the_confirmation_and_changes_nothing(rig: Rig) -> None:
    incident_id = await rig.open_incident()
    path = rig.path(incident_id, "ack")
    for _ in range(3):  # a mail scanner, a preview, the person: none of them acts
        resp = await rig.client.get(path)
        assert resp.status == 200 and resp.content_type == "text/html"
        page = await resp.text()
        assert f"Acknowledge incident {incident_id}?" in page
        assert '<form method="post">' in page and "<button" in page
        assert "HighErrorRate" in page and "P0" in page and "triggered" in page
        assert resp.headers["Cache-Control"] == "no-store"
        assert resp.headers["Referrer-Policy"] == "no-referrer"
        assert resp.headers["X-Frame-Options"] == "DENY"
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"]
    assert (await rig.incident(incident_id))["status"] == "triggered"
    status, page = await rig.post(path)  # the GETs did not use the token up
    assert status == 200 and "acknowledged by link" in page


async def test_post_acknowledges_once_and_a_replay_changes_nothing(rig: Rig) -> None:
    incident_id = await rig.open_incident()
    path = rig.path(incident_id, "ack")
    status, page = await rig.post(path)
    assert status == 200 and f"Incident {incident_id} is acknowledged by link." in page
    acked = await rig.incident(incident_id)
    assert acked["status"] == "acknowledged" and acked["acknowledged_by"] == "link"
    await rig.client.post(f"/api/v1/incidents/{incident_id}/unack", json={"by": "bob"}, headers=AUTH)
    before = await rig.incident(incident_id)
    rig.clock.advance(60)
    status, page = await rig.post(path)
    assert status == 409 and "This link was already used" in page and "Nothing was changed" in page
    assert unchanged(before, await rig.incident(incident_id)) and before["status"] == "triggered"


async def test_the_optional_name_is_recorded_and_escaped(rig: Rig) -> None:
    incident_id = await rig.open_incident()
    status, page = await rig.post(rig.path(incident_id, "ack"), {"by": "<b>Alice</b>\r\n" + "x" * 100})
    name = "<b>Alice</b> " + "x" * 51  # one line, 64 characters
    assert status == 200 and "<b>Alice" not in page and f"{html.escape(name, quote=False)} (via link)" in page
    assert (await rig.incident(incident_id))["acknowledged_by"] == f"{name} (via link)"


async def test_a_resolve_link_resolves_and_then_the_ack_link_has_nothing_to_do(rig: Rig) -> None:
    incident_id = await rig.open_incident()
    ack = rig.path(incident_id, "ack")
    status, page = await rig.get(rig.path(incident_id, "resolve"))
    assert status == 200 and f"Resolve incident {incident_id}?" in page
    status, page = await rig.post(rig.path(incident_id, "resolve"))
    assert status == 200 and "is resolved by link" in page
    resolved = await rig.incident(incident_id)
    assert resolved["status"] == "resolved" and resolved["resolved_by"] == "link"
    status, page = await rig.get(ack)
    assert status == 200 and "already resolved by link" in page and "<form" not in page
    status, page = await rig.post(ack)  # impossible now: said plainly, not a 500
    assert status == 409 and "already resolved" in page and "Nothing to acknowledge" in page
    assert unchanged(resolved, await rig.incident(incident_id))


async def test_an_acknowledged_incident_offers_resolve_but_not_ack_again(rig: Rig) -> None:
    incident_id = await rig.open_incident()
    await rig.client.post(f"/api/v1/incidents/{incident_id}/ack", json={"by": "carol"}, headers=AUTH)
    status, page = await rig.get(rig.path(incident_id, "ack"))
    assert status == 200 and "already acknowledged by carol" in page and "<form" not in page
    status, page = await rig.get(rig.path(incident_id, "resolve"))
    assert status == 200 and "<form" in page and "carol" in page


async def test_tampered_and_expired_links_are_refused_and_change_nothing(rig: Rig) -> None:
    incident_id = await rig.open_incident()
    before = await rig.incident(incident_id)
    good = rig.path(incident_id, "ack", ttl_s=600)
    tampered = good[:-1] + ("A" if good[-1] != "A" else "B")
    for send in (rig.get, rig.post):
        status, page = await send(tampered)
        assert status == 400 and "This link is not valid" in page and "<form" not in page
        status, page = await send("/ack/not-a-token")
        assert status == 400 and "malformed" in page
    rig.clock.advance(600)
    for send in (rig.get, rig.post):
        status, page = await send(good)
        assert status == 410 and "This link has expired" in page and "<form" not in page
    assert unchanged(before, await rig.incident(incident_id))
    status, _ = await rig.post(rig.path(incident_id, "ack"))  # refusals used nothing up
    assert status == 200


async def test_an_ack_digest_cannot_be_reused_as_a_resolve_link(rig: Rig) -> None:
    incident_id = await rig.open_incident()
    ack = rig.path(incident_id, "ack")
    assert (await rig.post(ack))[0] == 200
    forged = ack.replace(".ack.", ".resolve.")
    for send in (rig.get, rig.post):
        status, page = await send(forged)
        assert status == 400 and "not valid" in page
    other = rig.path("0-0000000000ff", "ack")  # the ack link's digest on another incident
    forged_other = other.rsplit(".", 1)[0] + "." + ack.rsplit(".", 1)[1]
    assert (await rig.post(forged_other))[0] == 400
    assert (await rig.incident(incident_id))["status"] == "acknowledged"


async def test_another_secret_and_an_unknown_incident(rig: Rig) -> None:
    incident_id = await rig.open_incident()
    expires = rig.clock.now_ms() + 3_600_000
    foreign = "/ack/" + links.sign(b"someone-else", incident_id, "resolve", expires)
    assert (await rig.post(foreign))[0] == 400
    assert (await rig.incident(incident_id))["status"] == "triggered"
    for send in (rig.get, rig.post):
        status, page = await send(rig.path("0-0123456789ab", "ack"))
        assert status == 404 and "There is no incident 0-0123456789ab" in page


async def test_the_links_of_a_real_email_acknowledge_the_incident(rig: Rig, smtp_server: Any) -> None:
    incident_id = await rig.open_incident()
    app = rig.client.app
    assert app is not None
    inc = await app[keys.store].load(incident_id)
    assert inc is not None
    now = rig.clock.now_ms()
    message = build_message(
        inc,
        Action.TRIGGER,
        level=0,
        target="user:oncall",
        address="oncall@example.com",
        policies=POLICIES,
        public_url=PUBLIC,
        decided_ms=now,
        links=await app[keys.link_secret].links(incident_id, now),
    )
    server = smtp_server(Handler())
    sender = notifier(server.port)
    await sender.send(message)
    await sender.aclose()
    (received,) = [
        email.message_from_bytes(e.content, policy=email.policy.default) for e in server.handler.envelopes
    ]
    text = received.get_body(preferencelist=("plain",))
    page = received.get_body(preferencelist=("html",))
    assert text is not None and page is not None
    found = re.search(r"^Acknowledge: (\S+)", text.get_content(), re.M)  # lines end in CRLF
    assert found is not None and found.group(1) == message.links["acknowledge"]
    url = found.group(1)
    hrefs = {html.unescape(h) for h in re.findall(r'href="([^"]+)"', page.get_content())}
    assert url in hrefs and message.links["resolve"] in hrefs
    assert url.startswith(f"{PUBLIC}/ack/")
    path = url.removeprefix(PUBLIC)
    status, confirm = await rig.get(path)
    assert status == 200 and f"Acknowledge incident {incident_id}?" in confirm
    assert (await rig.incident(incident_id))["status"] == "triggered"
    status, done = await rig.post(path, {"by": "oncall"})
    assert status == 200 and "acknowledged by oncall (via link)" in done
    assert (await rig.incident(incident_id))["acknowledged_by"] == "oncall (via link)"


async def test_a_later_page_carries_its_own_link_after_the_first_was_used(rig: Rig) -> None:
    """Acknowledged through the first page's link, the ack timed out and the page came again:
    its link must work, not answer "already used"."""
    incident_id = await rig.open_incident()
    secret = rig.client.app[keys.link_secret]
    first = (await secret.links(incident_id, rig.clock.now_ms()))["acknowledge"]
    assert (await rig.client.post(first[first.index("/ack/") :])).status == 200
    await rig.client.post(f"/api/v1/incidents/{incident_id}/unack", json={"by": "alice"}, headers=AUTH)
    rig.clock.advance(1800)
    again = (await secret.links(incident_id, rig.clock.now_ms()))["acknowledge"]
    assert again != first
    resp = await rig.client.post(again[again.index("/ack/") :])
    assert resp.status == 200, await resp.text()
    assert (await rig.incident(incident_id))["status"] == "acknowledged"
