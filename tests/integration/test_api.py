"""The HTTP API in-process (create_app) against a real redis-server and a local PagerDuty sink."""

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from aiohttp.web_runner import BaseRunner
from prometheus_client import CollectorRegistry

from engine.api.body import SERVER_ARGS
from engine.app import create_app
from engine.config import Settings
from engine.notifiers import PagerDutyNotifier
from engine.policy.models import PolicySet
from tests.sinks import PagerDutySink

FIXTURES = Path(__file__).parent.parent / "fixtures"
TOKEN = "s3cr3t-token"
ROUTING_KEY = "0123456789abcdef0123456789abcdef"
pytestmark = pytest.mark.redis

POLICIES = PolicySet.model_validate(
    {
        "severities": {"P0": {"description": "Complete outage"}, "P1": {}, "P2": {}, "P3": {}},
        "rules": [
            {"name": "critical", "matchers": ['severity="critical"'], "severity": "P0", "policy": "crit"},
        ],
        "default": {"severity": "P3", "policy": "crit"},
        "escalation_policies": {
            "crit": {
                "levels": [
                    {"after": "0s", "notify": ["pagerduty:platform"]},
                    {"after": "15m", "notify": ["pagerduty:platform"]},
                ]
            }
        },
        "channels": {"pagerduty": {"services": {"platform": {"routing_key_env": "PD_KEY"}}}},
    }
)


class EngineTestServer(TestServer):
    """TestServer with the server arguments `serve` uses (the engine decompresses bodies itself)."""

    async def _make_runner(self, **kwargs: Any) -> BaseRunner:
        return await super()._make_runner(**SERVER_ARGS, **kwargs)


def body(name: str) -> dict[str, Any]:
    raw: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return raw


class Engine:
    def __init__(self, client: TestClient[Any, Any], pd: PagerDutySink, registry: CollectorRegistry) -> None:
        self.client = client
        self.pd = pd
        self.registry = registry

    async def post(self, payload: object, token: str | None = TOKEN, **kw: Any) -> aiohttp.ClientResponse:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        return await self.client.post("/api/v1/alertmanager", data=data, headers=headers, **kw)


async def wait_for(check: Callable[[], bool], timeout_s: float = 5.0) -> None:
    for _ in range(int(timeout_s / 0.02)):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


@pytest.fixture
async def engine(redis_url: str) -> AsyncIterator[Engine]:
    settings = Settings(auth_token=TOKEN, max_body_bytes=64 * 1024, delivery_poll_s=0.2, redis_url=redis_url)
    registry = CollectorRegistry()
    async with PagerDutySink() as pd, aiohttp.ClientSession() as session:
        notifiers = {"pagerduty": PagerDutyNotifier(session, pd.url, {"platform": ROUTING_KEY})}
        app = create_app(settings, POLICIES, notifiers=notifiers, registry=registry)
        async with TestClient(EngineTestServer(app)) as client:
            yield Engine(client, pd, registry)


@pytest.mark.parametrize(
    "name",
    [
        "01-firing-single.json",
        "02-firing-group.json",
        "03-resolved.json",
        "04-mixed-firing-resolved.json",
        "05-truncated.json",
        "06-firing-single-v0.34-format.json",
    ],
)
async def test_every_alertmanager_example_is_accepted(engine: Engine, name: str) -> None:
    resp = await engine.post(body(name))
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["status"] == "ok"


async def test_the_byte_exact_wire_body_is_accepted(engine: Engine) -> None:
    resp = await engine.post((FIXTURES / "raw-body-05-truncated.json").read_bytes())
    assert resp.status == 200
    assert (await resp.json())["truncated_alerts"] == 3


@pytest.mark.parametrize(
    ("mutate", "status", "field"),
    [
        (lambda b: b.pop("alerts"), 422, "alerts"),
        (lambda b: b.update(version="3"), 422, "version"),
        (lambda b: b["alerts"][0].update(startsAt="yesterday"), 422, "alerts[0].startsAt"),
        (lambda b: b["alerts"][0].update(status="burning"), 422, "alerts[0].status"),
        (lambda b: b["alerts"][0]["labels"].update(team=7), 422, "alerts[0].labels.team"),
    ],
)
async def test_bad_payloads_get_an_error_naming_the_field(
    engine: Engine, mutate: Callable[[dict[str, Any]], object], status: int, field: str
) -> None:
    b = body("01-firing-single.json")
    mutate(b)
    resp = await engine.post(b)
    assert resp.status == status
    err = await resp.json()
    assert err["error"].startswith("invalid Alertmanager payload")
    assert field in [d["field"] for d in err["detail"]]


