"""On-call calendar feeds over HTTP, the engine in process against a real redis-server: the token
in the URL is the only credential, and the schedules overview (API auth) hands out working URLs."""

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest
from aiohttp.test_utils import TestClient
from icalendar import Calendar
from pydantic import SecretStr

from engine.api import keys
from engine.app import create_app
from engine.config import Settings
from engine.feeds import feed_path, feed_token
from engine.policy.models import PolicySet
from tests.clock import FakeClock
from tests.integration.test_api import TOKEN, EngineTestServer

pytestmark = pytest.mark.redis
SECRET = b"feed-secret-for-tests-0123456789"
PUBLIC = "https://oncall.example"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NOW_MS = 1_800_000_000_000  # 2027-01-15T08:00:00Z, a Friday

SCHEDULED = PolicySet.model_validate(
    {
        "severities": {"P1": {}},
        "default": {"severity": "P1", "policy": "p"},
        "escalation_policies": {"p": {"levels": [{"after": "0s", "notify": ["schedule:sre-primary"]}]}},
        "users": {name: {"email": f"{name}@example.com"} for name in ("alice", "bob", "carol", "dave")},
        "schedules": {
            "sre-primary": {
                "time_zone": "Europe/Berlin",
                "rotations": [
                    {
                        "participants": ["alice", "bob", "carol"],
                        "shift": "1d",
                        "handoff": "09:00",
                        "start": "2027-01-04",
                    }
                ],
            },
            "leads": {
                "time_zone": "America/New_York",
                "rotations": [
                    {
                        "participants": ["dave", "alice"],
                        "shift": "1w",
                        "handoff": "10:00",
                        "start": "2027-01-04",
                    }
                ],
            },
        },
    }
)


@dataclass
class Rig:
    client: TestClient[Any, Any]
    app: Any


@pytest.fixture
async def rig(redis_url: str) -> AsyncIterator[Rig]:
    settings = Settings(
        auth_token=TOKEN, redis_url=redis_url, public_url=PUBLIC, link_secret=SecretStr(SECRET.decode())
    )
    app = create_app(settings, SCHEDULED, notifiers={}, clock=FakeClock(NOW_MS))
    async with TestClient(EngineTestServer(app)) as client:
        yield Rig(client, app)


def events(ics: bytes) -> list[tuple[str, datetime, datetime]]:
    cal = Calendar.from_ical(ics)
    return [(str(e["SUMMARY"]), e.decoded("DTSTART"), e.decoded("DTEND")) for e in cal.walk("VEVENT")]


async def test_a_schedule_feed_with_its_token(rig: Rig) -> None:
    resp = await rig.client.get(feed_path(SECRET, "schedule", "sre-primary"))
    assert resp.status == 200, await resp.text()
    assert resp.content_type == "text/calendar" and resp.charset == "utf-8"
    assert resp.headers["Cache-Control"] == "private, max-age=300"
    assert resp.headers["Content-Disposition"] == 'inline; filename="sre-primary.ics"'
    ics = await resp.read()
    cal = Calendar.from_ical(ics)
    assert cal["X-WR-CALNAME"] == "On call: sre-primary"
    got = events(ics)
    assert 60 <= len(got) <= 80  # daily shifts over a week back and two months ahead
    assert ("On call: carol (sre-primary)", *_day("2027-01-15")) in got  # on call at NOW_MS


def _day(day: str) -> tuple[datetime, datetime]:
    start = datetime.fromisoformat(f"{day}T08:00").replace(tzinfo=UTC)
    return start, start + timedelta(days=1)


async def test_a_users_feed_spans_schedules(rig: Rig) -> None:
    resp = await rig.client.get(feed_path(SECRET, "user", "alice"))
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Disposition"] == 'inline; filename="alice.ics"'
    summaries = {s for s, _, _ in events(await resp.read())}
    assert summaries == {"On call: alice (sre-primary)", "On call: alice (leads)"}


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/schedules/sre-primary.ics",  # no token
        "/api/v1/schedules/sre-primary.ics?token=",
        "/api/v1/schedules/sre-primary.ics?token="
        + feed_token(SECRET, "schedule", "leads"),  # another feed's
        "/api/v1/schedules/sre-primary.ics?token="
        + feed_token(SECRET, "user", "sre-primary"),  # another kind's
        "/api/v1/schedules/sre-primary.ics?token=" + feed_token(b"other-secret", "schedule", "sre-primary"),
        "/api/v1/schedules/nope.ics?token=wrong",  # the same answer whether the schedule exists or not
        "/api/v1/schedules/nope.ics?token=%C3%A9t%C3%A9",  # not ASCII
        "/api/v1/users/alice.ics?token=" + feed_token(SECRET, "schedule", "alice"),
        "/api/v1/users/alice.ics",
    ],
)
async def test_a_missing_or_wrong_token_is_a_404(rig: Rig, path: str) -> None:
    resp = await rig.client.get(path)
    assert resp.status == 404
    assert (await resp.json())["error"] == "no such calendar feed, or a wrong token"


