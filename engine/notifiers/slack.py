"""Slack Web API with a bot token: one Block Kit page per incident and address, then kept current.

The first TRIGGER posts the page (chat.postMessage) and returns {"channel", "ts"} as the thread
reference; every later message edits that page to the current state (chat.update) and adds a
thread reply saying what happened. Buttons come back to engine/api/slack.py, signed.
"""

import asyncio
import json
from collections.abc import Mapping
from typing import Any

import aiohttp
import structlog
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

from engine.errors import PermanentDeliveryError, RetryableDeliveryError
from engine.events import Action
from engine.messages import Message
from engine.notifiers.base import DEFAULT_TIMEOUT_S
from engine.notifiers.http import USER_AGENT, parse_retry_after
from engine.policy.channels import SlackChannel
from engine.secrets import secret_or_error

__all__ = [
    "ACTION_IDS",
    "SlackNotifier",
    "build",
    "classify",
    "escape",
    "page_blocks",
    "reply_text",
]

log = structlog.get_logger(__name__)

# Block Kit limits (slack.md §4); texts are cut to fit rather than have Slack refuse the page
MAX_BLOCKS = 50
MAX_SECTION_CHARS = 3000
MAX_FIELD_CHARS = 2000
MAX_HEADER_CHARS = 150
MAX_BUTTON_CHARS = 75
MAX_ALERTS = 5
MAX_ALERT_CHARS = 300
SNOOZE_LABEL = "Snooze 30m"
ACTION_IDS = {
    "ack": "incident_ack",
    "resolve": "incident_resolve",
    "snooze": "incident_snooze",
    "update": "incident_update",  # opens the status-update modal (api/slackmodal.py)
}

RETRYABLE_ERRORS = frozenset(
    {
        "rate_limited",
        "ratelimited",
        "internal_error",
        "fatal_error",
        "request_timeout",
        "service_unavailable",
        "team_added_to_org",
    }
)
PERMANENT_ERRORS = frozenset(
    {
        "channel_not_found",
        "not_in_channel",
        "is_archived",
        "invalid_auth",
        "not_authed",
        "account_inactive",
        "token_revoked",
        "token_expired",
        "no_permission",
        "missing_scope",
        "msg_too_long",
        "msg_blocks_too_long",
        "invalid_blocks",
        "invalid_blocks_format",
        "user_not_found",
        "no_text",
        "too_many_attachments",
        "invalid_arguments",
        "invalid_arg_name",
        "invalid_array_arg",
        "invalid_charset",
        "invalid_form_data",
        "invalid_post_type",
        "missing_post_type",
        "invalid_json",
        "json_not_object",
        "restricted_action",
        "cannot_dm_bot",
        "ekm_access_denied",
        "message_not_found",
        "cant_update_message",
        "edit_window_closed",
    }
)
_PAGE_GONE = frozenset({"message_not_found", "cant_update_message", "edit_window_closed"})
_STATUS_EMOJI = {
    "triggered": ":rotating_light:",
    "acknowledged": ":eyes:",
    "snoozed": ":zzz:",
    "resolved": ":white_check_mark:",
}


