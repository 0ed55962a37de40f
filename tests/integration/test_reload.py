"""Hot reload in process: a good set swaps atomically and changes who is paged next (new
notifiers when channel settings change); a broken set is refused with file:line, the running
set kept and the engine still paging."""

from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry

from engine.app import create_app
from engine.config import Settings
from engine.policy.loader import load_policies
from tests.integration.test_api import ROUTING_KEY, TOKEN, EngineTestServer, body, wait_for
from tests.sinks import PagerDutySink

pytestmark = pytest.mark.redis
AUTH = {"Authorization": f"Bearer {TOKEN}"}
POLICY = """
severities:
  P1: {{description: Major}}
default: {{severity: P1, policy: page}}
escalation_policies:
  page:
    levels:
      - after: 0s
        notify: [pagerduty:{service}]
channels:
  pagerduty:
    url: {url}
    services:
      {service}: {{routing_key_env: RELOAD_PD_KEY}}
"""


def write(d: Path, url: str, service: str) -> None:
    (d / "policy.yaml").write_text(POLICY.format(url=url, service=service))


async def test_reload_swaps_good_policies_and_refuses_broken_ones(
    tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RELOAD_PD_KEY", ROUTING_KEY)
    registry = CollectorRegistry()
    async with PagerDutySink() as first, PagerDutySink() as second:
        write(tmp_path, first.url, "one")
        settings = Settings(redis_url=redis_url, auth_token=TOKEN, policies=tmp_path, delivery_poll_s=0.2)
        app = create_app(settings, load_policies(tmp_path), registry=registry)
        async with TestClient(EngineTestServer(app)) as client:

            async def page(group: str) -> None:
                payload = body("01-firing-single.json") | {"groupKey": group}
                resp = await client.post("/api/v1/alertmanager", json=payload, headers=AUTH)
                assert resp.status == 200, await resp.text()

            await page("g1")
            await wait_for(lambda: len(first.events) == 1)

            write(tmp_path, second.url, "two")  # another PagerDuty endpoint and service
            assert (await client.post("/-/reload")).status == 401
            resp = await client.post("/-/reload", headers=AUTH)
            assert resp.status == 200 and "1 severities" in (await resp.json())["policies"]
            await page("g2")
            await wait_for(lambda: len(second.events) == 1)  # new notifiers, new route
            assert len(first.events) == 1

            (tmp_path / "policy.yaml").write_text("severities: [not, a, map\n")
            resp = await client.post("/-/reload", headers=AUTH)
            assert resp.status == 422
            err = await resp.json()
            assert err["error"] == "policies refused; the running set is kept"
            assert err["detail"][0].startswith(f"{tmp_path / 'policy.yaml'}:")
            assert registry.get_sample_value("escalation_config_last_reload_successful") == 0
            await page("g3")  # still paging, under the last good set
            await wait_for(lambda: len(second.events) == 2)

            write(tmp_path, second.url, "two")
            assert (await client.post("/-/reload", headers=AUTH)).status == 200
            assert registry.get_sample_value("escalation_config_last_reload_successful") == 1
