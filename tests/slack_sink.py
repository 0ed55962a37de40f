"""A strict local stand-in for Slack's Web API (chat.postMessage, chat.update) and a response_url receiver.

    async with SlackSink(token="xoxb-test") as slack:      # slack.url is the api_url ("…/api/")
        slack.script(Reply(429, headers={"Retry-After": "7"}))  # then normal answers again
        slack.script(Reply(200, {"ok": False, "error": "channel_not_found"}))
        ...
        slack.calls["chat.postMessage"][0]            # accepted request bodies, per method
        slack.messages[("C…", ts)]                    # a message as it looks now (after updates)

Requests are checked as slack.md says Slack would (Bearer token, JSON body, channel, chat.update's
channel+ts, `text` always present, thread_ts a parent's ts, Block Kit limits of §4); a request
that fails a check gets `{"ok": false, "error": ..., "response_metadata": {"messages": [...]}}`
and is never scripted away. Scripted replies apply to valid requests, in order.

    async with ResponseUrlSink() as hook:   # hook.url is a response_url
        hook.requests[0].json
"""

import hashlib
from collections import defaultdict
from typing import Any

from tests.sinks import Recorded, Reply, _Sink

__all__ = ["TOKEN", "ResponseUrlSink", "SlackSink", "block_problems", "view_problems"]

TOKEN = "xoxb-test-token"
_LIMITS = {"header": 150, "section": 3000, "field": 2000, "button": 75, "value": 2000, "id": 255}
_BLOCK_TYPES = {"header", "section", "context", "actions", "divider", "image", "rich_text"}


def _text_problems(where: str, obj: Any, limit: int, plain_only: bool = False) -> list[str]:
    if not isinstance(obj, dict) or obj.get("type") not in ("plain_text", "mrkdwn"):
        return [f"{where}: must be a text object of type plain_text or mrkdwn"]
    if plain_only and obj["type"] != "plain_text":
        return [f"{where}: must be plain_text"]
    text = obj.get("text")
    if not isinstance(text, str) or not text:
        return [f"{where}.text: must be a non-empty string"]
    return [f"{where}.text: longer than {limit} characters"] if len(text) > limit else []


def _button_problems(where: str, el: Any, action_ids: set[str]) -> list[str]:
    if not isinstance(el, dict) or el.get("type") != "button":
        return [f"{where}: only buttons are expected"]
    problems = _text_problems(f"{where}.text", el.get("text"), _LIMITS["button"], plain_only=True)
    action_id = el.get("action_id")
    if not isinstance(action_id, str) or not action_id or len(action_id) > _LIMITS["id"]:
        problems.append(f"{where}.action_id: must be 1 to 255 characters")
    elif action_id in action_ids:
        problems.append(f"{where}.action_id: {action_id!r} is not unique in the message")
    else:
        action_ids.add(action_id)
    if "value" in el and (not isinstance(el["value"], str) or len(el["value"]) > _LIMITS["value"]):
        problems.append(f"{where}.value: must be a string of at most 2000 characters")
    if el.get("style") not in (None, "primary", "danger"):
        problems.append(f"{where}.style: must be primary or danger")
    return problems


def _id_problems(where: str, block: dict[str, Any], ids: set[str]) -> list[str]:
    block_id = block.get("block_id")
    if block_id is None:
        return []
    if not isinstance(block_id, str) or not block_id or len(block_id) > _LIMITS["id"]:
        return [f"{where}.block_id: must be 1 to 255 characters"]
    if block_id in ids:
        return [f"{where}.block_id: {block_id!r} is not unique"]
    ids.add(block_id)
    return []


def _section_problems(where: str, block: dict[str, Any]) -> list[str]:
    if "text" not in block and "fields" not in block:
        return [f"{where}: a section needs text or fields"]
    problems = _text_problems(f"{where}.text", block["text"], _LIMITS["section"]) if "text" in block else []
    fields = block.get("fields", [])
    if not isinstance(fields, list) or len(fields) > 10:
        return [*problems, f"{where}.fields: at most 10 items"]
    for i, f in enumerate(fields):
        problems += _text_problems(f"{where}.fields[{i}]", f, _LIMITS["field"])
    return problems


