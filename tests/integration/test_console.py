"""The web console in process (create_app + setup_web) against a real redis-server: login,
CSRF, escaping of what alerts carry, and actions through the forms agreeing with the API."""

import copy
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry

from engine.app import create_app
from engine.config import Settings
from engine.notifiers import PagerDutyNotifier
from engine.policy.models import PolicySet
from engine.web import setup_web
from tests.integration.test_api import EngineTestServer
from tests.sinks import PagerDutySink

FIXTURES = Path(__file__).parent.parent / "fixtures"
TOKEN = "console-token-1"
ROUTING_KEY = "0123456789abcdef0123456789abcdef"
XSS = "<script>alert(1)</script>"
pytestmark = pytest.mark.redis

POLICIES = PolicySet.model_validate(
    {
        "severities": {
            "P1": {"description": "Major", "ack_within": "5m", "update_every": "30m"},
            "P2": {"ack_within": "30m"},
            "P3": {},
        },
        "rules": [
            {"name": "critical", "matchers": ['severity="critical"'], "severity": "P1", "policy": "page"},
            {"name": "warning", "matchers": ['severity="warning"'], "severity": "P2", "policy": "page"},
        ],
        "default": {"severity": "P3", "policy": "page"},
        "escalation_policies": {
            "page": {
                "levels": [
                    {"after": "0s", "notify": ["pagerduty:platform"]},
                    {"after": "15m", "notify": ["pagerduty:platform"]},
                ]
            }
        },
        "users": {"alice": {"name": "Alice A", "email": "alice@example.com"}, "bob": {}},
        "schedules": {
            "primary": {
                "time_zone": "Europe/Berlin",
                "rotations": [
                    {
                        "participants": ["alice", "bob"],
                        "shift": "1d",
                        "handoff": "09:00",
                        "start": "2026-01-05",
                    }
                ],
                "fallback": "user:bob",
            }
        },
        "teams": {"db": {"members": ["alice", "bob"]}},
        "channels": {"pagerduty": {"services": {"platform": {"routing_key_env": "PD_KEY"}}}},
    }
)


def alert_body(**labels: str) -> dict[str, Any]:
    """The single-alert example with extra labels (and a title from `summary` when given)."""
    raw: dict[str, Any] = json.loads((FIXTURES / "01-firing-single.json").read_text())
    body = copy.deepcopy(raw)
    alert = body["alerts"][0]
    summary = labels.pop("summary", None)
    alert["labels"].update(labels)
    if summary is not None:
        alert["annotations"]["summary"] = summary
    alert["fingerprint"] = f"{abs(hash(json.dumps(alert['labels'], sort_keys=True))):016x}"[:16]
    body["groupKey"] = f"{{}}:{{{json.dumps(alert['labels'], sort_keys=True)}}}"
    return body


class Console:
    def __init__(self, client: TestClient[Any, Any], pd: PagerDutySink) -> None:
        self.client = client
        self.pd = pd
        self.auth = {"Authorization": f"Bearer {TOKEN}"}

    async def webhook(self, body: dict[str, Any]) -> str:
        resp = await self.client.post("/api/v1/alertmanager", json=body, headers=self.auth)
        assert resp.status == 200, await resp.text()
        ids: list[str] = (await resp.json())["incidents"]
        return ids[0]

    async def api_incident(self, incident_id: str) -> dict[str, Any]:
        resp = await self.client.get(f"/api/v1/incidents/{incident_id}")
        assert resp.status == 200
        found: dict[str, Any] = await resp.json()
        return found

    async def get(self, path: str) -> tuple[int, str]:
        resp = await self.client.get(path, allow_redirects=False)
        return resp.status, await resp.text()

    async def csrf(self, path: str = "/") -> str:
        status, text = await self.get(path)
        assert status == 200, text
        found = re.search(r'name="csrf" value="([^"]+)"', text)
        assert found, "no CSRF token on the page"
        return found[1]

    async def post(self, path: str, data: dict[str, str]) -> aiohttp.ClientResponse:
        return await self.client.post(path, data=data, allow_redirects=False)

    async def login(self, name: str = "alice") -> None:
        token = await self.csrf("/login")
        resp = await self.post("/login", {"csrf": token, "name": name, "token": TOKEN, "next": "/"})
        assert resp.status == 303, await resp.text()