def escape(text: str) -> str:
    """Slack's three mrkdwn control characters: alert data must never form links or <!channel>."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    amp = cut.rfind("&")
    if amp > cut.rfind(";"):  # never leave half an entity such as "&am"
        cut = cut[:amp]
    return cut + "…"


def _mrkdwn(text: str, limit: int = MAX_SECTION_CHARS) -> dict[str, str]:
    return {"type": "mrkdwn", "text": _cut(text, limit) or " "}


def _plain(text: str, limit: int) -> dict[str, Any]:
    return {"type": "plain_text", "text": _cut(text, limit) or " ", "emoji": True}


def _link(url: str, label: str) -> str:
    """A mrkdwn link, or the bare label when the URL is not plain http(s)."""
    if not url.startswith(("https://", "http://")):
        return escape(label)
    return f"<{escape(url).replace('|', '%7C')}|{escape(label)}>"


def _header(message: Message) -> str:
    title = message.title
    if message.status == "resolved":
        title = title if "RESOLVED" in title.upper() else f"RESOLVED · {title}"
    elif message.severity not in title:
        title = f"[{message.severity}] {title}"
    return f"{_STATUS_EMOJI.get(message.status, ':bell:')} {title}"


def _fields(message: Message) -> list[dict[str, str]]:
    fields = [("Severity", message.severity), ("Status", message.status.capitalize())]
    if message.action is Action.TRIGGER:
        fields.append(("Level", str(message.level + 1)))
    if message.acknowledged_by:
        fields.append(("Acknowledged by", message.acknowledged_by))
    else:
        fields.append(("Paged", ", ".join(message.paged) or "-"))
    if message.resolved_by:
        fields.append(("Resolved by", message.resolved_by))
    return [_mrkdwn(f"*{name}*\n{escape(value)}", MAX_FIELD_CHARS) for name, value in fields]


def _alert_lines(message: Message) -> str:
    lines: list[str] = []
    room = MAX_SECTION_CHARS - 40  # what the tally line needs
    for alert in message.alerts[:MAX_ALERTS]:
        name = alert.labels.get("alertname", alert.fingerprint)
        where = alert.labels.get("instance") or alert.labels.get("service") or ""
        text = f"*{escape(name)}*" + (f" {escape(where)}" if where else "")
        if alert.annotations.get("summary"):
            text += f": {escape(alert.annotations['summary'])}"
        line = f"• `{alert.status}` {_cut(text, MAX_ALERT_CHARS)}"
        if runbook := alert.annotations.get("runbook_url", ""):
            line += f" · {_link(runbook, 'Runbook')}"
        if len(line) + 1 > room:  # whole lines only: a cut link would show as markup
            break
        lines.append(line)
        room -= len(line) + 1
    if message.total_alerts > len(lines):
        lines.append(f"…and {message.total_alerts - len(lines)} more alerts")
    return "\n".join(lines)


def _button(verb: str, label: str, incident_id: str, style: str | None = None) -> dict[str, Any]:
    button: dict[str, Any] = {
        "type": "button",
        "action_id": ACTION_IDS[verb],
        "text": _plain(label, MAX_BUTTON_CHARS),
        "value": incident_id,
    }
    if style:
        button["style"] = style
    return button


def _buttons(message: Message) -> list[dict[str, Any]]:
    if message.status == "resolved":
        return []
    resolve = _button("resolve", "Resolve", message.incident_id, "danger")
    resolve["confirm"] = {
        "title": _plain("Resolve incident?", 100),
        "text": _mrkdwn("This closes the incident for everyone paged."),
        "confirm": _plain("Resolve", 30),
        "deny": _plain("Cancel", 30),
    }
    update = _button("update", "Post update", message.incident_id)  # opens the status-update modal
    if message.status == "acknowledged":
        return [resolve, update]
    ack = _button("ack", "Acknowledge", message.incident_id, "primary")
    return [ack, resolve, _button("snooze", SNOOZE_LABEL, message.incident_id), update]


def _state_line(message: Message) -> str:
    if message.status == "resolved":
        return (
            f":white_check_mark: Resolved by {escape(message.resolved_by or message.actor or 'Alertmanager')}"
        )
    if message.status == "acknowledged":
        return f":eyes: Acknowledged by {escape(message.acknowledged_by or message.actor or 'someone')}"
    if message.status == "snoozed":
        return ":zzz: Snoozed"
    return ""


def page_blocks(message: Message) -> list[dict[str, Any]]:
    """The page as it should look now: header, summary, fields, alerts, links, state, buttons."""
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": _plain(_header(message), MAX_HEADER_CHARS)},
        {
            "type": "section",
            "block_id": "summary",
            "text": _mrkdwn(escape(message.body or message.title)),
            "fields": _fields(message),
        },
    ]
    if message.alerts:
        blocks.append({"type": "section", "block_id": "alerts", "text": _mrkdwn(_alert_lines(message))})
    where = _link(message.incident_url, f"Incident {message.incident_id}") if message.incident_url else ""
    context = [where or f"Incident `{escape(message.incident_id)}`"]
    if message.triggered_at:
        context.append(f"triggered {escape(message.triggered_at)}")
    blocks.append({"type": "context", "elements": [_mrkdwn(" · ".join(context))]})
    if state := _state_line(message):
        blocks.append({"type": "context", "block_id": "state", "elements": [_mrkdwn(state)]})
    if buttons := _buttons(message):
        blocks.append({"type": "actions", "block_id": "incident_actions", "elements": buttons})
    return blocks[:MAX_BLOCKS]


def reply_text(message: Message) -> str:
    """The thread reply for a later message: what happened, then its rendered subject."""
    if message.action is Action.ACKNOWLEDGE:
        head = f":eyes: Acknowledged by {message.actor or message.acknowledged_by or 'someone'}"
    elif message.action is Action.RESOLVE:
        head = f":white_check_mark: Resolved by {message.actor or message.resolved_by or 'Alertmanager'}"
    elif message.action is Action.UPDATE:
        return _cut(escape(update_line(message)) + "\n" + escape(message.body.strip()), MAX_SECTION_CHARS)
    elif message.level > 0:
        head = f":arrow_double_up: Escalated to level {message.level + 1}: paging {message.target}"
    else:
        head = f":repeat: Still not acknowledged: paging {message.target} again"
    return _cut(f"{escape(head)}\n{escape(message.title)}", MAX_SECTION_CHARS)


def update_line(message: Message) -> str:
    """One line for an update: its own note (a reassignment, a reminder), else UPDATE #n."""
    if message.note:
        return f":memo: {message.note}"
    update = message.status_update or {}
    status = str(update.get("status", "")).capitalize()
    return f":memo: UPDATE #{update.get('n', '?')} ({status}) by {update.get('by', 'someone')}"


