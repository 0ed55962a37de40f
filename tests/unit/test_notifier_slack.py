"""The Slack notifier against a strict local Slack Web API stand-in, and the click signature check."""

import json
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from slack_sdk.signature import Clock

from engine.api.slack import parse_payload, verify
from engine.errors import IngestError, PermanentDeliveryError, RetryableDeliveryError
from engine.events import Action
from engine.messages import AlertSummary, Message
from engine.notifiers.slack import PERMANENT_ERRORS, RETRYABLE_ERRORS, SlackNotifier, build, page_blocks
from engine.policy.channels import SlackChannel
from tests.sinks import Reply, refused_url
from tests.slack_sink import TOKEN, SlackSink, block_problems

FIXTURES = Path(__file__).parent.parent / "fixtures" / "slack"

ALERT = AlertSummary(
    fingerprint="a1b2c3d4e5f60718",
    status="firing",
    labels={"alertname": "HighErrorRate", "service": "checkout", "instance": "pod-1:8080"},
    annotations={"summary": "5xx ratio above 5%", "runbook_url": "https://runbooks.example/checkout"},
    starts_at="2026-11-23T17:48:29.795Z",
)
PAGE = Message(
    action=Action.TRIGGER,
    incident_id="inc-42",
    title="[P1] checkout - 5xx ratio above 5%",
    body="We are aware of an issue affecting checkout.\nStart Time: 2026-11-23 17:48 UTC",
    severity="P1",
    severity_rank=1,
    status="triggered",
    level=0,
    target="slack:#ops",
    address="#ops",
    labels={"alertname": "HighErrorRate", "service": "checkout"},
    alerts=(ALERT,),
    triggered_at="2026-11-23T17:48:30Z",
    incident_url="https://esc.example/api/v1/incidents/inc-42",
    paged=("slack:#ops",),
)
ACK = replace(
    PAGE,
    action=Action.ACKNOWLEDGE,
    title="[P1] checkout - 5xx ratio above 5% (acknowledged by alice)",
    status="acknowledged",
    actor="alice",
    acknowledged_by="alice",
)
RESOLVED = replace(
    PAGE,
    action=Action.RESOLVE,
    title="[RESOLVED] checkout - 5xx",
    status="resolved",
    actor="bob",
    resolved_by="bob",
)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
async def slack() -> AsyncIterator[SlackSink]:
    async with SlackSink() as s:
        yield s


def notifier(session: aiohttp.ClientSession, url: str, timeout_s: float = 2) -> SlackNotifier:
    return SlackNotifier(session, TOKEN, url, timeout_s=timeout_s)


def buttons(blocks: list[dict[str, Any]]) -> list[tuple[str, str | None, str]]:
    return [
        (el["action_id"], el.get("style"), el["value"])
        for b in blocks
        if b["type"] == "actions"
        for el in b["elements"]
    ]


def all_text(blocks: list[dict[str, Any]]) -> str:
    return json.dumps(blocks, ensure_ascii=False)


async def test_a_page_is_one_post_with_block_kit_and_returns_its_thread_ref(
    session: aiohttp.ClientSession, slack: SlackSink
) -> None:
    ref = await notifier(session, slack.url).send(PAGE)

    [body] = slack.calls["chat.postMessage"]
    assert body["channel"] == "#ops"
    assert body["text"] == PAGE.title  # the phone's lock-screen text
    assert body["unfurl_links"] is False
    blocks = body["blocks"]
    assert blocks[0] == {
        "type": "header",
        "text": {"type": "plain_text", "text": ":rotating_light: " + PAGE.title, "emoji": True},
    }
    assert blocks[1]["text"]["text"].startswith("We are aware of an issue affecting checkout.")
    fields = [f["text"] for f in blocks[1]["fields"]]
    assert fields == ["*Severity*\nP1", "*Status*\nTriggered", "*Level*\n1", "*Paged*\nslack:#ops"]
    assert "<https://runbooks.example/checkout|Runbook>" in blocks[2]["text"]["text"]
    assert "<https://esc.example/api/v1/incidents/inc-42|Incident inc-42>" in all_text(blocks)
    assert buttons(blocks) == [
        ("incident_ack", "primary", "inc-42"),
        ("incident_resolve", "danger", "inc-42"),
        ("incident_snooze", None, "inc-42"),
        ("incident_update", None, "inc-42"),
    ]
    assert json.loads(ref or "") == {"channel": SlackSink.channel_id("#ops"), "ts": "1795455912.000001"}


