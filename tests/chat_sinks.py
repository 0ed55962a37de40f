"""Local stand-ins for chat APIs: a strict Telegram Bot API and a Teams Workflows webhook.

    async with TelegramSink(token="123:abc") as tg:   # api_url = tg.url
        tg.script(Reply(429, {"ok": False, "error_code": 429, "description": "...",
                              "parameters": {"retry_after": 3}}))
        ...
        tg.calls("sendMessage")               # accepted calls' JSON, in order
        tg.messages[(chat_id, message_id)]    # each message as it stands after edits

    async with TeamsSink() as teams:          # teams.url carries ?sig=...; a wrong sig gets 401
        teams.cards                           # the accepted Adaptive Cards (the attachment content)

Like tests/sinks.py: every request is in `.requests`; scripted replies answer the next valid
requests in order; malformed requests are always refused the way the real service would.
"""

import re
from contextvars import ContextVar
from html import unescape
from typing import Any, Self

from aiohttp import web

from tests.sinks import Recorded, Reply, _Sink

__all__ = [
    "TeamsSink",
    "TelegramSink",
    "adaptive_card_problems",
    "telegram_error",
    "telegram_html_problems",
    "visible_text",
]

BOT_TOKEN = "123456:TEST-bot-token"
_TAGS = {"b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "a", "code", "pre", "blockquote"}
_TAG = re.compile(r"<(/?)([a-zA-Z-]+)((?:\s+[a-z-]+=\"[^\"<]*\")*)\s*>")
_ENTITY = re.compile(r"&(?:lt|gt|amp|quot|#\d+|#x[0-9a-fA-F]+);")


def visible_text(text: str) -> str:
    """What a Telegram HTML message shows: tags removed, entities decoded."""
    return unescape(_TAG.sub("", text))


def telegram_html_problems(text: str) -> list[str]:
    """Telegram's "can't parse entities" checks for parse_mode HTML (supported tags, nesting, escapes)."""
    stack: list[str] = []
    pos = 0
    for match in _TAG.finditer(text):
        between = text[pos : match.start()]
        if "<" in between or ">" in between:
            return [f"Unsupported start tag or stray '<' near offset {pos}"]
        closing, name = match.group(1), match.group(2).lower()
        if name not in _TAGS:
            return [f'Unsupported start tag "{name}" at byte offset {match.start()}']
        if closing:
            if not stack or stack.pop() != name:
                return [f'Unmatched end tag at byte offset {match.start()}, expected "</{name}>"']
        else:
            stack.append(name)
        pos = match.end()
    if "<" in text[pos:] or ">" in text[pos:]:
        return ["Unsupported start tag or stray '<'"]
    if stack:
        return [f'Can\'t find end tag corresponding to start tag "{stack[-1]}"']
    for amp in re.finditer("&", text):
        if not _ENTITY.match(text, amp.start()):
            return [f"Unsupported entity or stray '&' at byte offset {amp.start()}"]
    return []


def _utf16(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _markup_problems(markup: Any) -> list[str]:
    if not isinstance(markup, dict) or not isinstance(markup.get("inline_keyboard"), list):
        return ["reply_markup: expected {'inline_keyboard': [[button, ...], ...]}"]
    for row in markup["inline_keyboard"]:
        if not isinstance(row, list):
            return ["reply_markup: each keyboard row must be an array"]
        for button in row:
            if not isinstance(button, dict) or not isinstance(button.get("text"), str) or not button["text"]:
                return ["BUTTON_TEXT_INVALID"]
            kinds = [k for k in ("callback_data", "url") if k in button]
            if len(kinds) != 1:
                return ["BUTTON_TYPE_INVALID"]
            data = button.get("callback_data")
            if data is not None and (not isinstance(data, str) or not 1 <= len(data.encode()) <= 64):
                return ["BUTTON_DATA_INVALID"]
    return []


def _text_problems(doc: dict[str, Any]) -> list[str]:
    text = doc.get("text")
    if not isinstance(text, str) or not text.strip():
        return ["message text is empty"]
    if doc.get("parse_mode") not in (None, "HTML"):
        return ["this sink only speaks parse_mode HTML"]
    if doc.get("parse_mode") == "HTML":
        if problems := telegram_html_problems(text):
            return [f"can't parse entities: {problems[0]}"]
        text = visible_text(text)
    if _utf16(text) > 4096:
        return ["message is too long"]
    if "reply_markup" in doc:
        return _markup_problems(doc["reply_markup"])
    return []


class TelegramSink(_Sink):
    """The Bot API at `url` (`/bot<token>/<method>`): sendMessage, editMessageText, answerCallbackQuery.

    It keeps each message it sent, so an edit to an unknown message fails ("message to edit not
    found") and an edit that changes nothing fails ("message is not modified"), as Telegram does.
    """

    path = ""

    def __init__(self, token: str = BOT_TOKEN) -> None:
        super().__init__()
        self.token = token
        self.accepted: list[tuple[str, dict[str, Any]]] = []
        self.messages: dict[tuple[Any, int], dict[str, Any]] = {}
        self._next_id = 100

    def calls(self, method: str) -> list[dict[str, Any]]:
        return [doc for name, doc in self.accepted if name == method]

    async def _answer(self, request: Recorded) -> Reply:
        match = re.fullmatch(r"/bot([^/]+)/([A-Za-z]+)", request.path)
        if match is None or request.method != "POST":
            return _fail(404, "Not Found")
        if match.group(1) != self.token:
            return _fail(401, "Unauthorized")
        method, doc = match.group(2), request.json
        if not isinstance(doc, dict):
            return _fail(400, "Bad Request: expected a JSON object")
        handler = {
            "sendMessage": self._send,
            "editMessageText": self._edit,
            "answerCallbackQuery": self._callback,
        }.get(method)
        if handler is None:
            return _fail(404, "Not Found: method not found")
        reply = handler(doc)
        if reply is None:  # valid: a scripted reply wins, else the success
            reply = self._next(Reply(200, {"ok": True, "result": self._result(method, doc)}))
            if reply.status == 200:
                self._apply(method, doc)
        return reply

    def _send(self, doc: dict[str, Any]) -> Reply | None:
        if not isinstance(doc.get("chat_id"), int | str) or doc["chat_id"] == "":
            return _fail(400, "Bad Request: chat_id is empty")
        if problems := _text_problems(doc):
            return _fail(400, f"Bad Request: {problems[0]}")
        reply_to = doc.get("reply_parameters")
        if reply_to is not None and (
            not isinstance(reply_to, dict) or type(reply_to.get("message_id")) is not int
        ):
            return _fail(400, "Bad Request: reply_parameters.message_id must be an integer")
        return None

    def _edit(self, doc: dict[str, Any]) -> Reply | None:
        if type(doc.get("message_id")) is not int or not isinstance(doc.get("chat_id"), int | str):
            return _fail(400, "Bad Request: message identifier is not specified")
        if problems := _text_problems(doc):
            return _fail(400, f"Bad Request: {problems[0]}")
        current = self.messages.get((doc["chat_id"], doc["message_id"]))
        if current is None:
            return _fail(400, "Bad Request: message to edit not found")
        if current["text"] == doc["text"] and current.get("reply_markup") == doc.get("reply_markup"):
            return _fail(
                400,
                "Bad Request: message is not modified: specified new message content and reply markup"
                " are exactly the same as a current content and reply markup of the message",
            )
        return None

    def _callback(self, doc: dict[str, Any]) -> Reply | None:
        if not isinstance(doc.get("callback_query_id"), str) or not doc["callback_query_id"]:
            return _fail(400, "Bad Request: QUERY_ID_INVALID")
        text = doc.get("text", "")
        if not isinstance(text, str) or len(text) > 200:
            return _fail(400, "Bad Request: MESSAGE_TOO_LONG")
        if "show_alert" in doc and not isinstance(doc["show_alert"], bool):
            return _fail(400, "Bad Request: show_alert must be a boolean")
        return None

    def _result(self, method: str, doc: dict[str, Any]) -> Any:
        if method == "answerCallbackQuery":
            return True
        if method == "sendMessage":
            self._next_id += 1
            message_id = self._next_id
        else:
            message_id = doc["message_id"]
        chat = doc["chat_id"]
        return {
            "message_id": message_id,
            "date": 1_790_000_000,
            "chat": {"id": chat, "type": "private" if isinstance(chat, int) and chat > 0 else "group"},
            "text": visible_text(doc["text"]),
        }

    def _apply(self, method: str, doc: dict[str, Any]) -> None:
        self.accepted.append((method, doc))
        if method == "sendMessage":
            self.messages[(doc["chat_id"], self._next_id)] = doc
        elif method == "editMessageText":
            self.messages[(doc["chat_id"], doc["message_id"])] = doc


def _fail(code: int, description: str, **parameters: Any) -> Reply:
    doc: dict[str, Any] = {"ok": False, "error_code": code, "description": description}
    if parameters:
        doc["parameters"] = parameters
    return Reply(code, doc)


def telegram_error(code: int, description: str, **parameters: Any) -> Reply:
    """A scripted Bot API refusal: telegram_error(429, "Too Many Requests: retry after 3", retry_after=3)."""
    return _fail(code, description, **parameters)


_query_sig: ContextVar[str | None] = ContextVar("_query_sig", default=None)
_CARD_VERSIONS = {"1.0", "1.1", "1.2", "1.3", "1.4", "1.5"}


def adaptive_card_problems(doc: Any) -> list[str]:
    """What the Workflows "Post card" step would refuse: the message envelope, then the card."""
    if not isinstance(doc, dict) or doc.get("type") != "message":
        return ["body must be an object with type 'message'"]
    attachments = doc.get("attachments")
    if not isinstance(attachments, list) or len(attachments) != 1:
        return ["attachments must hold exactly one card"]
    att = attachments[0]
    if not isinstance(att, dict) or att.get("contentType") != "application/vnd.microsoft.card.adaptive":
        return ["attachment contentType must be application/vnd.microsoft.card.adaptive"]
    card = att.get("content")
    if not isinstance(card, dict) or card.get("type") != "AdaptiveCard":
        return ["attachment content must be an AdaptiveCard"]
    if card.get("version") not in _CARD_VERSIONS:
        return [f"unsupported card version {card.get('version')!r}"]
    body = card.get("body")
    if not isinstance(body, list) or not body:
        return ["card body must be a non-empty array"]
    problems = [p for element in body for p in _element_problems(element)]
    actions = card.get("actions", [])
    if not isinstance(actions, list):
        problems.append("card actions must be an array")
    else:
        problems += [p for action in actions for p in _action_problems(action)]
    return problems


def _element_problems(element: Any) -> list[str]:
    if not isinstance(element, dict) or not isinstance(element.get("type"), str):
        return ["every body element needs a type"]
    kind = element["type"]
    if kind == "TextBlock":
        return [] if isinstance(element.get("text"), str) else ["TextBlock.text must be a string"]
    if kind == "FactSet":
        facts = element.get("facts")
        ok = isinstance(facts, list) and all(
            isinstance(f, dict) and isinstance(f.get("title"), str) and isinstance(f.get("value"), str)
            for f in facts
        )
        return [] if ok else ["FactSet.facts must be [{title, value}] strings"]
    if kind == "ActionSet":
        actions = element.get("actions")
        if not isinstance(actions, list):
            return ["ActionSet.actions must be an array"]
        return [p for action in actions for p in _action_problems(action)]
    if kind in ("Container", "ColumnSet", "Column", "Image"):
        return []
    return [f"unknown element type {kind!r}"]


def _action_problems(action: Any) -> list[str]:
    if not isinstance(action, dict) or action.get("type") != "Action.OpenUrl":
        return ["only Action.OpenUrl works from a Workflows webhook card"]
    url = action.get("url")
    if not isinstance(action.get("title"), str) or not isinstance(url, str) or not url.startswith("http"):
        return ["Action.OpenUrl needs a title and an http(s) url"]
    return []


class TeamsSink(_Sink):
    """A Workflows trigger URL (`url` carries `?sig=`): a wrong signature gets 401, a malformed card
    400, else 202 with no body, as Power Automate answers."""

    path = "/workflows/abc123/triggers/manual/paths/invoke"
    sig = "SIGNATURE-s3cr3t"

    def __init__(self) -> None:
        super().__init__()
        self.cards: list[dict[str, Any]] = []

    async def __aenter__(self) -> Self:
        await super().__aenter__()
        self.url += f"?api-version=1&sig={self.sig}"
        return self

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        _query_sig.set(request.query.get("sig"))  # per request task: Recorded keeps no query
        return await super()._handle(request)

    async def _answer(self, request: Recorded) -> Reply:
        if _query_sig.get() != self.sig:
            return Reply(401, {"error": {"code": "DirectApiAuthorizationRequired", "message": "bad sig"}})
        problems = adaptive_card_problems(request.json)
        if problems:
            return Reply(400, {"error": {"code": "InvalidRequestContent", "message": "; ".join(problems)}})
        reply = self._next(Reply(202))
        if 200 <= reply.status < 300:
            self.cards.append(request.json["attachments"][0]["content"])
        return reply