def classify(what: str, error: str, retry_after_s: float | None = None) -> Exception:
    """An `ok: false` error code as a delivery error: retry what may pass, give up on the rest."""
    if error in RETRYABLE_ERRORS:
        return RetryableDeliveryError(f"{what}: Slack answered {error}", retry_after_s)
    if error in PERMANENT_ERRORS:
        return PermanentDeliveryError(f"{what}: Slack answered {error}")
    # unknown codes are retried: the delivery loop's retry limit bounds a wrong guess
    return RetryableDeliveryError(f"{what}: Slack answered {error or 'an error'} (unrecognised)")


def _from_api_error(what: str, exc: SlackApiError) -> Exception:
    response = exc.response
    # the SDK hands over its own response, or aiohttp's when the body was not JSON
    status = int(getattr(response, "status_code", None) or getattr(response, "status", 0) or 0)
    headers = getattr(response, "headers", None) or {}
    retry_after = parse_retry_after(headers.get("Retry-After"))
    data = getattr(response, "data", None)
    code = str(data.get("error", "")) if isinstance(data, dict) else ""
    if status == 429:
        return RetryableDeliveryError(f"{what}: rate limited by Slack (HTTP 429)", retry_after)
    if status >= 500:
        return RetryableDeliveryError(f"{what}: Slack answered HTTP {status}", retry_after)
    if code:
        return classify(what, code, retry_after)
    if status == 200:
        return RetryableDeliveryError(f"{what}: unreadable answer from Slack (HTTP 200)")
    return PermanentDeliveryError(f"{what}: Slack API answered HTTP {status}")


def _parse_ref(thread: str | None) -> tuple[str, str] | None:
    if not thread:
        return None
    try:
        ref = json.loads(thread)
    except ValueError:
        return None
    if isinstance(ref, dict) and isinstance(ref.get("channel"), str) and isinstance(ref.get("ts"), str):
        return ref["channel"], ref["ts"]
    return None