async def test_ack_edits_the_same_page_and_replies_in_its_thread(
    session: aiohttp.ClientSession, slack: SlackSink
) -> None:
    n = notifier(session, slack.url)
    ref = await n.send(PAGE)
    assert await n.send(ACK, ref) is None  # keep the page's ref

    parent = json.loads(ref or "")
    [update] = slack.calls["chat.update"]
    assert (update["channel"], update["ts"]) == (parent["channel"], parent["ts"])
    page = slack.messages[(parent["channel"], parent["ts"])]
    assert buttons(page["blocks"]) == [
        ("incident_resolve", "danger", "inc-42"),
        ("incident_update", None, "inc-42"),
    ]
    assert "Acknowledged by alice" in all_text(page["blocks"])
    reply = slack.calls["chat.postMessage"][1]
    assert reply["thread_ts"] == parent["ts"]
    assert reply["text"].startswith(":eyes: Acknowledged by alice")


async def test_resolve_removes_the_buttons_and_marks_the_header(
    session: aiohttp.ClientSession, slack: SlackSink
) -> None:
    n = notifier(session, slack.url)
    ref = await n.send(PAGE)
    await n.send(RESOLVED, ref)

    parent = json.loads(ref or "")
    page = slack.messages[(parent["channel"], parent["ts"])]
    assert buttons(page["blocks"]) == []
    assert page["blocks"][0]["text"]["text"].startswith(":white_check_mark: [RESOLVED]")
    assert "Resolved by bob" in all_text(page["blocks"])
    assert slack.calls["chat.postMessage"][1]["text"].startswith(":white_check_mark: Resolved by bob")


async def test_escalation_and_repeat_update_the_page_and_reply(
    session: aiohttp.ClientSession, slack: SlackSink
) -> None:
    n = notifier(session, slack.url)
    ref = await n.send(PAGE)
    await n.send(replace(PAGE, level=1, target="user:bob"), ref)
    await n.send(PAGE, ref)

    replies = [c["text"] for c in slack.calls["chat.postMessage"][1:]]
    assert replies[0].startswith(":arrow_double_up: Escalated to level 2: paging user:bob")
    assert replies[1].startswith(":repeat: Still not acknowledged")
    assert len(slack.calls["chat.update"]) == 2
    assert len(slack.parents) == 1  # one page per incident and address


async def test_a_person_is_paged_by_dm_and_the_dm_channel_is_kept_for_edits(
    session: aiohttp.ClientSession, slack: SlackSink
) -> None:
    n = notifier(session, slack.url)
    dm = replace(PAGE, target="user:alice", address="U0ONCALL1")
    ref = await n.send(dm)
    assert json.loads(ref or "")["channel"] == "D0ONCALL1"
    assert n.endpoint("U0ONCALL1") == "U0ONCALL1"
    await n.send(replace(ACK, address="U0ONCALL1"), ref)
    assert slack.calls["chat.update"][0]["channel"] == "D0ONCALL1"


@pytest.mark.parametrize("error", ["message_not_found", "cant_update_message"])
async def test_a_page_that_cannot_be_edited_still_gets_the_reply(
    session: aiohttp.ClientSession, slack: SlackSink, error: str
) -> None:
    n = notifier(session, slack.url)
    ref = await n.send(PAGE)
    slack.script(Reply(200, {"ok": False, "error": error}))
    await n.send(ACK, ref)
    assert slack.calls["chat.postMessage"][1]["text"].startswith(":eyes: Acknowledged")