async def _console(redis_url: str, **settings: Any) -> AsyncIterator[Console]:
    config = Settings(delivery_poll_s=0.2, redis_url=redis_url, **settings)
    async with PagerDutySink() as pd, aiohttp.ClientSession() as session:
        notifiers = {"pagerduty": PagerDutyNotifier(session, pd.url, {"platform": ROUTING_KEY})}
        app = create_app(config, POLICIES, notifiers=notifiers, registry=CollectorRegistry())
        setup_web(app)  # a no-op once create_app calls it
        async with TestClient(EngineTestServer(app)) as client:
            yield Console(client, pd)


@pytest.fixture
async def console(redis_url: str) -> AsyncIterator[Console]:
    async for c in _console(redis_url, auth_token=TOKEN):
        yield c


@pytest.fixture
async def open_console(redis_url: str) -> AsyncIterator[Console]:
    async for c in _console(redis_url):
        yield c


async def test_pages_need_a_login_when_credentials_are_configured(console: Console) -> None:
    for path in ("/", "/oncall", "/reports", "/incidents/new", "/incidents/x?y=1"):
        status, _ = await console.get(path)
        assert status == 303
    resp = await console.client.get("/incidents/x?y=1", allow_redirects=False)
    assert resp.headers["Location"] == "/login?next=%2Fincidents%2Fx%3Fy%3D1"
    token = await console.csrf("/login")
    wrong = await console.post("/login", {"csrf": token, "name": "eve", "token": "guess"})
    assert wrong.status == 401
    assert "not right" in await wrong.text()
    assert (await console.get("/"))[0] == 303
    await console.login("alice")
    status, text = await console.get("/")
    assert status == 200
    assert 'id="me">alice<' in text
    assert "Open console" not in text


async def test_the_session_cookie_is_signed_httponly_and_strict(console: Console) -> None:
    token = await console.csrf("/login")
    resp = await console.post("/login", {"csrf": token, "name": "alice", "token": TOKEN})
    cookie = resp.cookies["ee_console"]
    assert cookie["httponly"] is True
    assert cookie["samesite"] == "Lax"  # a link from Slack or a mail arrives logged in
    assert int(cookie["max-age"]) == 12 * 3600
    body, _, mac = cookie.value.partition(".")
    forged = body[:-2] + ("AA" if body[-2:] != "AA" else "BB") + "." + mac
    jar = console.client.session.cookie_jar
    jar.clear()
    jar.update_cookies({"ee_console": forged}, response_url=console.client.make_url("/"))
    assert (await console.get("/"))[0] == 303


async def test_security_headers(console: Console) -> None:
    await console.login()
    resp = await console.client.get("/")
    csp = resp.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp
    assert "'unsafe-inline'" not in csp
    assert resp.headers["X-Frame-Options"] == "DENY"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["Referrer-Policy"] == "same-origin"
    css = await console.client.get("/static/console/console.css")
    assert css.status == 200
    assert css.headers["X-Content-Type-Options"] == "nosniff"
    api = await console.client.get("/api/v1/incidents")
    assert "Content-Security-Policy" not in api.headers  # the API is left as it was


