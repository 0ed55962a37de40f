import hashlib
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from engine import __version__
from engine.errors import PermanentDeliveryError, RetryableDeliveryError
from engine.events import Action
from engine.messages import AlertSummary, Message
from engine.notifiers.webhook import WebhookNotifier, parse_retry_after
from tests.sinks import Reply, WebhookSink, refused_url, verify_signature

SECRET = "whsec-test"

MESSAGE = Message(
    action=Action.TRIGGER,
    incident_id="inc-7",
    title="[P1] DiskFull db-1",
    body="disk at 97%",
    severity="P1",
    severity_rank=1,
    status="triggered",
    level=2,
    target="webhook:ops",
    address="ops",
    labels={"alertname": "DiskFull"},
    alerts=(
        AlertSummary(
            fingerprint="ff00",
            status="firing",
            labels={"alertname": "DiskFull", "instance": "db-1"},
            annotations={"summary": "disk almost full"},
            starts_at="2026-11-23T10:00:00Z",
            generator_url="http://prom/graph",
        ),
    ),
    triggered_at="2026-11-23T10:00:05Z",
    actor="",
    incident_url="https://esc.example/incidents/inc-7",
)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
async def sink() -> AsyncIterator[WebhookSink]:
    async with WebhookSink() as s:
        yield s


def notifier(
    session: aiohttp.ClientSession, url: str, secret: str | Exception | None = None, timeout_s: float = 0.5
) -> WebhookNotifier:
    return WebhookNotifier(session, {"ops": (url, secret)}, timeout_s=timeout_s)


async def test_posts_documented_json_and_headers(session: aiohttp.ClientSession, sink: WebhookSink) -> None:
    await notifier(session, sink.url).send(MESSAGE)

    [request] = sink.requests
    assert request.method == "POST"
    assert request.json == {
        "version": "1",
        "event_id": hashlib.sha256(b"inc-7|trigger|2|webhook:ops|0").hexdigest(),
        "action": "trigger",
        "incident_id": "inc-7",
        "title": "[P1] DiskFull db-1",
        "body": "disk at 97%",
        "severity": "P1",
        "status": "triggered",
        "level": 2,
        "target": "webhook:ops",
        "labels": {"alertname": "DiskFull"},
        "alerts": [
            {
                "fingerprint": "ff00",
                "status": "firing",
                "labels": {"alertname": "DiskFull", "instance": "db-1"},
                "annotations": {"summary": "disk almost full"},
                "starts_at": "2026-11-23T10:00:00Z",
                "generator_url": "http://prom/graph",
            }
        ],
        "alert_count": 1,
        "firing": 1,
        "triggered_at": "2026-11-23T10:00:05Z",
        "actor": "",
        "incident_url": "https://esc.example/incidents/inc-7",
        "links": {},
    }
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["User-Agent"] == f"escalation-engine/{__version__}"
    assert (
        request.headers["X-Escalation-Event-Id"]
        == hashlib.sha256(b"inc-7|trigger|2|webhook:ops|0").hexdigest()
    )
    assert "X-Escalation-Signature" not in request.headers


async def test_event_id_is_stable_across_retries_and_differs_per_action(
    session: aiohttp.ClientSession, sink: WebhookSink
) -> None:
    hook = notifier(session, sink.url)
    await hook.send(MESSAGE)
    await hook.send(MESSAGE)
    await hook.send(replace(MESSAGE, action=Action.ACKNOWLEDGE, level=0, actor="alice"))

    ids = [r.headers["X-Escalation-Event-Id"] for r in sink.requests]
    assert ids[0] == ids[1] != ids[2]


async def test_signature_verifies(session: aiohttp.ClientSession) -> None:
    async with WebhookSink(secret=SECRET) as sink:
        await notifier(session, sink.url, SECRET).send(MESSAGE)

    [request] = sink.requests
    assert abs(int(request.headers["X-Escalation-Timestamp"]) - time.time()) < 5
    assert request.headers["X-Escalation-Signature"].startswith("v1=")
    assert verify_signature(SECRET, request.headers, request.body)
    assert not verify_signature(SECRET, request.headers, request.body + b" ")


async def test_wrong_secret_is_rejected(session: aiohttp.ClientSession) -> None:
    async with WebhookSink(secret=SECRET) as sink:
        with pytest.raises(PermanentDeliveryError, match="'ops': HTTP 401"):
            await notifier(session, sink.url, "not-the-secret").send(MESSAGE)

    assert not verify_signature(SECRET, sink.requests[0].headers, sink.requests[0].body)


