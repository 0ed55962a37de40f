"""Microsoft Teams through a Workflows (Power Automate) webhook: one Adaptive Card per message.

A Workflows webhook can only post, never edit, so each state change is a new card showing the
state. Its URL carries a signature (`sig=`), so it is a secret: no error or log names it.
"""

import json
import re
from collections.abc import Mapping
from typing import Any

import aiohttp

from engine.errors import DeliveryError, PermanentDeliveryError, RetryableDeliveryError
from engine.events import Action
from engine.messages import AlertSummary, Message
from engine.notifiers.base import DEFAULT_TIMEOUT_S
from engine.notifiers.http import USER_AGENT, http_post, snippet
from engine.policy.channels import TeamsChannel
from engine.secrets import secret_or_error

__all__ = ["TeamsNotifier", "adaptive_card", "build", "teams_body"]

CARD_VERSION = "1.4"  # what Teams renders on every client, mobile included
MAX_ALERTS = 20
MAX_TEXT_CHARS = 8000
MAX_LINES = 60
MAX_BODY_BYTES = 27_000  # Teams refuses messages over about 28 KB
_COLORS = {"triggered": "Attention", "acknowledged": "Warning", "snoozed": "Default", "resolved": "Good"}
_OPEN = ("triggered", "acknowledged", "snoozed")


def _text(text: str, **style: Any) -> dict[str, Any]:
    return {"type": "TextBlock", "text": text, "wrap": True, **style}


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _web(url: str) -> bool:
    return url.startswith(("https://", "http://")) and not any(c.isspace() for c in url)


def _open_url(title: str, url: str) -> dict[str, Any]:
    return {"type": "Action.OpenUrl", "title": title, "url": url}


def _facts(message: Message) -> list[dict[str, str]]:
    facts = [("Severity", message.severity), ("Status", message.status.capitalize())]
    if message.action is Action.TRIGGER:
        facts.append(("Level", str(message.level + 1)))
    if message.triggered_at:
        facts.append(("Started", message.triggered_at))
    if message.acknowledged_by:
        facts.append(("Acknowledged by", message.acknowledged_by))
    if message.resolved_by:
        facts.append(("Resolved by", message.resolved_by))
    facts.append(("Incident", message.incident_id))
    return [{"title": title, "value": value} for title, value in facts if value]


def _paragraphs(text: str) -> list[dict[str, Any]]:
    """One TextBlock per line: Teams drops a single newline inside a TextBlock."""
    blocks: list[dict[str, Any]] = []
    gap = True
    for line in text.split("\n"):
        if not line.strip():
            gap = True
            continue
        if len(blocks) == MAX_LINES:  # the rest in one block, its lines kept apart
            blocks[-1]["text"] += "\n\n" + line.strip()
            continue
        block = _text(line.strip(), spacing="Medium" if gap else "None")
        if not blocks:
            block["separator"] = True
        blocks.append(block)
        gap = False
    return blocks


def _alert_line(alert: AlertSummary) -> str:
    name = alert.labels.get("alertname", alert.fingerprint)
    summary = alert.annotations.get("summary") or alert.annotations.get("description") or ""
    where = alert.labels.get("instance") or alert.labels.get("service") or ""
    parts = [f"[{alert.status}] {name}", where, summary]
    return " · ".join(p for p in parts if p)


def _alerts(message: Message, limit: int) -> list[dict[str, Any]]:
    if not message.alerts or limit <= 0:
        return []
    items: list[dict[str, Any]] = [_text("Alerts", weight="Bolder", separator=True)]
    shown = message.alerts[:limit]
    items += [_text(_cut(_alert_line(a), 500), spacing="Small") for a in shown]
    if message.total_alerts > len(shown):
        more = message.total_alerts - len(shown)
        items.append(_text(f"…and {more} more", isSubtle=True, spacing="Small"))
    runbooks = dict.fromkeys(
        a.annotations["runbook_url"] for a in shown if _web(a.annotations.get("runbook_url", ""))
    )
    if runbooks:
        titles = ["Runbook"] if len(runbooks) == 1 else [f"Runbook {i + 1}" for i in range(len(runbooks))]
        actions = [_open_url(t, url) for t, url in zip(titles, list(runbooks)[:5], strict=False)]
        items.append({"type": "ActionSet", "actions": actions})
    return items