async def test_a_post_without_or_with_a_wrong_csrf_token_is_refused(console: Console) -> None:
    incident_id = await console.webhook(alert_body())
    await console.login()
    page = f"/incidents/{incident_id}"
    good = await console.csrf(page)
    for data in ({}, {"csrf": ""}, {"csrf": good[:-1] + ("x" if good[-1] != "x" else "y")}):
        resp = await console.post(f"{page}/ack", data)
        assert resp.status == 403
        assert "security token" in await resp.text()
    resp = await console.post(f"{page}/status", {"status": "identified", "message": "x"})
    assert resp.status == 403
    new = await console.post("/incidents/new", {"title": "forged"})
    assert new.status == 403
    after = await console.api_incident(incident_id)
    assert after["status"] == "triggered"
    assert after["updates"] == []
    assert len((await (await console.client.get("/api/v1/incidents")).json())["incidents"]) == 1


async def test_a_token_from_another_session_is_refused(redis_url: str) -> None:
    async for first in _console(redis_url, auth_token=TOKEN):
        incident_id = await first.webhook(alert_body())
        await first.login()
        stolen = await first.csrf(f"/incidents/{incident_id}")
        first.client.session.cookie_jar.clear()
        await first.login("mallory")  # a new session: the old token is bound to the old one
        resp = await first.post(f"/incidents/{incident_id}/ack", {"csrf": stolen})
        assert resp.status == 403
        assert (await first.api_incident(incident_id))["status"] == "triggered"


async def test_what_alerts_carry_is_escaped_everywhere(console: Console) -> None:
    body = alert_body(evil=XSS, service=XSS, summary=f"Title {XSS}")
    body["alerts"][0]["annotations"].update(
        {
            "description": f"desc {XSS}",
            "runbook_url": "javascript:alert(1)",
            "dashboard": "https://ok.example/d",
        }
    )
    incident_id = await console.webhook(body)
    await console.login()
    for path in ("/", f"/?q={XSS}", f"/incidents/{incident_id}", "/reports"):
        status, text = await console.get(path)
        assert status == 200, path
        assert XSS not in text, path
        assert "<script" not in text, path
    _, listing = await console.get("/")
    assert "Title &lt;script&gt;alert(1)&lt;/script&gt;" in listing
    _, page = await console.get(f"/incidents/{incident_id}")
    assert "evil=<b>&lt;script&gt;alert(1)&lt;/script&gt;</b>" in page
    assert "desc &lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert 'href="javascript:' not in page
    assert 'href="https://ok.example/d"' in page


async def test_search_and_filters(console: Console) -> None:
    first = await console.webhook(alert_body(service="checkout", summary="Checkout errors"))
    second = await console.webhook(alert_body(service="search", severity="warning", summary="Search slow"))
    await console.login()
    _, text = await console.get("/?q=checkout+ERRORS")  # case-insensitive, over the title too
    assert first in text and second not in text
    _, text = await console.get("/?severity=P2")
    assert second in text and first not in text
    _, text = await console.get("/?service=search")
    assert second in text and first not in text
    _, text = await console.get("/?label=severity%3D%22critical%22")
    assert first in text and second not in text
    _, text = await console.get("/?view=resolved")
    assert "No incidents match" in text
    status, text = await console.get("/?label=%3D%3Dbad")
    assert status == 200
    assert "label filter" in text


async def test_acknowledge_through_the_form(console: Console) -> None:
    incident_id = await console.webhook(alert_body())
    await console.login("alice")
    page = f"/incidents/{incident_id}"
    resp = await console.post(f"{page}/ack", {"csrf": await console.csrf(page)})
    assert resp.status == 303
    assert resp.headers["Location"] == page
    api = await console.api_incident(incident_id)
    assert api["status"] == "acknowledged"
    assert api["acknowledged_by"] == "alice"
    _, text = await console.get(page)
    assert "Acknowledged: the incident is now acknowledged." in text
    assert 'id="status">acknowledged<' in text
    _, again = await console.get(page)
    assert "the incident is now" not in again  # the flash is shown once