async def test_signature_uses_injected_clock(session: aiohttp.ClientSession, sink: WebhookSink) -> None:
    hook = WebhookNotifier(session, {"ops": (sink.url, SECRET)}, clock=lambda: 1_700_000_000.9)
    await hook.send(MESSAGE)

    headers = sink.requests[0].headers
    assert headers["X-Escalation-Timestamp"] == "1700000000"
    assert not verify_signature(SECRET, headers, sink.requests[0].body)  # too old for a receiver


@pytest.mark.parametrize("status", [500, 503])
async def test_5xx_is_retryable(session: aiohttp.ClientSession, sink: WebhookSink, status: int) -> None:
    sink.script(Reply(status, headers={"Retry-After": "3"}))

    with pytest.raises(RetryableDeliveryError) as info:
        await notifier(session, sink.url).send(MESSAGE)
    assert info.value.retry_after_s == 3


async def test_429_honours_retry_after(session: aiohttp.ClientSession, sink: WebhookSink) -> None:
    sink.script(Reply(429, headers={"Retry-After": "12"}))

    with pytest.raises(RetryableDeliveryError) as info:
        await notifier(session, sink.url).send(MESSAGE)
    assert info.value.retry_after_s == 12


@pytest.mark.parametrize("status", [400, 404, 410])
async def test_other_4xx_is_permanent(session: aiohttp.ClientSession, sink: WebhookSink, status: int) -> None:
    sink.script(Reply(status, {"error": "nope"}))

    with pytest.raises(PermanentDeliveryError, match=f"HTTP {status}.*nope"):
        await notifier(session, sink.url).send(MESSAGE)


async def test_redirect_is_not_followed(session: aiohttp.ClientSession, sink: WebhookSink) -> None:
    sink.script(Reply(302, headers={"Location": "/elsewhere"}))

    with pytest.raises(PermanentDeliveryError, match="HTTP 302"):
        await notifier(session, sink.url).send(MESSAGE)
    assert len(sink.requests) == 1


async def test_connection_refused_is_retryable(session: aiohttp.ClientSession) -> None:
    with pytest.raises(RetryableDeliveryError, match="'ops'"):
        await notifier(session, refused_url("/hook")).send(MESSAGE)


async def test_timeout_is_retryable(session: aiohttp.ClientSession, sink: WebhookSink) -> None:
    sink.script(Reply(200, delay_s=5))

    with pytest.raises(RetryableDeliveryError, match="no response"):
        await notifier(session, sink.url, timeout_s=0.05).send(MESSAGE)


async def test_unknown_endpoint_is_permanent(session: aiohttp.ClientSession, sink: WebhookSink) -> None:
    with pytest.raises(PermanentDeliveryError, match="'other' is not configured"):
        await notifier(session, sink.url).send(replace(MESSAGE, address="other"))
    assert sink.requests == []


async def test_unresolved_secret_is_permanent(session: aiohttp.ClientSession, sink: WebhookSink) -> None:
    missing = ValueError("secret file /run/secrets/hook is empty")

    with pytest.raises(
        PermanentDeliveryError, match="'ops': secret unavailable: secret file /run/secrets/hook"
    ):
        await notifier(session, sink.url, missing).send(MESSAGE)
    assert sink.requests == []


@pytest.mark.parametrize(
    ("header", "expected"),
    [(None, None), ("", None), ("5", 5.0), ("0.5", 0.5), ("-1", None), ("soon", None), ("nan", None)],
)
def test_parse_retry_after_seconds(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header) == expected


def test_parse_retry_after_http_date() -> None:
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past: retry now
    future = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 60))
    seconds = parse_retry_after(future)
    assert seconds is not None
    assert 55 < seconds <= 60


async def test_the_readmes_verification_snippet_accepts_our_signature_and_refuses_a_forgery(
    session: aiohttp.ClientSession,
) -> None:
    """The README's snippet is what receivers copy: it must agree with what the engine sends."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme[readme.index("**Generic webhook.**") :]
    code = section[section.index("```python\n") + 10 :]
    namespace: dict[str, Any] = {}
    exec(code[: code.index("```")], namespace)  # noqa: S102 - our own README, under test
    verify = namespace["verify"]
    async with WebhookSink(secret="s3cret") as sink:
        await notifier(session, sink.url, secret="s3cret").send(MESSAGE)
        [request] = sink.requests
    headers = dict(request.headers)
    assert verify(b"s3cret", headers, request.body)
    assert not verify(b"other", headers, request.body)
    assert not verify(b"s3cret", headers, request.body + b" ")
    stale = {**headers, "X-Escalation-Timestamp": str(int(headers["X-Escalation-Timestamp"]) - 301)}
    assert not verify(b"s3cret", stale, request.body)