async def test_ack_without_a_page_posts_a_fresh_one_in_the_current_state(
    session: aiohttp.ClientSession, slack: SlackSink
) -> None:
    ref = await notifier(session, slack.url).send(ACK, "not a ref")
    [body] = slack.calls["chat.postMessage"]
    assert "thread_ts" not in body
    assert buttons(body["blocks"]) == [
        ("incident_resolve", "danger", "inc-42"),
        ("incident_update", None, "inc-42"),
    ]
    assert ref is not None


async def test_alert_data_cannot_mention_everyone_or_forge_links(
    session: aiohttp.ClientSession, slack: SlackSink
) -> None:
    evil = replace(
        ALERT,
        labels={"alertname": "<!channel> & <http://evil.example|click>", "instance": "a>b"},
        annotations={"summary": "<@U123>", "runbook_url": "javascript:alert(1)"},
    )
    message = replace(PAGE, title="<!here> down", body="x < y & z", alerts=(evil,))
    await notifier(session, slack.url).send(message)

    [body] = slack.calls["chat.postMessage"]
    mrkdwn = [t for t in _texts(body["blocks"]) if t["type"] == "mrkdwn"]
    assert body["text"] == "&lt;!here&gt; down"
    assert all("<!" not in t["text"] and "<@" not in t["text"] for t in mrkdwn)
    assert "&lt;!channel&gt; &amp; &lt;http://evil.example|click&gt;" in all_text(body["blocks"])
    assert "javascript:" not in all_text(body["blocks"])


def _texts(node: Any) -> list[dict[str, Any]]:
    if isinstance(node, list):
        return [t for item in node for t in _texts(item)]
    if not isinstance(node, dict):
        return []
    own = [node] if node.get("type") in ("mrkdwn", "plain_text") else []
    return own + [t for value in node.values() for t in _texts(value)]


async def test_long_texts_and_many_alerts_are_cut_to_block_kit_limits(
    session: aiohttp.ClientSession, slack: SlackSink
) -> None:
    alerts = tuple(replace(ALERT, fingerprint=f"f{i}", annotations={"summary": "&" * 900}) for i in range(30))
    message = replace(PAGE, title="T" * 400, body="&" * 5000, severity="P" * 300, alerts=alerts)
    blocks = page_blocks(message)
    assert block_problems(blocks) == []
    assert len(blocks[0]["text"]["text"]) <= 150
    summary = blocks[1]["text"]["text"]
    assert len(summary) <= 3000
    assert summary.endswith("&amp;…")  # never half an entity
    assert "and 25 more alerts" in blocks[2]["text"]["text"]
    await notifier(session, slack.url).send(message)  # the sink accepts it
    assert len(slack.calls["chat.postMessage"]) == 1


async def test_429_is_retryable_after_retry_after_without_the_sdk_sleeping(
    session: aiohttp.ClientSession, slack: SlackSink
) -> None:
    slack.script(Reply(429, {"ok": False, "error": "ratelimited"}, headers={"Retry-After": "7"}))
    started = time.monotonic()
    with pytest.raises(RetryableDeliveryError) as err:
        await notifier(session, slack.url).send(PAGE)
    assert err.value.retry_after_s == 7
    assert time.monotonic() - started < 2
    assert len(slack.requests) == 1


@pytest.mark.parametrize("code", sorted(RETRYABLE_ERRORS | {"some_new_error"}))
async def test_transient_slack_errors_are_retryable(
    session: aiohttp.ClientSession, slack: SlackSink, code: str
) -> None:
    slack.script(Reply(200, {"ok": False, "error": code}, headers={"Retry-After": "3"}))
    with pytest.raises(RetryableDeliveryError, match=code):
        await notifier(session, slack.url).send(PAGE)


