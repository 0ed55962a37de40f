import json
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest

from engine.errors import PermanentDeliveryError, RetryableDeliveryError
from engine.events import Action
from engine.messages import AlertSummary, Message
from engine.notifiers import factory
from engine.notifiers.telegram import TelegramNotifier, build, message_text
from engine.policy.channels import TelegramChannel
from tests.chat_sinks import BOT_TOKEN, TelegramSink, telegram_error, telegram_html_problems, visible_text
from tests.sinks import Reply, refused_url

CHAT = 4242

PAGE = Message(
    action=Action.TRIGGER,
    incident_id="3-a1b2c3d4e5f6",
    title="[P1] checkout <api> & payments",
    body="Status: Triggered\nerror ratio > 5% & rising <fast>",
    severity="P1",
    severity_rank=1,
    status="triggered",
    level=0,
    target="user:alice",
    address=str(CHAT),
    labels={"alertname": "HighErrorRate"},
    alerts=(
        AlertSummary(
            fingerprint="ff00",
            status="firing",
            labels={"alertname": "HighErrorRate"},
            annotations={"runbook_url": "https://runbooks.example/checkout?a=1&b=2"},
            starts_at="2026-11-23T10:00:00Z",
        ),
    ),
    triggered_at="2026-11-23T10:00:05Z",
    incident_url="https://esc.example/api/v1/incidents/3-a1b2c3d4e5f6",
)
ACK = replace(PAGE, action=Action.ACKNOWLEDGE, status="acknowledged", actor="alice", acknowledged_by="alice")
RESOLVED = replace(
    PAGE, action=Action.RESOLVE, status="resolved", actor="bob", acknowledged_by="alice", resolved_by="bob"
)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
async def tg() -> AsyncIterator[TelegramSink]:
    async with TelegramSink() as s:
        yield s


def notifier(
    session: aiohttp.ClientSession, url: str, token: str | Exception | None = BOT_TOKEN
) -> TelegramNotifier:
    return TelegramNotifier(session, url, token, timeout_s=1.5)


async def test_first_page_is_one_html_message_with_both_buttons(
    session: aiohttp.ClientSession, tg: TelegramSink
) -> None:
    ref = await notifier(session, tg.url).send(PAGE)

    [sent] = tg.calls("sendMessage")
    assert sent["chat_id"] == CHAT  # a numeric chat id goes as a number
    assert sent["parse_mode"] == "HTML"
    assert sent["link_preview_options"] == {"is_disabled": True}
    assert sent["reply_markup"] == {
        "inline_keyboard": [
            [
                {"text": "Acknowledge", "callback_data": "ack:3-a1b2c3d4e5f6"},
                {"text": "Resolve", "callback_data": "resolve:3-a1b2c3d4e5f6"},
            ]
        ]
    }
    assert "<b>[P1] checkout &lt;api&gt; &amp; payments</b>" in sent["text"]  # alert text escaped
    assert "ratio &gt; 5% &amp; rising &lt;fast&gt;" in sent["text"]
    assert '<a href="https://runbooks.example/checkout?a=1&amp;b=2">Runbook</a>' in sent["text"]
    assert telegram_html_problems(sent["text"]) == []
    assert ref is not None
    assert json.loads(ref) == {"chat": CHAT, "msg": 101}
    assert "notifier" not in ref and len(ref) < 64  # compact, opaque to delivery


async def test_a_channel_name_is_sent_as_given(session: aiohttp.ClientSession, tg: TelegramSink) -> None:
    ref = await notifier(session, tg.url).send(replace(PAGE, address="@ops_alerts"))

    assert tg.calls("sendMessage")[0]["chat_id"] == "@ops_alerts"
    assert json.loads(ref or "")["chat"] == "@ops_alerts"
    assert notifier(session, tg.url).endpoint("@ops_alerts") == "@ops_alerts"


