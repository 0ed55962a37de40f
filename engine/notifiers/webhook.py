"""Generic signed JSON webhook, plus the HTTP POST helper the HTTP-based notifiers share."""

import dataclasses
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp

from engine import __version__
from engine.errors import PermanentDeliveryError, RetryableDeliveryError
from engine.notifiers.base import Message

USER_AGENT = f"escalation-engine/{__version__}"
_MAX_RESPONSE_BYTES = 64 * 1024  # enough for any error body; never buffer an unbounded reply
_SNIPPET_CHARS = 300


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP-date); None when absent or invalid."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
        return max(seconds, 0.0)
    return seconds if seconds >= 0 and seconds != float("inf") else None


def snippet(body: bytes) -> str:
    text = body.decode("utf-8", errors="replace").strip()
    return text if len(text) <= _SNIPPET_CHARS else text[:_SNIPPET_CHARS] + "..."


async def http_post(
    session: aiohttp.ClientSession,
    url: str,
    data: bytes,
    headers: Mapping[str, str],
    timeout_s: float,
    what: str,
) -> tuple[int, bytes]:
    """POST and return (status, body) for 1xx-4xx answers other than 429.

    Raises RetryableDeliveryError for 429, 5xx, timeouts and network errors. `what` names the
    destination in errors; the URL is left out because webhook URLs often embed tokens.
    """
    try:
        async with session.post(
            url,
            data=data,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=timeout_s),
            allow_redirects=False,  # a redirected POST may turn into a GET and silently drop the page
        ) as resp:
            body = await resp.content.read(_MAX_RESPONSE_BYTES)
            status = resp.status
            retry_after = parse_retry_after(resp.headers.get("Retry-After"))
    except aiohttp.InvalidURL as exc:
        raise PermanentDeliveryError(f"{what}: invalid URL") from exc
    except TimeoutError as exc:
        raise RetryableDeliveryError(f"{what}: no response within {timeout_s:g}s") from exc
    except aiohttp.ClientError as exc:
        raise RetryableDeliveryError(f"{what}: {type(exc).__name__}: {exc}") from exc
    if status == 429 or status >= 500:
        raise RetryableDeliveryError(f"{what}: HTTP {status}: {snippet(body)}", retry_after)
    return status, body


def event_id(message: Message) -> str:
    """Stable across retries of one delivery, so receivers can drop at-least-once duplicates."""
    key = f"{message.incident_id}|{message.action}|{message.level}|{message.target}|{message.decided_ms}"
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """`v1=<hex HMAC-SHA256 of "v1:{timestamp}:{body}">` (Slack's v0 scheme with our prefix)."""
    base = b"v1:" + str(timestamp).encode("ascii") + b":" + body
    return "v1=" + hmac.new(secret.encode("utf-8"), base, hashlib.sha256).hexdigest()


def webhook_body(message: Message) -> dict[str, Any]:
    return {
        "version": "1",
        "action": str(message.action),
        "incident_id": message.incident_id,
        "title": message.title,
        "body": message.body,
        "severity": message.severity,
        "status": message.status,
        "level": message.level,
        "target": message.target,
        "labels": message.labels,
        "alerts": [dataclasses.asdict(alert) for alert in message.alerts],
        "triggered_at": message.triggered_at,
        "actor": message.actor,
        "incident_url": message.incident_url,
    }


class WebhookNotifier:
    """POSTs each message as JSON to a named endpoint; signs it when the endpoint has a secret."""

    channel = "webhook"

    def __init__(
        self,
        session: aiohttp.ClientSession,
        endpoints: Mapping[str, tuple[str, str | Exception | None]],
        timeout_s: float = 10,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._session = session
        self._endpoints = dict(endpoints)
        self._timeout_s = timeout_s
        self._clock = clock

    async def send(self, message: Message) -> None:
        name = message.address
        what = f"webhook endpoint {name!r}"
        entry = self._endpoints.get(name)
        if entry is None:
            raise PermanentDeliveryError(f"{what} is not configured under channels.webhook.endpoints")
        url, secret = entry
        if isinstance(secret, Exception):
            raise PermanentDeliveryError(f"{what}: secret unavailable: {secret}")
        body = json.dumps(webhook_body(message), ensure_ascii=False, separators=(",", ":")).encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "X-Escalation-Event-Id": event_id(message),
        }
        if secret is not None:
            timestamp = int(self._clock())
            headers["X-Escalation-Timestamp"] = str(timestamp)
            headers["X-Escalation-Signature"] = sign(secret, timestamp, body)
        status, reply = await http_post(self._session, url, body, headers, self._timeout_s, what)
        if not 200 <= status < 300:
            raise PermanentDeliveryError(f"{what}: HTTP {status}: {snippet(reply)}")
