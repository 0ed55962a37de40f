"""Real local HTTP receivers for tests: a strict PagerDuty Events API v2 stand-in and a webhook sink.

    async with PagerDutySink() as pd:           # pd.url is the enqueue URL
        pd.script(Reply(500), Reply(429, headers={"Retry-After": "7"}))   # then 202s again
        ...
        assert pd.events[0]["event_action"] == "trigger"   # accepted events only

    async with WebhookSink(secret="s3cret") as hook:   # bad signatures get 401
        ...
        hook.requests[0].json, hook.requests[0].headers

Every request is recorded in `.requests` (a `Recorded`). Scripted replies are used in order, one per
request; once they run out the sink answers normally. `Reply(delay_s=...)` holds the answer back (for
client timeouts); closing the sink cuts such waits short. `refused_url()` gives a URL nobody listens on;
`pagerduty_problems(event)` and `verify_signature(secret, headers, body)` are the checks the sinks apply.
Enter a sink inside the test's event loop (a function-scoped async fixture or the test body).
"""

import asyncio
import contextlib
import hashlib
import hmac
import json
import socket
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from aiohttp import web
from multidict import CIMultiDict

__all__ = [
    "PagerDutySink",
    "Recorded",
    "Reply",
    "WebhookSink",
    "pagerduty_problems",
    "refused_url",
    "verify_signature",
]


@dataclass(frozen=True)
class Reply:
    """A scripted answer."""

    status: int
    json: Any = None  # JSON body; None sends an empty body
    headers: Mapping[str, str] = field(default_factory=dict)
    delay_s: float = 0.0  # wait this long before answering


@dataclass(frozen=True)
class Recorded:
    """One request as received."""

    method: str
    path: str
    headers: Mapping[str, str]  # case-insensitive
    body: bytes
    json: Any  # the parsed body, or None when it is not JSON


class _Sink:
    path = "/"

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self._script: deque[Reply] = deque()
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.url = ""

    def script(self, *replies: Reply) -> None:
        """Queue replies for the next requests, in order."""
        self._script.extend(replies)

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}{self.path}"
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        try:
            doc = json.loads(body)
        except ValueError:
            doc = None
        recorded = Recorded(request.method, request.path, CIMultiDict(request.headers), body, doc)
        self.requests.append(recorded)
        reply = await self._answer(recorded)
        if reply.delay_s:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), reply.delay_s)
        text = "" if reply.json is None else json.dumps(reply.json)
        return web.Response(
            status=reply.status, text=text, headers=dict(reply.headers), content_type="application/json"
        )

    def _next(self, default: Reply) -> Reply:
        return self._script.popleft() if self._script else default

    async def _answer(self, request: Recorded) -> Reply:
        raise NotImplementedError


_ACTIONS = ("trigger", "acknowledge", "resolve")
_SEVERITIES = ("critical", "error", "warning", "info")


def pagerduty_problems(event: Any) -> list[str]:
    """What PagerDuty's Events API v2 would reject in `event` (empty when valid)."""
    if not isinstance(event, dict):
        return ["Event object is invalid: body is not a JSON object"]
    problems = []
    if not isinstance(event.get("routing_key"), str) or not event["routing_key"]:
        problems.append("'routing_key' is missing or blank")
    action = event.get("event_action")
    if action not in _ACTIONS:
        problems.append(f"'event_action' must be one of {', '.join(_ACTIONS)}")
    dedup = event.get("dedup_key")
    if dedup is not None and (not isinstance(dedup, str) or len(dedup) > 255):
        problems.append("'dedup_key' must be a string of at most 255 characters")
    if action in ("acknowledge", "resolve") and not dedup:
        problems.append("'dedup_key' is required for acknowledge and resolve")
    if action == "trigger":
        problems += _payload_problems(event.get("payload"))
    for name in ("links", "images"):
        if name in event and not isinstance(event[name], list):
            problems.append(f"'{name}' must be an array")
    return problems


def _payload_problems(payload: Any) -> list[str]:
    if not isinstance(payload, dict):
        return ["'payload' is required for trigger"]
    problems = []
    summary = payload.get("summary")
    if not isinstance(summary, str) or not summary:
        problems.append("'payload.summary' is missing or blank")
    elif len(summary) > 1024:
        problems.append("'payload.summary' is longer than 1024 characters")
    if not isinstance(payload.get("source"), str) or not payload["source"]:
        problems.append("'payload.source' is missing or blank")
    if payload.get("severity") not in _SEVERITIES:
        problems.append(f"'payload.severity' must be one of {', '.join(_SEVERITIES)}")
    if "custom_details" in payload and not isinstance(payload["custom_details"], dict):
        problems.append("'payload.custom_details' must be an object")
    return problems


class PagerDutySink(_Sink):
    """Validates each request like the Events API v2: 400 with PD's error JSON, else 202."""

    path = "/v2/enqueue"

    def __init__(self) -> None:
        super().__init__()
        self.events: list[dict[str, Any]] = []  # accepted (valid and answered 2xx), in order

    async def _answer(self, request: Recorded) -> Reply:
        problems = pagerduty_problems(request.json)
        if problems:  # never scripted away: a malformed event is always a bug in the sender
            return Reply(
                400, {"status": "invalid event", "message": "Event object is invalid", "errors": problems}
            )
        event: dict[str, Any] = request.json
        dedup = event.get("dedup_key") or hashlib.sha256(request.body).hexdigest()
        reply = self._next(
            Reply(202, {"status": "success", "message": "Event processed", "dedup_key": dedup})
        )
        if 200 <= reply.status < 300:
            self.events.append(event)
        return reply


def verify_signature(secret: str, headers: Mapping[str, str], body: bytes, tolerance_s: float = 300) -> bool:
    """Check X-Escalation-Signature the way a receiver should (including the timestamp's age)."""
    lower = CIMultiDict(headers)
    timestamp = lower.get("X-Escalation-Timestamp", "")
    signature = lower.get("X-Escalation-Signature", "")
    if not (timestamp.isascii() and timestamp.isdigit()) or abs(time.time() - int(timestamp)) > tolerance_s:
        return False
    base = b"v1:" + timestamp.encode() + b":" + body
    expected = "v1=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature)


class WebhookSink(_Sink):
    """Records webhook deliveries; with `secret`, answers 401 to requests whose signature fails."""

    path = "/hook"

    def __init__(self, secret: str | None = None) -> None:
        super().__init__()
        self.secret = secret

    async def _answer(self, request: Recorded) -> Reply:
        if self.secret is not None and not verify_signature(self.secret, request.headers, request.body):
            return Reply(401, {"error": "bad signature"})
        return self._next(Reply(200, {"ok": True}))


def refused_url(path: str = "/") -> str:
    """A 127.0.0.1 URL with no listener (the port was free a moment ago), for connection-refused tests."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"
