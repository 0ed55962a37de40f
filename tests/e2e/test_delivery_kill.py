"""An engine process SIGKILLed while a page is in flight: another process delivers it (at least
once: the receiver sees the same dedup key again, and PagerDuty keeps one incident)."""

import asyncio
import json
from pathlib import Path

import pytest

from tests.e2e.harness import EngineProcess, wait_for
from tests.e2e.test_alertmanager_flow import sinks, write_policy
from tests.sinks import PagerDutySink, Reply, WebhookSink

__all__ = ["sinks"]
pytestmark = pytest.mark.e2e


async def test_a_page_in_flight_when_its_engine_is_killed_is_sent_by_the_next(
    tmp_path: Path, sinks: tuple[PagerDutySink, WebhookSink]
) -> None:
    pd, hook = sinks
    policies = write_policy(tmp_path, pd, hook, "1h", "2h")
    env = {"ESCALATION_DELIVERY_CLAIM_IDLE_S": "2"}
    first = EngineProcess(policies, tmp_path / "data", tmp_path / "a.log", env)
    pd.script(Reply(500, delay_s=30))  # the first attempt hangs: the engine is killed mid-send
    await first.start()
    try:
        body = json.loads((Path(__file__).parent.parent / "fixtures" / "01-firing-single.json").read_text())
        await first.call("POST", "/api/v1/alertmanager", json=body)
        await wait_for(lambda: len(pd.requests) == 1, 10, "the page on its way")
        first.kill()
    finally:
        first.stop()
    assert pd.events == []  # never answered: from the engine's side, not sent
    second = EngineProcess(policies, tmp_path / "data", tmp_path / "b.log", env)
    await second.start()
    try:
        await wait_for(lambda: len(pd.events) == 1, 15, "the page, claimed and sent by the new process")
        await asyncio.sleep(2)
        assert len(pd.events) == 1
        assert len({r.json["dedup_key"] for r in pd.requests}) == 1  # the same key both times
        [incident] = (await second.call("GET", "/api/v1/incidents"))["incidents"]
        detail = await second.call("GET", f"/api/v1/incidents/{incident['id']}")
        assert [e["kind"] for e in detail["timeline"]].count("delivered") == 1
    finally:
        second.stop()