def _elements_problems(where: str, block: dict[str, Any], action_ids: set[str]) -> list[str]:
    elements = block.get("elements")
    most = 25 if block["type"] == "actions" else 10
    if not isinstance(elements, list) or not 1 <= len(elements) <= most:
        return [f"{where}.elements: 1 to {most} items"]
    problems = []
    for i, el in enumerate(elements):
        at = f"{where}.elements[{i}]"
        if block["type"] == "actions":
            problems += _button_problems(at, el, action_ids)
        else:
            problems += _text_problems(at, el, _LIMITS["section"])
    return problems


def _block_problems(where: str, block: Any, ids: set[str], action_ids: set[str]) -> list[str]:
    if not isinstance(block, dict) or block.get("type") not in _BLOCK_TYPES:
        return [f"{where}: unknown block type"]
    problems = _id_problems(where, block, ids)
    kind = block["type"]
    if kind == "header":
        problems += _text_problems(f"{where}.text", block.get("text"), _LIMITS["header"], plain_only=True)
    elif kind == "section":
        problems += _section_problems(where, block)
    elif kind in ("context", "actions"):
        problems += _elements_problems(where, block, action_ids)
    return problems


def block_problems(blocks: Any) -> list[str]:
    """What Block Kit would refuse in `blocks` (empty when valid), per slack.md §4."""
    if not isinstance(blocks, list):
        return ["blocks: must be an array"]
    if len(blocks) > 50:
        return [f"blocks: {len(blocks)} blocks, at most 50"]
    ids: set[str] = set()
    action_ids: set[str] = set()
    return [p for i, b in enumerate(blocks) for p in _block_problems(f"blocks[{i}]", b, ids, action_ids)]


