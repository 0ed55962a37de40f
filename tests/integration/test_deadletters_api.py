"""GET /api/v1/deadletters and POST /api/v1/deadletters/{id}/redrive against a running engine."""

import pytest

from engine.api import keys as app_keys
from engine.store import keys
from tests.integration.test_api import TOKEN, Engine, body, engine, wait_for
from tests.sinks import Reply

__all__ = ["engine"]
pytestmark = pytest.mark.redis
AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def test_a_rejected_page_is_listed_and_redriven_once(engine: Engine) -> None:
    engine.pd.script(
        Reply(400, {"status": "invalid event", "message": "Event object is invalid", "errors": ["x"]})
    )
    incident_id = (await (await engine.post(body("01-firing-single.json"))).json())["incidents"][0]
    await wait_for(lambda: len(engine.pd.requests) == 1)

    async def listed() -> list[dict[str, object]]:
        resp = await engine.client.get("/api/v1/deadletters")
        assert resp.status == 200
        found: list[dict[str, object]] = (await resp.json())["dead_letters"]
        return found

    for _ in range(100):
        if found := await listed():
            break
    [dead] = found
    assert dead["incident_id"] == incident_id and dead["channel"] == "pagerduty"
    assert (dead["action"], dead["target"], dead["address"], dead["attempts"]) == (
        "trigger",
        "pagerduty:platform",
        "platform",
        1,
    )
    assert "Event object is invalid" in str(dead["reason"])

    url = f"/api/v1/deadletters/{dead['id']}/redrive"
    assert (await engine.client.post(url)).status == 401  # a write: authenticated
    resp = await engine.client.post(url, headers=AUTH)
    assert resp.status == 202, await resp.text()
    assert (await resp.json())["queued"] == "trigger to pagerduty:platform via pagerduty:platform"
    await wait_for(lambda: len(engine.pd.events) == 1)
    assert await listed() == []
    again = await engine.client.post(url, headers=AUTH)
    assert again.status == 404 and "re-driven already" in (await again.json())["error"]
    detail = await (await engine.client.get(f"/api/v1/incidents/{incident_id}")).json()
    kinds = [e["kind"] for e in detail["timeline"]]
    assert (
        kinds.index("dead_letter") < kinds.index("redriven") < len(kinds) - 1 - kinds[::-1].index("delivered")
    )


async def test_unknown_malformed_and_unreadable_dead_letters(engine: Engine) -> None:
    for bad in ("nope", "99-1-0", "3-not-an-id", "3-"):
        resp = await engine.client.post(f"/api/v1/deadletters/{bad}/redrive", headers=AUTH)
        assert resp.status == 404, bad
    store = engine.client.app[app_keys.store]
    await store.client.xadd(keys.dead_letters(3), {"m": b"\xff garbage", "reason": "unreadable", "at_ms": 1})
    [dead] = (await (await engine.client.get("/api/v1/deadletters")).json())["dead_letters"]
    assert dead["raw"] and "incident_id" not in dead
    resp = await engine.client.post(f"/api/v1/deadletters/{dead['id']}/redrive", headers=AUTH)
    assert resp.status == 422 and "cannot be re-driven" in (await resp.json())["error"]
    bad_limit = await engine.client.get("/api/v1/deadletters?limit=0")
    assert bad_limit.status == 400
