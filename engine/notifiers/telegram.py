"""Telegram Bot API: one message per incident and chat, edited as the incident changes, with replies.

The first message carries Acknowledge/Resolve buttons (callback_data `ack:<id>` / `resolve:<id>`,
answered by engine/api/telegram.py). Its chat and message id come back from send() as the thread
reference; later sends edit that message to the current state and reply under it.
"""

import html
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from engine.errors import PermanentDeliveryError, RetryableDeliveryError
from engine.events import Action
from engine.messages import Message
from engine.notifiers.base import DEFAULT_TIMEOUT_S
from engine.notifiers.http import USER_AGENT, http_exchange, snippet
from engine.policy.channels import TelegramChannel
from engine.secrets import secret_or_error

__all__ = ["TelegramError", "TelegramNotifier", "build", "call", "message_text", "utf16_len"]

MAX_TEXT = 4096  # characters (UTF-16 code units) after entity parsing
MAX_CALLBACK_DATA = 64  # bytes
MAX_RUNBOOKS = 3
_ICONS = {"triggered": "🔴", "acknowledged": "🟡", "snoozed": "💤", "resolved": "✅"}
# the first message is gone or too old to edit: post a new one rather than lose the update
_GONE = ("message to edit not found", "message can't be edited", "message_id_invalid")


class TelegramError(PermanentDeliveryError):
    """The Bot API refused a call (ok:false, not 429 or 5xx)."""

    def __init__(self, message: str, code: int, description: str) -> None:
        super().__init__(message)
        self.code = code
        self.description = description


def utf16_len(text: str) -> int:
    """Telegram counts text length in UTF-16 code units (an emoji may count twice)."""
    return len(text.encode("utf-16-le")) // 2


def _scrub(text: str, token: str) -> str:
    return text.replace(token, "<bot token>") if token else text


def _describe(method: str, code: int, description: str, params: Any) -> str:
    if code == 401:
        return f"telegram {method}: the bot token was rejected (401 {description}); check channels.telegram"
    text = f"telegram {method}: {code} {description}"
    if isinstance(params, dict) and params.get("migrate_to_chat_id") is not None:
        text += f" (the group is now chat {params['migrate_to_chat_id']}: update the address)"
    return text


async def call(
    session: aiohttp.ClientSession,
    api_url: str,
    token: str,
    method: str,
    params: Mapping[str, Any],
    timeout_s: float,
) -> Any:
    """One Bot API call; its `result`. The token is in the URL, so no error names the URL.

    Raises RetryableDeliveryError for 429 (after parameters.retry_after), 5xx, timeouts and network
    errors; TelegramError for every other refusal.
    """
    url = f"{api_url.rstrip('/')}/bot{token}/{method}"
    what = f"telegram {method}"
    data = json.dumps(params, ensure_ascii=False, separators=(",", ":")).encode()
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
    # 429s and 5xx come back as answers: Telegram's retry_after is in the body
    status, body, header_retry = await http_exchange(session, url, data, headers, timeout_s, what, token)
    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        doc = {}
    if status == 200 and doc.get("ok") is True:
        return doc.get("result")
    raw_code = doc.get("error_code")
    code = raw_code if type(raw_code) is int else status
    description = _scrub(str(doc.get("description") or snippet(body) or f"HTTP {status}"), token)
    params_ = doc.get("parameters")
    if status == 429 or code == 429:
        retry = params_.get("retry_after") if isinstance(params_, dict) else None
        after = float(retry) if isinstance(retry, int | float) and retry >= 0 else header_retry
        raise RetryableDeliveryError(f"{what}: {description}", after)
    if status >= 500 or code >= 500:
        raise RetryableDeliveryError(f"{what}: HTTP {status}: {description}", header_retry)
    raise TelegramError(_describe(method, code, description, params_), code, description)