@pytest.mark.parametrize(
    "code",
    ["channel_not_found", "not_in_channel", "is_archived", "invalid_auth", "not_authed", "account_inactive",
     "token_revoked", "no_permission", "missing_scope", "msg_too_long", "invalid_blocks", "user_not_found"],
)  # fmt: skip
async def test_configuration_errors_are_permanent(
    session: aiohttp.ClientSession, slack: SlackSink, code: str
) -> None:
    assert code in PERMANENT_ERRORS
    slack.script(Reply(200, {"ok": False, "error": code}))
    with pytest.raises(PermanentDeliveryError, match=code):
        await notifier(session, slack.url).send(PAGE)


async def test_a_wrong_token_is_refused_by_the_sink_and_permanent(
    session: aiohttp.ClientSession, slack: SlackSink
) -> None:
    with pytest.raises(PermanentDeliveryError, match="invalid_auth"):
        await SlackNotifier(session, "xoxb-wrong", slack.url).send(PAGE)


@pytest.mark.parametrize("reply", [Reply(500), Reply(503, {"ok": False, "error": "x"}), Reply(502, None)])
async def test_5xx_is_retryable(session: aiohttp.ClientSession, slack: SlackSink, reply: Reply) -> None:
    slack.script(reply)
    with pytest.raises(RetryableDeliveryError, match="HTTP 5"):
        await notifier(session, slack.url).send(PAGE)


async def test_timeouts_and_refused_connections_are_retryable(
    session: aiohttp.ClientSession, slack: SlackSink
) -> None:
    slack.script(Reply(200, {"ok": True}, delay_s=5))
    with pytest.raises(RetryableDeliveryError, match=r"no answer from Slack within 0\.3s"):
        await notifier(session, slack.url, timeout_s=0.3).send(PAGE)
    with pytest.raises(RetryableDeliveryError):
        await notifier(session, refused_url("/api/")).send(PAGE)


@pytest.mark.parametrize(
    ("status", "content_type", "text", "error"),
    [
        (200, "text/plain", "ok", RetryableDeliveryError),
        (200, "application/json", "{not json", RetryableDeliveryError),
        (502, "text/html", "<html>bad gateway</html>", RetryableDeliveryError),
        (404, "text/html", "no such API", PermanentDeliveryError),
        (200, "application/json", '{"ok": true}', PermanentDeliveryError),  # no ts: cannot edit later
    ],
)
async def test_answers_that_are_not_slack_json_are_classified(
    session: aiohttp.ClientSession, status: int, content_type: str, text: str, error: type[Exception]
) -> None:
    async def answer(request: web.Request) -> web.Response:
        return web.Response(status=status, text=text, content_type=content_type)

    app = web.Application()
    app.router.add_post("/api/{method}", answer)
    async with TestServer(app) as server:
        with pytest.raises(error):
            await notifier(session, str(server.make_url("/api/"))).send(PAGE)


@pytest.mark.parametrize(
    ("settings", "environ", "named"),
    [
        (SlackChannel(token_env="SLACK_BOT_TOKEN"), {}, "SLACK_BOT_TOKEN"),
        (SlackChannel(token_env="SLACK_BOT_TOKEN"), {"SLACK_BOT_TOKEN": " "}, "SLACK_BOT_TOKEN"),
        (SlackChannel(token_file="/nonexistent/slack-token"), {}, "/nonexistent/slack-token"),
        (SlackChannel(), {}, "token_env or token_file"),
    ],
)
async def test_a_missing_token_is_permanent_and_named(
    session: aiohttp.ClientSession,
    slack: SlackSink,
    settings: SlackChannel,
    environ: dict[str, str],
    named: str,
) -> None:
    n = build(settings.model_copy(update={"api_url": slack.url}), session, environ)
    with pytest.raises(PermanentDeliveryError, match=named):
        await n.send(PAGE)
    assert slack.requests == []