async def test_malformed_json_is_a_400(engine: Engine) -> None:
    resp = await engine.post(b'{"version": "4",')
    assert resp.status == 400
    assert "not valid JSON" in (await resp.json())["error"]


async def test_auth_is_required_when_configured(engine: Engine) -> None:
    assert (await engine.post(body("01-firing-single.json"), token=None)).status == 401
    resp = await engine.post(body("01-firing-single.json"), token="wrong")
    assert resp.status == 401 and (await resp.json())["error"] == "missing or bad credentials"
    assert (await engine.client.post("/api/v1/incidents/0-x/ack")).status == 401


async def test_basic_auth_works_too(redis_url: str) -> None:
    settings = Settings(auth_basic_user="am", auth_basic_password="pw", redis_url=redis_url)
    app = create_app(settings, POLICIES, notifiers={})
    async with TestClient(EngineTestServer(app)) as client:
        good = {"Authorization": "Basic " + base64.b64encode(b"am:pw").decode()}
        bad = {"Authorization": "Basic " + base64.b64encode(b"am:nope").decode()}
        data = json.dumps(body("01-firing-single.json"))
        assert (await client.post("/api/v1/alertmanager", data=data, headers=good)).status == 200
        assert (await client.post("/api/v1/alertmanager", data=data, headers=bad)).status == 401


async def test_an_oversized_body_is_a_413(engine: Engine) -> None:
    b = body("01-firing-single.json")
    b["alerts"][0]["annotations"]["description"] = "x" * 100_000
    resp = await engine.post(b)
    assert resp.status == 413
    assert "error" in await resp.json()