async def test_status_update_reassign_snooze_and_resolve_through_the_forms(console: Console) -> None:
    incident_id = await console.webhook(alert_body())
    await console.login("alice")
    page = f"/incidents/{incident_id}"
    csrf = await console.csrf(page)
    ok = await console.post(f"{page}/status", {"csrf": csrf, "status": "identified", "message": "bad deploy"})
    assert ok.status == 303
    bad = await console.post(f"{page}/status", {"csrf": csrf, "status": "panicking", "message": "x"})
    assert bad.status == 303
    _, text = await console.get(page)
    assert "choose one of investigating" in text
    assert "UPDATE #1 (identified): bad deploy" in text
    unknown = await console.post(f"{page}/reassign", {"csrf": csrf, "to": "user:nobody"})
    assert unknown.status == 303
    assert "no user &#39;nobody&#39;" in (await console.get(page))[1]
    moved = await console.post(f"{page}/reassign", {"csrf": csrf, "to": "team:db", "note": "db issue"})
    assert moved.status == 303
    assert (await console.api_incident(incident_id))["assignee"] == "team:db"
    await console.post(f"{page}/snooze", {"csrf": csrf, "duration": "1h"})
    assert (await console.api_incident(incident_id))["status"] == "snoozed"
    await console.post(f"{page}/resolve", {"csrf": csrf})
    api = await console.api_incident(incident_id)
    assert api["status"] == "resolved"
    assert api["resolved_by"] == "alice"


async def test_an_unknown_incident_is_a_page_not_a_500(console: Console) -> None:
    await console.login()
    status, text = await console.get("/incidents/nope")
    assert status == 404
    assert "No such incident" in text
    resp = await console.post("/incidents/nope/ack", {"csrf": await console.csrf("/")})
    assert resp.status == 303
    assert "No incident nope" in (await console.get(resp.headers["Location"]))[1]


async def test_open_an_incident_by_hand(console: Console) -> None:
    await console.login("alice")
    csrf = await console.csrf("/incidents/new")
    bad = await console.post("/incidents/new", {"csrf": csrf, "title": "x", "labels": "not a label"})
    assert bad.headers["Location"] == "/incidents/new"
    resp = await console.post(
        "/incidents/new",
        {
            "csrf": csrf,
            "title": "Customers report failed payments",
            "severity": "P1",
            "policy": "",
            "labels": "service=checkout\nteam=payments",
            "description": "From support",
            "reporter": "",
        },
    )
    assert resp.status == 303
    incident_id = resp.headers["Location"].rsplit("/", 1)[1]
    api = await console.api_incident(incident_id)
    assert api["title"] == "Customers report failed payments"
    assert api["severity"] == "P1"
    assert api["opened_by"] == "alice"
    assert api["alerts"][0]["labels"]["service"] == "checkout"


async def test_oncall_and_reports(console: Console) -> None:
    incident_id = await console.webhook(alert_body())
    await console.login()
    page = f"/incidents/{incident_id}"
    await console.post(f"{page}/ack", {"csrf": await console.csrf(page)})
    status, text = await console.get("/oncall")
    assert status == 200
    assert "primary" in text
    assert "/api/v1/schedules/primary.ics?token=" in text
    status, text = await console.get("/reports")
    assert status == 200
    assert text.count("<svg") == 3
    assert "ack_within" in text


async def test_an_open_console_still_needs_csrf(open_console: Console) -> None:
    incident_id = await open_console.webhook(alert_body())
    page = f"/incidents/{incident_id}"
    status, text = await open_console.get(page)
    assert status == 200
    assert "Open console" in text
    assert (await open_console.post(f"{page}/ack", {})).status == 403
    assert (await open_console.api_incident(incident_id))["status"] == "triggered"
    resp = await open_console.post(f"{page}/ack", {"csrf": await open_console.csrf(page)})
    assert resp.status == 303
    api = await open_console.api_incident(incident_id)
    assert api["status"] == "acknowledged"
    assert api["acknowledged_by"] == "console"