async def test_build_reads_the_token_and_api_url(session: aiohttp.ClientSession, slack: SlackSink) -> None:
    settings = SlackChannel(api_url=slack.url, token_env="SLACK_BOT_TOKEN")
    await build(settings, session, {"SLACK_BOT_TOKEN": TOKEN}).send(PAGE)
    assert slack.requests[0].headers["Authorization"] == f"Bearer {TOKEN}"
    assert slack.requests[0].path == "/api/chat.postMessage"


@pytest.mark.parametrize("name", ["chat.postMessage-request.json", "chat.update-request.json"])
def test_the_sink_accepts_the_reference_examples(name: str) -> None:
    assert block_problems(json.loads((FIXTURES / name).read_text())["blocks"]) == []


def test_the_sink_refuses_what_block_kit_refuses() -> None:
    button = {"type": "button", "action_id": "a", "text": {"type": "plain_text", "text": "B" * 76}}
    assert block_problems([{"type": "header", "text": {"type": "mrkdwn", "text": "x"}}])
    assert block_problems([{"type": "section", "text": {"type": "mrkdwn", "text": "x" * 3001}}])
    assert block_problems([{"type": "actions", "elements": [button]}])
    assert block_problems([{"type": "divider"}] * 51)


# ---- the click signature (engine/api/slack.py) ----------------------------------------------------


class _At(Clock):
    def __init__(self, now: float) -> None:
        self.at = now

    def now(self) -> float:
        return self.at


def _vector(name: str) -> tuple[str, bytes, dict[str, str], int]:
    v = json.loads((FIXTURES / name).read_text())
    body = v["body"].encode() if "body" in v else (FIXTURES / v["body_file"]).read_bytes()
    headers = {
        "X-Slack-Request-Timestamp": v["x_slack_request_timestamp"],
        "X-Slack-Signature": v["x_slack_signature"],
    }
    return v["signing_secret"], body, headers, int(v["x_slack_request_timestamp"])


@pytest.mark.parametrize("name", ["published-signature-vector.json", "signature-test-vector.json"])
def test_signature_vectors_verify_within_five_minutes(name: str) -> None:
    secret, body, headers, ts = _vector(name)
    assert verify(secret, body, headers, _At(ts))
    assert verify(secret, body, headers, _At(ts + 300))
    assert verify(secret, body, headers, _At(ts - 300))
    assert not verify(secret, body, headers, _At(ts + 301))
    assert not verify(secret, body + b"x", headers, _At(ts))
    assert not verify(secret + "x", body, headers, _At(ts))
    assert not verify(secret, body, {**headers, "X-Slack-Request-Timestamp": "soon"}, _At(ts))
    assert not verify(secret, body, {"X-Slack-Request-Timestamp": str(ts)}, _At(ts))
    assert not verify(secret, b"\xff" + body, headers, _At(ts))


def test_the_reference_click_parses() -> None:
    click = parse_payload((FIXTURES / "interactivity-request-body.txt").read_bytes())
    assert not isinstance(click, dict)  # a click, not a submitted modal
    assert click.user.id == "U0ONCALL1"
    assert (click.actions[0].action_id, click.actions[0].value) == ("incident_ack", "inc-1234")
    assert click.message is not None and click.message.ts == "1795455912.001200"


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"", "'payload' is missing"),
        (b"other=1", "'payload' is missing"),
        (b"payload=%7B", "not valid JSON"),
        (b"payload=%5B%5D", "JSON object"),
        (b'payload={"type":"shortcut"}', "not supported"),
        (b'payload={"type":"block_actions","user":{},"actions":[]}', "invalid block_actions"),
        (b"\xff\xfe", "URL-encoded"),
    ],
)
def test_malformed_clicks_are_named(body: bytes, says: str) -> None:
    with pytest.raises(IngestError, match=says) as err:
        parse_payload(body)
    assert err.value.status == 400