@dataclass(frozen=True, slots=True)
class Ref:
    """The incident's first message in one chat."""

    chat: int | str
    message_id: int

    def dump(self) -> str:
        return json.dumps({"chat": self.chat, "msg": self.message_id}, separators=(",", ":"))

    @staticmethod
    def load(raw: str | None) -> "Ref | None":
        try:
            doc = json.loads(raw) if raw else None
        except ValueError:
            return None
        if not isinstance(doc, dict):
            return None
        chat, msg = doc.get("chat"), doc.get("msg")
        if not isinstance(chat, int | str) or isinstance(chat, bool) or type(msg) is not int:
            return None
        return Ref(chat, msg)


def chat_id(address: str) -> int | str:
    """A numeric chat id as a number; `@channelname` as given."""
    return int(address) if re.fullmatch(r"-?\d+", address) else address


def keyboard(message: Message) -> dict[str, Any] | None:
    """Buttons for what can still be done: none once resolved."""
    buttons = []
    if message.status in ("triggered", "snoozed"):
        buttons.append(("Acknowledge", f"ack:{message.incident_id}"))
    if message.status != "resolved":
        buttons.append(("Resolve", f"resolve:{message.incident_id}"))
    row = [
        {"text": text, "callback_data": data}
        for text, data in buttons
        if len(data.encode()) <= MAX_CALLBACK_DATA
    ]
    return {"inline_keyboard": [row]} if row else None


def _href(url: str) -> str | None:
    """A URL safe to put in an <a href>; None for anything but http(s)."""
    if not url.startswith(("https://", "http://")) or any(c.isspace() for c in url):
        return None
    return html.escape(url, quote=True)


def _state(message: Message) -> str:
    if message.status == "resolved":
        return f"Resolved by {message.resolved_by}" if message.resolved_by else "Resolved"
    if message.status == "acknowledged":
        return f"Acknowledged by {message.acknowledged_by or message.actor or 'someone'}"
    return ""


def _fit(text: str, budget: int) -> str:
    """`text` HTML-escaped in at most `budget` UTF-16 units; cut before escaping so no entity splits."""
    escaped = html.escape(text, quote=False)
    cut = len(text)
    while utf16_len(escaped) > budget and cut > 0:
        cut -= max(1, utf16_len(escaped) - budget)
        escaped = html.escape(text[: max(cut, 0)].rstrip(), quote=False) + "…"
    return escaped if utf16_len(escaped) <= budget else ""


def message_text(message: Message) -> str:
    """The full text, Telegram HTML: everything from alerts or templates escaped."""
    icon = _ICONS.get(message.status, "🔔")
    head = f"{icon} <b>{html.escape(message.title, quote=False)}</b>"
    state = _state(message)
    if state:
        head += f"\n<i>{html.escape(state, quote=False)}</i>"
    links: list[str] = []
    runbooks = dict.fromkeys(_href(a.annotations.get("runbook_url", "")) for a in message.alerts)
    runbooks.pop(None, None)
    links += [f'<a href="{href}">Runbook</a>' for href in list(runbooks)[:MAX_RUNBOOKS]]
    href = _href(message.incident_url)
    if href:
        links.append(f'<a href="{href}">Open incident</a>')
    foot = "\n\n" + " · ".join(links) if links else ""
    budget = MAX_TEXT - utf16_len(head) - utf16_len(foot) - 2
    if budget < 200:  # absurdly long title: keep the body, drop the links
        foot = ""
        head = f"{icon} <b>{_fit(message.title, 500)}</b>"
        budget = MAX_TEXT - utf16_len(head) - 2
    body = _fit(message.body.strip(), budget)
    return f"{head}\n\n{body}{foot}" if body else f"{head}{foot}"


