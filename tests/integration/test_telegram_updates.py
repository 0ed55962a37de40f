"""POST /api/v1/telegram/updates against the engine in process, a real redis-server and a Telegram sink."""

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry

from engine.api import actions
from engine.api import telegram as telegram_api
from engine.app import create_app
from engine.config import Settings
from engine.notifiers.telegram import TelegramNotifier
from engine.policy.models import PolicySet
from tests.chat_sinks import BOT_TOKEN, TelegramSink
from tests.integration.test_api import TOKEN, EngineTestServer, body, wait_for

pytestmark = pytest.mark.redis
SECRET = "tg-webhook-secret_1"
ALICE = 1001
PATH = "/api/v1/telegram/updates"


def policies(api_url: str) -> PolicySet:
    return PolicySet.model_validate(
        {
            "severities": {"P0": {}, "P1": {}, "P2": {}, "P3": {}},
            "default": {"severity": "P1", "policy": "main"},
            "escalation_policies": {"main": {"levels": [{"after": "0s", "notify": ["user:alice"]}]}},
            "users": {"alice": {"telegram": str(ALICE)}},
            "channels": {
                "telegram": {
                    "api_url": api_url,
                    "bot_token_env": "TG_BOT_TOKEN",
                    "secret_token_env": "TG_SECRET",
                }
            },
        }
    )


class Bot:
    def __init__(self, client: TestClient[Any, Any], tg: TelegramSink) -> None:
        self.client = client
        self.tg = tg
        self._update_id = 0

    async def page(self) -> str:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        resp = await self.client.post(
            "/api/v1/alertmanager", json=body("01-firing-single.json"), headers=headers
        )
        assert resp.status == 200, await resp.text()
        incident_id: str = (await resp.json())["incidents"][0]
        return incident_id

    async def incident(self, incident_id: str) -> dict[str, Any]:
        resp = await self.client.get(f"/api/v1/incidents/{incident_id}")
        assert resp.status == 200
        view: dict[str, Any] = await resp.json()
        return view

    def update(self, data: str, from_id: int = ALICE, query_id: str = "q1") -> dict[str, Any]:
        self._update_id += 1
        return {
            "update_id": self._update_id,
            "callback_query": {
                "id": query_id,
                "from": {"id": from_id, "is_bot": False, "first_name": "Alice"},
                "chat_instance": "-77",
                "data": data,
                "message": {"message_id": 101, "date": 0, "chat": {"id": from_id, "type": "private"}},
            },
        }

    async def click(
        self, payload: object, secret: str | None = SECRET, raw: bytes | None = None
    ) -> aiohttp.ClientResponse:
        headers = {"Content-Type": "application/json"}
        if secret is not None:
            headers["X-Telegram-Bot-Api-Secret-Token"] = secret
        data = raw if raw is not None else json.dumps(payload).encode()
        return await self.client.post(PATH, data=data, headers=headers)

    def answers(self) -> list[dict[str, Any]]:
        return self.tg.calls("answerCallbackQuery")


@pytest.fixture
async def bot(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Bot]:
    monkeypatch.setenv("TG_BOT_TOKEN", BOT_TOKEN)
    monkeypatch.setenv("TG_SECRET", SECRET)
    settings = Settings(auth_token=TOKEN, delivery_poll_s=0.2, redis_url=redis_url)
    async with TelegramSink() as tg, aiohttp.ClientSession() as session:
        notifiers = {"telegram": TelegramNotifier(session, tg.url, BOT_TOKEN)}
        app = create_app(settings, policies(tg.url), notifiers=notifiers, registry=CollectorRegistry())
        async with TestClient(EngineTestServer(app)) as client:
            yield Bot(client, tg)


async def test_a_known_user_acknowledges_with_the_button(bot: Bot) -> None:
    incident_id = await bot.page()

    resp = await bot.click(bot.update(f"ack:{incident_id}"))

    assert resp.status == 200
    view = await bot.incident(incident_id)
    assert view["status"] == "acknowledged" and view["acknowledged_by"] == "alice"
    [answer] = bot.answers()
    assert answer["callback_query_id"] == "q1"
    assert answer["text"] == f"Acknowledged incident {incident_id}"
    assert answer["show_alert"] is False


async def test_resolve_button(bot: Bot) -> None:
    incident_id = await bot.page()

    assert (await bot.click(bot.update(f"resolve:{incident_id}"))).status == 200

    view = await bot.incident(incident_id)
    assert view["status"] == "resolved" and view["resolved_by"] == "alice"
    assert bot.answers()[0]["text"] == f"Resolved incident {incident_id}"


@pytest.mark.parametrize("secret", [None, "", "wrong-secret", SECRET + "x"])
async def test_a_missing_or_wrong_secret_changes_nothing(bot: Bot, secret: str | None) -> None:
    incident_id = await bot.page()

    resp = await bot.click(bot.update(f"ack:{incident_id}"), secret=secret)

    assert resp.status == 401
    assert (await resp.json())["detail"] is None
    assert (await bot.incident(incident_id))["status"] == "triggered"
    assert bot.answers() == []


async def test_an_unknown_user_is_told_so_and_nothing_changes(bot: Bot) -> None:
    incident_id = await bot.page()

    assert (await bot.click(bot.update(f"ack:{incident_id}", from_id=666))).status == 200

    assert (await bot.incident(incident_id))["status"] == "triggered"
    [answer] = bot.answers()
    assert answer["text"] == "You are not on this policy" and answer["show_alert"] is True