class SlackNotifier:
    """Pages a channel ("#ops", "C…") or a person by DM (their member id "U…")."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        token: str | Exception,
        api_url: str = "https://slack.com/api/",
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self._token = token
        self._timeout_s = timeout_s
        self._client: AsyncWebClient | None = None
        if isinstance(token, str):
            # no retry handlers: a 429 must come back to the delivery loop, which parks the retry
            self._client = AsyncWebClient(
                token=token,
                base_url=api_url,
                session=session,
                timeout=max(1, int(timeout_s)),
                retry_handlers=[],
                user_agent_prefix=USER_AGENT,
            )

    def endpoint(self, address: str) -> str:
        return address  # Slack allows about one message per second per channel

    def unusable(self, address: str) -> str | None:
        if isinstance(self._token, Exception):
            return f"slack {address!r}: slack bot token unavailable: {self._token}"
        return None

    async def send(self, message: Message, thread: str | None = None) -> str | None:
        what = f"slack {message.address!r}"
        ref = _parse_ref(thread)
        if ref is None:
            channel, ts = await self._post(what, message.address, message)
            return json.dumps({"channel": channel, "ts": ts}, separators=(",", ":"))
        channel, ts = ref
        if message.action is Action.UPDATE:  # status updates, reminders: in the thread only
            await self._call(
                what, "chat_postMessage", channel=channel, thread_ts=ts, text=reply_text(message)
            )
            return None
        # the page may have been deleted: the thread reply still tells the story
        await self._call(
            what,
            "chat_update",
            tolerate=_PAGE_GONE,
            channel=channel,
            ts=ts,
            text=escape(_cut(_header(message), MAX_SECTION_CHARS)),
            blocks=page_blocks(message),
        )
        # a page again (escalation, repeat) is also shown in the channel: a thread reply alone
        # notifies nobody who is not following the thread
        again = message.action is Action.TRIGGER
        await self._call(
            what,
            "chat_postMessage",
            channel=channel,
            thread_ts=ts,
            text=reply_text(message),
            reply_broadcast=again,
        )
        return None

    async def _post(self, what: str, channel: str, message: Message) -> tuple[str, str]:
        data = await self._call(
            what,
            "chat_postMessage",
            channel=channel,
            text=escape(_cut(message.title, MAX_SECTION_CHARS)),
            blocks=page_blocks(message),
            unfurl_links=False,
            unfurl_media=False,
        )
        posted_channel, ts = data.get("channel"), data.get("ts")
        if not isinstance(posted_channel, str) or not isinstance(ts, str):
            raise PermanentDeliveryError(f"{what}: Slack's answer has no channel and ts to edit later")
        return posted_channel, ts

    async def _call(
        self, what: str, method: str, *, tolerate: frozenset[str] = frozenset(), **args: Any
    ) -> dict[str, Any]:
        if isinstance(self._token, Exception):
            raise PermanentDeliveryError(f"{what}: slack bot token unavailable: {self._token}")
        assert self._client is not None
        try:
            async with asyncio.timeout(self._timeout_s):
                response = await getattr(self._client, method)(**args)
        except SlackApiError as exc:
            data = getattr(exc.response, "data", None)
            if isinstance(data, dict) and data.get("error") in tolerate:
                log.info("slack_call_tolerated", method=method, error=data["error"])
                return {}
            raise _from_api_error(what, exc) from exc
        except aiohttp.InvalidURL as exc:
            raise PermanentDeliveryError(f"{what}: invalid Slack API URL") from exc
        except TimeoutError as exc:
            raise RetryableDeliveryError(f"{what}: no answer from Slack within {self._timeout_s:g}s") from exc
        except aiohttp.ClientError as exc:
            raise RetryableDeliveryError(f"{what}: {type(exc).__name__}: {exc}") from exc
        except SlackClientError as exc:
            raise PermanentDeliveryError(f"{what}: {type(exc).__name__}: {exc}") from exc
        except (AttributeError, TypeError) as exc:  # the SDK reading a 200 that is not JSON
            raise RetryableDeliveryError(f"{what}: unreadable answer from Slack: {exc}") from exc
        data = response.data
        return data if isinstance(data, dict) else {}


def build(
    settings: SlackChannel,
    session: aiohttp.ClientSession,
    environ: Mapping[str, str],
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> SlackNotifier:
    token = secret_or_error(settings.token_env, settings.token_file, environ)
    if token is None:
        token = ValueError("no bot token configured: set channels.slack.token_env or token_file")
    return SlackNotifier(session, token, settings.api_url, timeout_s=timeout_s)
