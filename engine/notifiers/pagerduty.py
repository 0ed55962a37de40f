"""PagerDuty Events API v2: one service (routing key) per message address, dedup_key = incident id."""

import json
from collections.abc import Mapping
from typing import Any

import aiohttp

from engine.errors import PermanentDeliveryError
from engine.events import Action
from engine.messages import Message
from engine.notifiers.base import DEFAULT_TIMEOUT_S
from engine.notifiers.http import USER_AGENT, http_post, snippet
from engine.policy.channels import PagerDutyChannel
from engine.secrets import secret_or_error

CLIENT = "escalation-engine"
MAX_SUMMARY_CHARS = 1024
MAX_EVENT_BYTES = 512_000  # PagerDuty's 512 KB limit, counted as Alertmanager does
_SEVERITIES = ("critical", "error", "warning")


def pd_severity(rank: int) -> str:
    return _SEVERITIES[rank] if 0 <= rank < len(_SEVERITIES) else "info"


def _custom_details(message: Message) -> dict[str, Any]:
    alerts = []
    for alert in message.alerts:
        entry: dict[str, Any] = {"fingerprint": alert.fingerprint, "status": alert.status}
        # Only what tells alerts apart; the common labels are listed once above.
        own = {k: v for k, v in alert.labels.items() if message.labels.get(k) != v}
        if own:
            entry["labels"] = own
        for key in ("summary", "description"):
            if alert.annotations.get(key):
                entry[key] = alert.annotations[key]
        alerts.append(entry)
    return {
        "severity": message.severity,
        "level": message.level,
        "labels": message.labels,
        "firing": message.total_firing,  # of all the incident's alerts; `alerts` lists some
        "alert_count": message.total_alerts,
        "alerts": alerts,
    }


def event_body(message: Message, routing_key: str) -> dict[str, Any]:
    """The Events API v2 request body for `message`."""
    event: dict[str, Any] = {
        "routing_key": routing_key,
        "dedup_key": message.incident_id,
        "event_action": str(message.action),
    }
    if message.action is not Action.TRIGGER:
        return event  # ack/resolve carry nothing else; client fields are ignored on them
    labels = message.labels
    payload: dict[str, Any] = {
        "summary": message.title[:MAX_SUMMARY_CHARS],
        "source": labels.get("instance") or labels.get("service") or CLIENT,
        "severity": pd_severity(message.severity_rank),
    }
    if message.triggered_at:
        payload["timestamp"] = message.triggered_at
    for field, label in (("component", "service"), ("group", "team"), ("class", "alertname")):
        if labels.get(label):
            payload[field] = labels[label]
    payload["custom_details"] = _custom_details(message)
    event["payload"] = payload
    runbooks = dict.fromkeys(
        a.annotations["runbook_url"] for a in message.alerts if a.annotations.get("runbook_url")
    )
    links = [{"href": url, "text": "Runbook"} for url in runbooks]
    if message.incident_url:
        links.append({"href": message.incident_url, "text": "Incident"})
    if links:
        event["links"] = links
    event["client"] = CLIENT
    if message.incident_url:
        event["client_url"] = message.incident_url
    return event


def _encode(event: dict[str, Any]) -> bytes:
    data = json.dumps(event).encode()
    if len(data) > MAX_EVENT_BYTES and "payload" in event:
        # Drop the bulky part rather than have PagerDuty reject the page outright.
        note = f"custom_details dropped: the event exceeded PagerDuty's {MAX_EVENT_BYTES} byte limit"
        event = {**event, "payload": {**event["payload"], "custom_details": {"note": note}}}
        data = json.dumps(event).encode()
    return data


def _rejection(status: int, body: bytes) -> str:
    """PagerDuty's error JSON ({status, message, errors}) as one line; raw text if it is not JSON."""
    try:
        doc = json.loads(body)
    except ValueError:
        return snippet(body)
    if not isinstance(doc, dict):
        return snippet(body)
    parts = [str(doc.get("message") or doc.get("status") or f"HTTP {status}")]
    errors = doc.get("errors")
    if isinstance(errors, list) and errors:
        parts.append("; ".join(str(e) for e in errors))
    return ": ".join(parts)


class PagerDutyNotifier:
    """Sends trigger/acknowledge/resolve events; `message.address` is the policy's service name."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str,
        routing_keys: Mapping[str, str | Exception],
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self._session = session
        self._url = url
        self._routing_keys = dict(routing_keys)
        self._timeout_s = timeout_s

    def endpoint(self, address: str) -> str:
        return address  # 120 events/min per routing key: one limit per service

    def unusable(self, address: str) -> str | None:
        what = f"pagerduty service {address!r}"
        key = self._routing_keys.get(address)
        if key is None:
            return f"{what} is not configured under channels.pagerduty.services"
        if isinstance(key, Exception):
            return f"{what}: routing key unavailable: {key}"
        return None

    async def send(self, message: Message, thread: str | None = None) -> str | None:
        service = message.address
        what = f"pagerduty service {service!r}"
        if (why := self.unusable(service)) is not None:
            raise PermanentDeliveryError(why)
        key = self._routing_keys[service]
        assert isinstance(key, str)
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
        data = _encode(event_body(message, key))
        status, body = await http_post(self._session, self._url, data, headers, self._timeout_s, what)
        if not 200 <= status < 300:
            raise PermanentDeliveryError(
                f"{what}: PagerDuty rejected the event (HTTP {status}): {_rejection(status, body)}"
            )
        return None


def build(
    settings: PagerDutyChannel,
    session: aiohttp.ClientSession,
    environ: Mapping[str, str],
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> PagerDutyNotifier:
    keys: dict[str, str | Exception] = {}
    for name, service in settings.services.items():
        key = secret_or_error(service.routing_key_env, service.routing_key_file, environ)
        keys[name] = ValueError("no routing key configured") if key is None else key
    return PagerDutyNotifier(session, settings.url, keys, timeout_s=timeout_s)