async def test_a_name_gone_after_a_reload_is_a_404(rig: Rig) -> None:
    path = feed_path(SECRET, "schedule", "leads")
    assert (await rig.client.get(path)).status == 200
    ref = rig.app[keys.policies]
    ref.current = SCHEDULED.model_copy(
        update={"schedules": {"sre-primary": SCHEDULED.schedules["sre-primary"]}}
    )
    resp = await rig.client.get(path)
    assert resp.status == 404
    assert (await resp.json())["error"] == "no such calendar feed, or a wrong token"
    assert (await rig.client.get(feed_path(SECRET, "user", "nobody-at-all"))).status == 404


async def test_the_feeds_need_no_api_credentials_but_the_overview_does(rig: Rig) -> None:
    resp = await rig.client.get("/api/v1/schedules")
    assert resp.status == 401
    assert "Bearer" in resp.headers["WWW-Authenticate"]
    resp = await rig.client.get("/api/v1/schedules", headers={"Authorization": "Bearer wrong"})
    assert resp.status == 401


async def test_the_overview_lists_oncall_and_feed_urls_that_work(rig: Rig) -> None:
    resp = await rig.client.get("/api/v1/schedules", headers=AUTH)
    assert resp.status == 200, await resp.text()
    doc = await resp.json()
    by_name = {s["name"]: s for s in doc["schedules"]}
    assert set(by_name) == {"sre-primary", "leads"}
    primary = by_name["sre-primary"]
    assert primary["oncall"] == ["carol"]
    assert primary["next"][:2] == [
        {"at": "2027-01-16T09:00:00+01:00", "oncall": ["alice"]},
        {"at": "2027-01-17T09:00:00+01:00", "oncall": ["bob"]},
    ]
    assert len(primary["next"]) == 5
    assert by_name["leads"]["oncall"] == ["alice"]
    assert [u["name"] for u in doc["users"]] == ["alice", "bob", "carol", "dave"]
    urls = [s["feed_url"] for s in doc["schedules"]] + [u["feed_url"] for u in doc["users"]]
    for url in urls:
        assert url.startswith(f"{PUBLIC}/api/v1/")
        parts = urlsplit(url)
        feed = await rig.client.get(f"{parts.path}?{parts.query}")
        assert feed.status == 200 and feed.content_type == "text/calendar"
        assert Calendar.from_ical(await feed.read()).walk("VEVENT")  # everyone here has shifts


async def test_without_a_public_url_the_overview_gives_paths(redis_url: str) -> None:
    settings = Settings(redis_url=redis_url, link_secret=SecretStr(SECRET.decode()))  # no API credentials
    app = create_app(settings, SCHEDULED, notifiers={}, clock=FakeClock(NOW_MS))
    async with TestClient(EngineTestServer(app)) as client:
        doc = await (await client.get("/api/v1/schedules")).json()
        url = doc["schedules"][0]["feed_url"]
        assert url == feed_path(SECRET, "schedule", "sre-primary")
        assert (await client.get(url)).status == 200


async def test_a_generated_secret_signs_the_feeds_too(redis_url: str) -> None:
    """Without ESCALATION_LINK_SECRET the engine's random secret (kept in redis) signs them."""
    settings = Settings(redis_url=redis_url)
    app = create_app(settings, SCHEDULED, notifiers={}, clock=FakeClock(NOW_MS))
    async with TestClient(EngineTestServer(app)) as client:
        doc = await (await client.get("/api/v1/schedules")).json()
        url = doc["users"][0]["feed_url"]
        assert (await client.get(url)).status == 200
        assert (await client.get(url.replace("token=", "token=x"))).status == 404