def _actions(message: Message) -> list[dict[str, Any]]:
    actions = []
    if message.status in ("triggered", "snoozed") and _web(message.links.get("acknowledge", "")):
        actions.append(_open_url("Acknowledge", message.links["acknowledge"]))
    if message.status in _OPEN and _web(message.links.get("resolve", "")):
        actions.append(_open_url("Resolve", message.links["resolve"]))
    if _web(message.incident_url):
        actions.append(_open_url("Open incident", message.incident_url))
    return actions


def adaptive_card(message: Message, max_alerts: int = MAX_ALERTS) -> dict[str, Any]:
    """The card. TextBlocks render a little Markdown; alert text is shown as given."""
    color = _COLORS.get(message.status, "Default")
    body: list[dict[str, Any]] = [
        _text(_cut(message.title, 500), size="Large", weight="Bolder", color=color),
        {"type": "FactSet", "facts": _facts(message)},
    ]
    body += _paragraphs(_cut(message.body.strip(), MAX_TEXT_CHARS))
    body += _alerts(message, max_alerts)
    card: dict[str, Any] = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": CARD_VERSION,
        "msteams": {"width": "Full"},
        "body": body,
    }
    actions = _actions(message)
    if actions:
        card["actions"] = actions
    return card


def teams_body(message: Message) -> bytes:
    """The Workflows request: a `message` with the card as its one attachment, under Teams' size cap."""
    for limit in (MAX_ALERTS, 5, 0):
        envelope = {
            "type": "message",
            "attachments": [
                {
                    "contentType": "application/vnd.microsoft.card.adaptive",
                    "contentUrl": None,
                    "content": adaptive_card(message, limit),
                }
            ],
        }
        data = json.dumps(envelope, ensure_ascii=False, separators=(",", ":")).encode()
        if len(data) <= MAX_BODY_BYTES:
            break
    return data


def _scrub(text: str, url: str) -> str:
    text = text.replace(url, "<teams url>")
    return re.sub(r"(?i)(sig=)[^&\s\"']+", r"\1<redacted>", text)


class TeamsNotifier:
    """Posts to the Workflows URL of the endpoint `message.address` names."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        urls: Mapping[str, str | Exception | None],
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self._session = session
        self._urls = dict(urls)
        self._timeout_s = timeout_s

    def endpoint(self, address: str) -> str:
        return address

    def unusable(self, address: str) -> str | None:
        what = f"teams endpoint {address!r}"
        if address not in self._urls:
            return f"{what} is not configured under channels.teams.endpoints"
        url = self._urls[address]
        if isinstance(url, Exception):
            return f"{what}: URL unavailable: {url}"
        if url is None:
            return f"{what}: no URL configured (url_env or url_file)"
        return None

    async def send(self, message: Message, thread: str | None = None) -> str | None:
        name = message.address
        what = f"teams endpoint {name!r}"
        if (why := self.unusable(name)) is not None:
            raise PermanentDeliveryError(why)
        url = self._urls[name]
        assert isinstance(url, str)
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
        try:
            status, reply = await http_post(
                self._session, url, teams_body(message), headers, self._timeout_s, what
            )
        except RetryableDeliveryError as exc:
            raise RetryableDeliveryError(_scrub(str(exc), url), exc.retry_after_s) from None
        except DeliveryError as exc:
            raise PermanentDeliveryError(_scrub(str(exc), url)) from None
        if not 200 <= status < 300:
            raise PermanentDeliveryError(f"{what}: HTTP {status}: {_scrub(snippet(reply), url)}")
        return None  # nothing to thread: a Workflows webhook cannot edit what it posted


def build(
    settings: TeamsChannel,
    session: aiohttp.ClientSession,
    environ: Mapping[str, str],
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> TeamsNotifier:
    urls = {
        name: secret_or_error(ep.url_env, ep.url_file, environ) for name, ep in settings.endpoints.items()
    }
    return TeamsNotifier(session, urls, timeout_s=timeout_s)