async def test_page_ack_and_resolve_reach_pagerduty(engine: Engine) -> None:
    resp = await engine.post(body("02-firing-group.json"))
    incident_id = (await resp.json())["incidents"][0]
    await wait_for(lambda: len(engine.pd.events) == 1)
    trigger = engine.pd.events[0]
    assert trigger["event_action"] == "trigger" and trigger["dedup_key"] == incident_id
    assert trigger["routing_key"] == ROUTING_KEY

    listed = await (await engine.client.get("/api/v1/incidents?status=triggered")).json()
    assert [i["id"] for i in listed["incidents"]] == [incident_id]

    ack = await engine.client.post(
        f"/api/v1/incidents/{incident_id}/ack",
        json={"by": "alice", "note": "looking"},
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert ack.status == 200 and (await ack.json())["status"] == "acknowledged"
    await wait_for(lambda: len(engine.pd.events) == 2)
    assert engine.pd.events[1] == {
        "routing_key": ROUTING_KEY,
        "dedup_key": incident_id,
        "event_action": "acknowledge",
    }

    resolved = body("02-firing-group.json")
    for a in resolved["alerts"]:
        a["status"], a["endsAt"] = "resolved", "2026-11-23T18:00:00Z"
    assert (await engine.post(resolved)).status == 200
    await wait_for(lambda: len(engine.pd.events) == 3)
    assert engine.pd.events[2]["event_action"] == "resolve"

    view = await (await engine.client.get(f"/api/v1/incidents/{incident_id}")).json()
    assert view["status"] == "resolved" and view["acknowledged_by"] == "alice"
    kinds = [e["kind"] for e in view["timeline"]]
    assert kinds[:3] == ["opened", "paged", "delivered"]
    assert "acknowledged" in kinds and "resolved" in kinds and kinds.count("delivered") == 3
    assert view["time_to_acknowledge_s"] is not None and view["time_to_resolve_s"] is not None


async def test_unknown_incident_and_action(engine: Engine) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert (await engine.client.get("/api/v1/incidents/0-nothing")).status == 404
    assert (await engine.client.get("/api/v1/incidents/garbage")).status == 404
    resp = await engine.post(body("01-firing-single.json"))
    incident_id = (await resp.json())["incidents"][0]
    bad = await engine.client.post(f"/api/v1/incidents/{incident_id}/explode", headers=auth)
    assert bad.status == 404 and "unknown action" in (await bad.json())["error"]
    snooze = await engine.client.post(
        f"/api/v1/incidents/{incident_id}/snooze", json={"duration": "soon"}, headers=auth
    )
    assert snooze.status == 422 and "duration" in (await snooze.json())["error"]


async def test_metrics_health_and_readiness(engine: Engine) -> None:
    await engine.post(body("01-firing-single.json"))
    await engine.post(body("01-firing-single.json"))
    assert (await engine.client.get("/-/healthy")).status == 200
    assert (await engine.client.get("/-/ready")).status == 200
    text = await (await engine.client.get("/metrics")).text()
    assert 'escalation_webhook_requests_total{code="200"} 2.0' in text
    assert 'escalation_alerts_received_total{status="firing"} 2.0' in text
    assert "escalation_duplicate_alerts_total 1.0" in text
    assert 'escalation_incidents_opened_total{severity="P0"} 1.0' in text


async def test_redis_down_is_a_503_and_recovers(tmp_path: Path) -> None:
    from tests.servers import RedisServer

    # persistent, as the embedded server is: what was accepted must survive the restart
    with RedisServer(extra_args=("--appendonly", "yes", "--appendfsync", "always")) as server:
        app = create_app(Settings(redis_url=server.url), POLICIES, notifiers={})
        async with TestClient(EngineTestServer(app)) as client:
            data = json.dumps(body("01-firing-single.json"))
            assert (await client.post("/api/v1/alertmanager", data=data)).status == 200
            server.stop()
            resp = await client.post("/api/v1/alertmanager", data=data)
            assert resp.status == 503, await resp.text()
            assert "store unavailable" in (await resp.json())["error"]
            assert resp.headers["Retry-After"] == "5"  # a client that honours it backs off
            assert (await client.get("/-/ready")).status == 503
            assert (await client.get("/api/v1/incidents")).status == 503
            server.start()
            resp = await client.post("/api/v1/alertmanager", data=data)
            assert resp.status == 200  # nothing accepted earlier was lost: it is a duplicate now
            assert (await resp.json())["duplicates"] == 1


async def test_hostile_inputs_get_json_4xx_not_500(engine: Engine) -> None:
    resp = await engine.client.post(
        "/api/v1/alertmanager", data=b"{}", headers={"Authorization": "Bearer \u00e9t\u00e9"}
    )
    assert resp.status == 401 and resp.content_type == "application/json"
    resp = await engine.post(b"[" * 5000)
    assert resp.status == 400 and "nested" in (await resp.json())["error"]
    incident_id = (await (await engine.post(body("01-firing-single.json"))).json())["incidents"][0]
    auth = {"Authorization": f"Bearer {TOKEN}"}
    url = f"/api/v1/incidents/{incident_id}/snooze"
    resp = await engine.client.post(url, json={"duration": "10000y"}, headers=auth)
    assert resp.status == 422
    resp = await engine.client.post(url, json=["not", "an", "object"], headers=auth)
    assert resp.status == 400
    assert (await engine.client.get(f"/api/v1/incidents/{incident_id}")).status == 200


async def test_the_app_takes_a_store_and_leaves_it_open(redis_url: str) -> None:
    from engine.store.connect import connect
    from engine.store.redis import RedisStore

    store = RedisStore(await connect(redis_url))
    try:
        app = create_app(Settings(redis_url="redis://127.0.0.1:1"), POLICIES, store=store, notifiers={})
        async with TestClient(EngineTestServer(app)) as client:
            resp = await client.post("/api/v1/alertmanager", data=json.dumps(body("01-firing-single.json")))
            assert resp.status == 200
            [incident_id] = (await resp.json())["incidents"]
        inc = await store.load(incident_id)  # the given store, still open after the app stopped
        assert inc is not None and inc.status.value == "triggered"
    finally:
        await store.close()