class SlackSink(_Sink):
    """Answers like Slack: HTTP 200 with {"ok": true, "channel", "ts", "message"} or {"ok": false}."""

    path = "/api/"

    def __init__(self, token: str = TOKEN) -> None:
        super().__init__()
        self.token = token
        self.calls: dict[str, list[dict[str, Any]]] = defaultdict(list)  # accepted bodies
        self.messages: dict[tuple[str, str], dict[str, Any]] = {}  # parents and replies, as now
        self.parents: set[tuple[str, str]] = set()
        self._seq = 0

    @staticmethod
    def channel_id(address: str) -> str:
        """The id Slack answers with: a user id opens the DM "D…", a "#name" becomes a stable "C…"."""
        if address.startswith("U"):
            return "D" + address[1:]
        if address.startswith("#"):
            return "C" + hashlib.sha256(address.encode()).hexdigest()[:10].upper()
        return address

    def forget(self, channel: str, ts: str) -> None:
        """Delete a message, as someone in Slack would: chat.update then says message_not_found."""
        self.messages.pop((channel, ts), None)

    def _views_open(self, request: Recorded) -> Reply:
        """views.open: the bot token, a trigger_id and a valid modal; recorded in calls["views.open"]."""
        body = request.json
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return Reply(200, {"ok": False, "error": "invalid_auth"})
        problems = [] if isinstance(body, dict) and body.get("trigger_id") else ["trigger_id: required"]
        problems += view_problems(body.get("view") if isinstance(body, dict) else None)
        if problems:
            return Reply(
                200, {"ok": False, "error": "invalid_arguments", "response_metadata": {"messages": problems}}
            )
        self.calls["views.open"].append(body)
        return Reply(200, {"ok": True, "view": {**body["view"], "id": "V0MODAL01"}})

    def _problems(self, method: str, request: Recorded) -> tuple[str, list[str]]:
        if request.method != "POST":
            return "invalid_request", ["only POST is expected"]
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            absent = "Authorization" not in request.headers
            return ("not_authed" if absent else "invalid_auth"), ["Authorization: Bearer <bot token>"]
        if not request.headers.get("Content-Type", "").startswith("application/json"):
            return "invalid_form_data", ["the body must be JSON (Content-Type: application/json)"]
        body = request.json
        if not isinstance(body, dict):
            return "json_not_object", ["the body must be a JSON object"]
        problems = []
        if not isinstance(body.get("channel"), str) or not body["channel"]:
            problems.append("channel: required")
        if not isinstance(body.get("text"), str) or not body["text"].strip():
            problems.append("text: always send it, it is the notification fallback")
        if "blocks" in body:
            problems += block_problems(body["blocks"])
        if method == "chat.update" and not isinstance(body.get("ts"), str):
            problems.append("ts: required by chat.update")
        if method == "chat.update" and str(body.get("channel", "")).startswith(("U", "#")):
            problems.append("channel: chat.update needs the channel id the post returned")
        thread = body.get("thread_ts")
        if thread is not None and (self.channel_id(str(body.get("channel"))), thread) not in self.parents:
            problems.append("thread_ts: not the ts of a parent message in this channel")
        if problems:
            return (
                "invalid_blocks" if any(p.startswith("blocks") for p in problems) else "invalid_arguments"
            ), problems
        return "", []

    async def _answer(self, request: Recorded) -> Reply:
        method = request.path.rsplit("/", 1)[-1]
        if method == "views.open":
            return self._views_open(request)
        if method not in ("chat.postMessage", "chat.update"):
            return Reply(200, {"ok": False, "error": "unknown_method"})
        error, problems = self._problems(method, request)
        if error:
            return Reply(200, {"ok": False, "error": error, "response_metadata": {"messages": problems}})
        body: dict[str, Any] = request.json
        channel = self.channel_id(body["channel"])
        if method == "chat.update":
            if (channel, body["ts"]) not in self.messages:
                return Reply(200, {"ok": False, "error": "message_not_found"})
            ts = body["ts"]
        else:
            self._seq += 1
            ts = f"1795455912.{self._seq:06d}"
        message = {"type": "message", "text": body["text"], "blocks": body.get("blocks", []), "ts": ts}
        reply = self._next(Reply(200, {"ok": True, "channel": channel, "ts": ts, "message": message}))
        if reply.status == 200 and isinstance(reply.json, dict) and reply.json.get("ok"):
            self.calls[method].append(body)
            if method == "chat.update" and "blocks" not in body:
                message["blocks"] = self.messages[(channel, ts)]["blocks"]  # omitted blocks are kept
            self.messages[(channel, ts)] = message
            if method == "chat.postMessage" and "thread_ts" not in body:
                self.parents.add((channel, ts))
        return reply


def view_problems(view: Any) -> list[str]:
    """What views.open would refuse in a modal view (the limits of Slack's view objects)."""
    if not isinstance(view, dict) or view.get("type") != "modal":
        return ["view.type: must be modal"]
    problems = []
    title = view.get("title")
    if (
        not isinstance(title, dict)
        or title.get("type") != "plain_text"
        or not 0 < len(title.get("text", "")) <= 24
    ):
        problems.append("view.title: plain_text of 1 to 24 characters")
    if len(str(view.get("private_metadata", ""))) > 3000 or len(str(view.get("callback_id", ""))) > 255:
        problems.append("view.private_metadata/callback_id: too long")
    blocks = view.get("blocks")
    if not isinstance(blocks, list) or not blocks:
        return [*problems, "view.blocks: required"]
    if any(b.get("type") == "input" for b in blocks) and not isinstance(view.get("submit"), dict):
        problems.append("view.submit: required with input blocks")
    for i, b in enumerate(blocks):
        if b.get("type") == "input" and not (isinstance(b.get("element"), dict) and b.get("label")):
            problems.append(f"view.blocks[{i}]: an input needs a label and an element")
    return problems


class ResponseUrlSink(_Sink):
    """Records what is POSTed to an interaction's response_url; answers 200 {"ok": true}."""

    path = "/actions/T0TEAM001/1234567890123/AbCdEfGhIjKlMnOpQrStUvWx"

    async def _answer(self, request: Recorded) -> Reply:
        return self._next(Reply(200, {"ok": True}))
