"""SIGHUP on `serve` reloads the policies: the next page follows the new file."""

import json
import signal
from pathlib import Path

import aiohttp
import pytest

from tests.e2e.harness import ROUTING_KEY, TOKEN, EngineProcess, wait_for
from tests.integration.test_reload import write
from tests.sinks import PagerDutySink

pytestmark = pytest.mark.e2e
FIXTURE = Path(__file__).parent.parent / "fixtures" / "01-firing-single.json"


async def test_sighup_reloads_the_policies_of_a_running_engine(tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    async with PagerDutySink() as first, PagerDutySink() as second:
        write(policies, first.url, "one")
        env = {"RELOAD_PD_KEY": ROUTING_KEY}
        engine = EngineProcess(policies, tmp_path / "data", tmp_path / "engine.log", env)
        await engine.start()
        try:
            async with aiohttp.ClientSession() as session:

                async def page(group: str) -> None:
                    payload = json.loads(FIXTURE.read_text()) | {"groupKey": group}
                    url = f"{engine.url}/api/v1/alertmanager"
                    async with session.post(
                        url, json=payload, headers={"Authorization": f"Bearer {TOKEN}"}
                    ) as r:
                        assert r.status == 200

                await page("g1")
                await wait_for(lambda: len(first.events) == 1, 10, "the first page")
                write(policies, second.url, "two")
                assert engine.proc is not None
                engine.proc.send_signal(signal.SIGHUP)
                await wait_for(lambda: "policies_reloaded" in engine.log_text(), 10, "the reload")
                await page("g2")
                await wait_for(lambda: len(second.events) == 1, 10, "the page under the new policies")
                assert len(first.events) == 1
        finally:
            engine.stop()
