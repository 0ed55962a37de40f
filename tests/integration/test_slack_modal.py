"""The page's "Post update" button opens the status-update modal (views.open at the Slack sink),
and its signed submission posts UPDATE #n; strangers and bad input change nothing."""

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from tests.integration.test_slack_interactions import ALICE, SECRET, STRANGER, Slack, _engine
from tests.slack_sink import TOKEN as SLACK_TOKEN
from tests.slack_sink import SlackSink

pytestmark = pytest.mark.redis


@pytest.fixture
async def modal(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[Slack, SlackSink]]:
    secret_file = tmp_path / "slack-signing-secret"
    secret_file.write_text(SECRET)
    monkeypatch.setenv("SLACK_MODAL_TEST_TOKEN", SLACK_TOKEN)
    async with SlackSink() as api:
        settings = {
            "signing_secret_file": str(secret_file),
            "token_env": "SLACK_MODAL_TEST_TOKEN",
            "api_url": api.url,
        }
        async for engine in _engine(redis_url, settings):
            yield engine, api


def submission(incident_id: str, status: str, message: str, user: str = ALICE) -> bytes:
    values: dict[str, Any] = {
        "status": {"status": {"type": "static_select", "selected_option": {"value": status}}},
        "message": {"message": {"type": "plain_text_input", "value": message}},
    }
    payload = {
        "type": "view_submission",
        "user": {"id": user},
        "view": {
            "callback_id": "incident_status",
            "private_metadata": incident_id,
            "state": {"values": values},
        },
    }
    return urlencode({"payload": json.dumps(payload)}).encode()


async def test_post_update_opens_the_modal_and_its_submission_posts_update_1(
    modal: tuple[Slack, SlackSink],
) -> None:
    engine, api = modal
    incident_id = await engine.incident()
    raw = engine.click(incident_id, "incident_update")
    assert (await engine.post(raw, engine.sign(raw))).status == 200
    [opened] = api.calls["views.open"]
    assert opened["view"]["private_metadata"] == incident_id and opened["trigger_id"]
    assert [o["value"] for o in opened["view"]["blocks"][0]["element"]["options"]] == [
        "investigating",
        "identified",
        "monitoring",
        "resolved",
    ]
    raw = submission(incident_id, "identified", "Bad deploy, rolling back")
    resp = await engine.post(raw, engine.sign(raw))
    assert resp.status == 200 and await resp.text() == ""  # an empty 200 closes the modal
    state = await engine.state(incident_id)
    assert [(u["number"], u["status"], u["by"]) for u in state["updates"]] == [(1, "identified", "alice")]


async def test_strangers_bad_input_and_forgeries_post_nothing(modal: tuple[Slack, SlackSink]) -> None:
    engine, api = modal
    incident_id = await engine.incident()
    raw = engine.click(incident_id, "incident_update", user=STRANGER)
    assert (await engine.post(raw, engine.sign(raw))).status == 200
    assert api.calls["views.open"] == []  # no modal for someone not on the policy
    for status, message, user, block in [
        ("identified", "x", STRANGER, "message"),
        ("done", "x", ALICE, "status"),
        ("identified", "   ", ALICE, "message"),
    ]:
        raw = submission(incident_id, status, message, user)
        answer = await (await engine.post(raw, engine.sign(raw))).json()
        assert answer["response_action"] == "errors" and block in answer["errors"], answer
    raw = submission(incident_id, "identified", "forged")
    assert (await engine.post(raw, engine.sign(raw, secret="not-the-secret"))).status == 401
    assert (await engine.state(incident_id))["updates"] == []