async def test_ack_edits_the_first_message_and_replies_under_it(
    session: aiohttp.ClientSession, tg: TelegramSink
) -> None:
    n = notifier(session, tg.url)
    ref = await n.send(PAGE)

    assert await n.send(ACK, ref) is None  # keep the stored reference

    [edit] = tg.calls("editMessageText")
    assert (edit["chat_id"], edit["message_id"]) == (CHAT, 101)
    assert edit["reply_markup"] == {
        "inline_keyboard": [[{"text": "Resolve", "callback_data": "resolve:3-a1b2c3d4e5f6"}]]
    }
    assert "Acknowledged by alice" in visible_text(edit["text"])
    reply = tg.calls("sendMessage")[1]
    assert reply["reply_parameters"] == {"message_id": 101, "allow_sending_without_reply": True}
    assert visible_text(reply["text"]) == "🟡 Acknowledged by alice"
    assert "reply_markup" not in reply


async def test_resolve_removes_the_buttons(session: aiohttp.ClientSession, tg: TelegramSink) -> None:
    n = notifier(session, tg.url)
    ref = await n.send(PAGE)
    await n.send(ACK, ref)

    await n.send(RESOLVED, ref)

    edit = tg.calls("editMessageText")[-1]
    assert "reply_markup" not in edit  # an edit without reply_markup drops the keyboard
    assert "Resolved by bob" in visible_text(edit["text"])
    assert visible_text(tg.calls("sendMessage")[-1]["text"]) == "✅ Resolved by bob"


async def test_an_escalation_repeats_the_page_as_a_reply(
    session: aiohttp.ClientSession, tg: TelegramSink
) -> None:
    n = notifier(session, tg.url)
    ref = await n.send(PAGE)
    escalated = replace(PAGE, level=1, title="[P1] checkout (escalated to level 2)")

    await n.send(escalated, ref)

    assert "escalated to level 2" in tg.messages[(CHAT, 101)]["text"]
    reply = tg.calls("sendMessage")[-1]
    assert reply["reply_parameters"]["message_id"] == 101
    assert "escalated to level 2" in reply["text"]


async def test_a_retried_edit_that_already_landed_counts_as_done(
    session: aiohttp.ClientSession, tg: TelegramSink
) -> None:
    n = notifier(session, tg.url)
    ref = await n.send(PAGE)
    tg.script(Reply(200, {"ok": True, "result": True}), telegram_error(502, "Bad Gateway"))
    with pytest.raises(RetryableDeliveryError):  # the edit landed, the reply did not
        await n.send(ACK, ref)
    await n.send(ACK, ref)  # the retry's edit is "not modified", then the reply goes

    assert [r.json.get("reply_parameters") is not None for r in tg.requests if "sendMessage" in r.path] == [
        False,
        True,
        True,
    ]
    assert len(tg.calls("sendMessage")) == 2  # the first page and one accepted reply


async def test_not_modified_from_the_api_is_success(session: aiohttp.ClientSession, tg: TelegramSink) -> None:
    n = notifier(session, tg.url)
    ref = await n.send(PAGE)
    tg.script(telegram_error(400, "Bad Request: message is not modified: specified new message content"))

    assert await n.send(ACK, ref) is None
    assert len(tg.calls("sendMessage")) == 2


async def test_a_deleted_first_message_starts_a_new_thread(
    session: aiohttp.ClientSession, tg: TelegramSink
) -> None:
    n = notifier(session, tg.url)
    stale = json.dumps({"chat": CHAT, "msg": 7})

    ref = await n.send(ACK, stale)

    assert ref is not None and json.loads(ref) == {"chat": CHAT, "msg": 101}
    assert tg.calls("editMessageText") == []
    assert "reply_parameters" not in tg.calls("sendMessage")[0]


@pytest.mark.parametrize("thread", ["", "not json", "[1]", '{"chat": 1}', '{"chat": 4242, "msg": "x"}'])
async def test_an_unusable_thread_reference_sends_afresh(
    session: aiohttp.ClientSession, tg: TelegramSink, thread: str
) -> None:
    ref = await notifier(session, tg.url).send(PAGE, thread)

    assert ref is not None and len(tg.calls("sendMessage")) == 1


