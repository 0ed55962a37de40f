"""Generic signed JSON webhook: one POST per message to a named endpoint."""

import dataclasses
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp

from engine.errors import PermanentDeliveryError
from engine.messages import Message
from engine.notifiers.base import DEFAULT_TIMEOUT_S
from engine.notifiers.http import USER_AGENT, http_post, parse_retry_after, snippet
from engine.policy.channels import WebhookChannel
from engine.secrets import secret_or_error

__all__ = ["WebhookNotifier", "build", "event_id", "parse_retry_after", "sign", "webhook_body"]


def event_id(message: Message) -> str:
    """Stable across retries of one delivery, so receivers can drop at-least-once duplicates."""
    key = f"{message.incident_id}|{message.action}|{message.level}|{message.target}|{message.decided_ms}"
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """`v1=<hex HMAC-SHA256 of "v1:{timestamp}:{body}">` (Slack's v0 scheme with our prefix)."""
    base = b"v1:" + str(timestamp).encode("ascii") + b":" + body
    return "v1=" + hmac.new(secret.encode("utf-8"), base, hashlib.sha256).hexdigest()


def webhook_body(message: Message) -> dict[str, Any]:
    """Version 1 of the body (README, "Generic webhook"): fields are only ever added to it."""
    return {
        "version": "1",
        "event_id": event_id(message),
        "action": str(message.action),
        "incident_id": message.incident_id,
        "title": message.title,
        "body": message.body,
        "severity": message.severity,
        "status": message.status,
        "level": message.level,
        "target": message.target,
        "labels": message.labels,
        "alerts": [dataclasses.asdict(alert) for alert in message.alerts],  # at most 50, firing first
        "alert_count": message.total_alerts,  # every alert the incident holds
        "firing": message.total_firing,
        "triggered_at": message.triggered_at,
        "actor": message.actor,
        "incident_url": message.incident_url,
        "links": message.links,  # signed one-click acknowledge/resolve pages, when PUBLIC_URL is set
    }


class WebhookNotifier:
    """POSTs each message as JSON to a named endpoint; signs it when the endpoint has a secret."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        endpoints: Mapping[str, tuple[str, str | Exception | None]],
        timeout_s: float = DEFAULT_TIMEOUT_S,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._session = session
        self._endpoints = dict(endpoints)
        self._timeout_s = timeout_s
        self._clock = clock

    def endpoint(self, address: str) -> str:
        return address

    def unusable(self, address: str) -> str | None:
        what = f"webhook endpoint {address!r}"
        entry = self._endpoints.get(address)
        if entry is None:
            return f"{what} is not configured under channels.webhook.endpoints"
        if isinstance(entry[1], Exception):
            return f"{what}: secret unavailable: {entry[1]}"
        return None

    async def send(self, message: Message, thread: str | None = None) -> str | None:
        name = message.address
        what = f"webhook endpoint {name!r}"
        if (why := self.unusable(name)) is not None:
            raise PermanentDeliveryError(why)
        url, secret = self._endpoints[name]
        assert not isinstance(secret, Exception)
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
        return None


def build(
    settings: WebhookChannel,
    session: aiohttp.ClientSession,
    environ: Mapping[str, str],
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> WebhookNotifier:
    endpoints = {
        name: (ep.url, secret_or_error(ep.secret_env, ep.secret_file, environ))
        for name, ep in settings.endpoints.items()
    }
    return WebhookNotifier(session, endpoints, timeout_s=timeout_s)