async def test_a_replayed_update_does_not_act_twice(bot: Bot) -> None:
    incident_id = await bot.page()
    update = bot.update(f"ack:{incident_id}")

    await bot.click(update)
    first = await bot.incident(incident_id)
    await bot.click(update)

    second = await bot.incident(incident_id)
    assert second["acknowledged_at"] == first["acknowledged_at"]
    assert second["acknowledged_by"] == "alice"
    assert [a["text"] for a in bot.answers()] == [
        f"Acknowledged incident {incident_id}",
        "Already acknowledged by alice.",
    ]


async def test_buttons_for_gone_or_unknown_things_are_answered(bot: Bot) -> None:
    incident_id = await bot.page()
    await bot.click(bot.update(f"resolve:{incident_id}"))

    for data in (f"ack:{incident_id}", "ack:0-000000000000", "ack:not-an-id", "snooze:1", "junk"):
        assert (await bot.click(bot.update(data))).status == 200

    assert [a["text"] for a in bot.answers()[1:]] == [
        "Already resolved by alice.",
        "There is no incident 0-000000000000.",
        "There is no incident not-an-id.",
        "This button is not one of the engine's.",
        "This button is not one of the engine's.",
    ]


async def test_other_updates_are_ignored(bot: Bot) -> None:
    message = {"update_id": 1, "message": {"message_id": 1, "chat": {"id": ALICE}, "text": "/start"}}

    resp = await bot.click(message)

    assert resp.status == 200 and (await resp.json())["status"] == "ignored"
    assert bot.answers() == []


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b"{not json", "not valid JSON"),
        (b"", "empty body"),
        (b"[1, 2]", "JSON object"),
        (b'{"callback_query": "x"}', "callback_query"),
        (b'{"callback_query": {"from": {"id": 1}, "data": "ack:x"}}', "callback_query.id"),
        (b'{"callback_query": {"id": "q", "from": {"id": "1"}, "data": "ack:x"}}', "callback_query.from.id"),
    ],
)
async def test_malformed_updates_are_400_naming_the_problem(bot: Bot, raw: bytes, words: str) -> None:
    resp = await bot.click(None, raw=raw)

    assert resp.status == 400
    assert words in (await resp.json())["error"]


async def test_a_slow_action_is_answered_in_the_background(bot: Bot, monkeypatch: pytest.MonkeyPatch) -> None:
    incident_id = await bot.page()
    decide = telegram_api._decide

    async def slow(app: web.Application, from_id: str, data: str) -> tuple[str, bool]:
        await asyncio.sleep(0.5)
        return await decide(app, from_id, data)

    monkeypatch.setattr(actions, "CHAT_ANSWER_WITHIN_S", 0.05)
    monkeypatch.setattr(telegram_api, "_decide", slow)

    started = time.monotonic()
    resp = await bot.click(bot.update(f"ack:{incident_id}"))

    assert resp.status == 200 and (await resp.json())["status"] == "accepted"
    assert time.monotonic() - started < 0.4
    assert bot.answers() == []
    await wait_for(lambda: len(bot.answers()) == 1)
    assert (await bot.incident(incident_id))["acknowledged_by"] == "alice"


async def test_secret_problems_are_clear_errors(bot: Bot, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TG_SECRET")

    resp = await bot.click(bot.update("ack:x"))

    assert resp.status == 503
    assert "TG_SECRET" in (await resp.json())["error"]


async def test_not_configured_is_404(redis_url: str) -> None:
    settings = Settings(auth_token=TOKEN, redis_url=redis_url)
    bare = PolicySet.model_validate(
        {
            "severities": {"P1": {}},
            "default": {"severity": "P1", "policy": "main"},
            "escalation_policies": {"main": {"levels": [{"after": "0s", "notify": ["webhook:x"]}]}},
            "channels": {"webhook": {"endpoints": {"x": {"url": "http://127.0.0.1:9/"}}}},
        }
    )
    app = create_app(settings, bare, notifiers={}, registry=CollectorRegistry())
    async with TestClient(EngineTestServer(app)) as client:
        resp = await client.post(PATH, json={}, headers={"X-Telegram-Bot-Api-Secret-Token": SECRET})
        assert resp.status == 404
        assert "not configured" in (await resp.json())["error"]


async def test_through_delivery_the_click_edits_the_page_and_replies_under_it(bot: Bot) -> None:
    """End to end: needs the delivery loop to pass thread references back to the notifier."""
    incident_id = await bot.page()
    await wait_for(lambda: bool(bot.tg.calls("sendMessage")))
    [page] = bot.tg.calls("sendMessage")
    assert page["chat_id"] == ALICE and page["reply_markup"]["inline_keyboard"][0][0]["text"] == "Acknowledge"

    await bot.click(bot.update(f"ack:{incident_id}"))

    await wait_for(lambda: len(bot.tg.calls("sendMessage")) == 2)
    [edit] = bot.tg.calls("editMessageText")
    assert edit["message_id"] == 101 and "Acknowledged by alice" in edit["text"]
    assert [b["text"] for b in edit["reply_markup"]["inline_keyboard"][0]] == ["Resolve"]
    assert bot.tg.calls("sendMessage")[1]["reply_parameters"]["message_id"] == 101