async def test_rate_limit_is_retryable_after_the_given_seconds(
    session: aiohttp.ClientSession, tg: TelegramSink
) -> None:
    tg.script(telegram_error(429, "Too Many Requests: retry after 3", retry_after=3))

    with pytest.raises(RetryableDeliveryError) as info:
        await notifier(session, tg.url).send(PAGE)

    assert info.value.retry_after_s == 3
    assert "Too Many Requests" in str(info.value)


@pytest.mark.parametrize(
    ("reply", "words"),
    [
        (telegram_error(400, "Bad Request: chat not found"), "chat not found"),
        (telegram_error(403, "Forbidden: bot was blocked by the user"), "bot was blocked"),
        (telegram_error(401, "Unauthorized"), "bot token was rejected"),
        (
            telegram_error(400, "Bad Request: group chat was upgraded", migrate_to_chat_id=-100123),
            "now chat -100123",
        ),
    ],
)
async def test_refusals_are_permanent(
    session: aiohttp.ClientSession, tg: TelegramSink, reply: Reply, words: str
) -> None:
    tg.script(reply)

    with pytest.raises(PermanentDeliveryError) as info:
        await notifier(session, tg.url).send(PAGE)

    assert words in str(info.value)
    assert BOT_TOKEN not in str(info.value)


async def test_a_wrong_token_never_shows_in_the_error(
    session: aiohttp.ClientSession, tg: TelegramSink
) -> None:
    with pytest.raises(PermanentDeliveryError) as info:
        await notifier(session, tg.url, token="999:wrong-token").send(PAGE)

    assert "rejected" in str(info.value) and "999:wrong-token" not in str(info.value)


async def test_server_errors_and_network_failures_are_retryable(
    session: aiohttp.ClientSession, tg: TelegramSink
) -> None:
    tg.script(Reply(500, {"ok": False, "error_code": 500, "description": "Internal Server Error"}))
    with pytest.raises(RetryableDeliveryError):
        await notifier(session, tg.url).send(PAGE)

    with pytest.raises(RetryableDeliveryError) as info:
        await notifier(session, refused_url()).send(PAGE)
    assert BOT_TOKEN not in str(info.value)

    tg.script(Reply(200, delay_s=3))
    with pytest.raises(RetryableDeliveryError, match="no response within"):
        await notifier(session, tg.url).send(PAGE)


async def test_missing_token_is_permanent_and_named(
    session: aiohttp.ClientSession, tg: TelegramSink, tmp_path: Path
) -> None:
    settings = TelegramChannel(api_url=tg.url, bot_token_env="TG_BOT_TOKEN")
    with pytest.raises(PermanentDeliveryError, match="TG_BOT_TOKEN"):
        await build(settings, session, {}).send(PAGE)

    missing = tmp_path / "nope"
    with pytest.raises(PermanentDeliveryError, match="nope"):
        await build(TelegramChannel(api_url=tg.url, bot_token_file=str(missing)), session, {}).send(PAGE)

    with pytest.raises(PermanentDeliveryError, match="not configured"):
        await build(TelegramChannel(api_url=tg.url), session, {}).send(PAGE)
    assert tg.requests == []


async def test_built_through_the_registry(session: aiohttp.ClientSession, tg: TelegramSink) -> None:
    build_ = factory("telegram")
    assert build_ is not None
    n = build_(TelegramChannel(api_url=tg.url, bot_token_env="T"), session, {"T": BOT_TOKEN}, 5.0)

    assert await n.send(PAGE) is not None


def test_long_bodies_are_cut_to_telegrams_limit_without_splitting_an_escape() -> None:
    text = message_text(replace(PAGE, body="<&>" * 3000 + "😀" * 2000))

    assert telegram_html_problems(text) == []
    shown = visible_text(text)
    assert len(shown.encode("utf-16-le")) // 2 <= 4096
    assert shown.rstrip().endswith(("…", "Open incident"))


def test_only_web_links_become_links() -> None:
    hostile = AlertSummary("f", "firing", {}, {"runbook_url": 'javascript:alert("x")'}, "")
    text = message_text(replace(PAGE, alerts=(hostile,), incident_url='https://x/"><b>'))

    assert "javascript" not in text and "Runbook" not in text
    assert '<a href="https://x/&quot;&gt;&lt;b&gt;">' in text
    assert telegram_html_problems(text) == []