def reply_text(message: Message) -> str:
    """What is said under the first message: the page again, or who acted."""
    if message.action is Action.TRIGGER:
        return message_text(message)
    if message.action is Action.UPDATE:  # a status update or a notice: its own words, in full
        update = message.status_update or {}
        head = message.note or f"UPDATE #{update.get('n', '?')} ({update.get('status', '')})"
        return f"📝 <b>{_fit(head, 300)}</b>\n\n{_fit(message.body.strip(), MAX_TEXT - 400)}"
    verb = "Resolved" if message.action is Action.RESOLVE else "Acknowledged"
    by = message.actor or (message.resolved_by if verb == "Resolved" else message.acknowledged_by)
    text = f"{_ICONS['resolved' if verb == 'Resolved' else 'acknowledged']} <b>{verb}</b>"
    return text + (f" by {_fit(by, 200)}" if by else "")


class TelegramNotifier:
    """Sends to `message.address`, a chat id (a user's private chat, a group, or @channel)."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        api_url: str,
        token: str | Exception | None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self._session = session
        self._api_url = api_url
        self._token = token
        self._timeout_s = timeout_s

    def endpoint(self, address: str) -> str:
        return address  # Telegram limits messages per chat

    def unusable(self, address: str) -> str | None:
        token = self._token
        if isinstance(token, Exception):
            return f"telegram bot token unavailable: {token}"
        if token is None:
            return (
                "telegram bot token not configured: "
                "set bot_token_env or bot_token_file under channels.telegram"
            )
        return None

    async def send(self, message: Message, thread: str | None = None) -> str | None:
        if (why := self.unusable(message.address)) is not None:
            raise PermanentDeliveryError(why)
        token = self._token
        assert isinstance(token, str)
        ref = Ref.load(thread)
        if ref is None or ref.chat != chat_id(message.address):
            return await self._first(token, message)
        try:
            if message.action is not Action.UPDATE:  # an update is a reply; the page keeps its state
                await self._edit(token, message, ref)
        except TelegramError as exc:
            if not any(g in exc.description.lower() for g in _GONE):
                raise
            return await self._first(token, message)
        await self._call(
            token,
            "sendMessage",
            {
                "chat_id": ref.chat,
                "text": reply_text(message),
                "parse_mode": "HTML",
                "link_preview_options": {"is_disabled": True},
                "reply_parameters": {"message_id": ref.message_id, "allow_sending_without_reply": True},
            },
        )
        return None

    async def _first(self, token: str, message: Message) -> str:
        params: dict[str, Any] = {
            "chat_id": chat_id(message.address),
            "text": message_text(message),
            "parse_mode": "HTML",
            "link_preview_options": {"is_disabled": True},
        }
        markup = keyboard(message)
        if markup is not None:
            params["reply_markup"] = markup
        result = await self._call(token, "sendMessage", params)
        msg_id = result.get("message_id") if isinstance(result, dict) else None
        if type(msg_id) is not int:
            raise PermanentDeliveryError("telegram sendMessage: the reply has no message_id")
        return Ref(params["chat_id"], msg_id).dump()

    async def _edit(self, token: str, message: Message, ref: Ref) -> None:
        params: dict[str, Any] = {
            "chat_id": ref.chat,
            "message_id": ref.message_id,
            "text": message_text(message),
            "parse_mode": "HTML",
            "link_preview_options": {"is_disabled": True},
        }
        markup = keyboard(message)
        if markup is not None:  # left out, the buttons go
            params["reply_markup"] = markup
        try:
            await self._call(token, "editMessageText", params)
        except TelegramError as exc:
            if "message is not modified" not in exc.description.lower():
                raise  # not modified: a retry of an edit that already landed

    async def _call(self, token: str, method: str, params: Mapping[str, Any]) -> Any:
        return await call(self._session, self._api_url, token, method, params, self._timeout_s)


def build(
    settings: TelegramChannel,
    session: aiohttp.ClientSession,
    environ: Mapping[str, str],
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> TelegramNotifier:
    token = secret_or_error(settings.bot_token_env, settings.bot_token_file, environ)
    return TelegramNotifier(session, settings.api_url, token, timeout_s=timeout_s)
