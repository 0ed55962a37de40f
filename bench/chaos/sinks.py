"""Every channel's receiver, answering after a random delay so that kills land mid-send.

The HTTP receivers are the test suite's strict stand-ins (tests/sinks.py, tests/chat_sinks.py,
tests/slack_sink.py), subclassed to hold each answer back and to turn each accepted request into
a `Seen`: which incident, channel, action and level it delivers. Email is an aiosmtpd server on
this process's event loop. What counts as one delivery of a message:

- PagerDuty: an event (trigger: dedup_key = incident, custom_details.level; ack / resolve).
- webhook: a POST; it also carries the engine's event id, stable across redeliveries.
- Slack: a chat.postMessage (the first post, or the thread reply of a later message); the
  chat.update of the page that comes with a later message is part of that same delivery.
- Telegram: a sendMessage (first message or reply); edits are part of the delivery.
- Teams: a card. Email: a DATA accepted.
"""

import asyncio
import email
import email.policy
import random
import re
import time
from abc import ABC, abstractmethod
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from bench.chaos.policy import MARKER, SLACK_TOKEN, TELEGRAM_TOKEN, slack_channel, telegram_chat
from tests.chat_sinks import TeamsSink, TelegramSink
from tests.sinks import PagerDutySink, Recorded, Reply, WebhookSink
from tests.slack_sink import SlackSink

Key = tuple[str, str, str, int]  # incident, channel, action (trigger|acknowledge|resolve), level


@dataclass(frozen=True, slots=True)
class Seen:
    """One delivery of one message, as a receiver accepted it."""

    at: float  # wall clock, seconds (the engine's timeline is on the same clock)
    channel: str
    lane: int  # which lane's address it went to (must be the incident's)
    incident: str
    action: str
    level: int  # 0-based ladder level for a trigger, 0 for acknowledge / resolve
    event_id: str = ""  # the engine's event id, where the channel carries one

    @property
    def key(self) -> Key:
        return (self.incident, self.channel, self.action, self.level)


@dataclass
class Recorder:
    """What every receiver saw; the delays they answer with."""

    rng: random.Random
    delay_s: tuple[float, float]
    seen: list[Seen] = field(default_factory=list)
    by_key: dict[Key, list[Seen]] = field(default_factory=lambda: defaultdict(list))
    requests: Counter[str] = field(default_factory=Counter)  # every request, per channel
    refused: Counter[str] = field(default_factory=Counter)  # answered non-2xx / ok: false
    unreadable: list[str] = field(default_factory=list)  # accepted, but not about a chaos incident
    last_at: float = 0.0  # monotonic time of the last request anywhere: for "quiet"

    def delayed(self, reply: Reply) -> Reply:
        return replace(reply, delay_s=self.rng.uniform(*self.delay_s))

    def request(self, channel: str) -> float:
        self.requests[channel] += 1
        self.last_at = time.monotonic()
        return time.time()

    def add(self, seen: Seen | None, channel: str, what: str) -> None:
        if seen is None:
            self.unreadable.append(f"{channel}: {what[:200]}")
            return
        self.seen.append(seen)
        self.by_key[seen.key].append(seen)

    def has(self, keys: list[Key]) -> bool:
        return all(k in self.by_key for k in keys)


def _ok(reply: Reply) -> bool:
    if not 200 <= reply.status < 300:
        return False
    return not (isinstance(reply.json, dict) and reply.json.get("ok") is False)


def _marked(at: float, channel: str, lane: int, text: str, event_id: str = "") -> Seen | None:
    """A Seen from the title marker `CHAOS <id> <kind> L<n>` somewhere in `text`."""
    found = MARKER.search(text)
    if found is None:
        return None
    incident, kind, shown = found.group(1), found.group(2), int(found.group(3))
    action = "trigger" if kind in ("trigger", "escalation") else kind
    level = shown - 1 if action == "trigger" else 0
    return Seen(at, channel, lane, incident, action, level, event_id)


def _lane_in_path(path: str) -> int:
    found = re.search(r"lane-(\d+)", path)
    return int(found.group(1)) if found else -1


class Late(ABC):
    """What every HTTP receiver here does around the stand-in's own answer: hold it back, count
    the request, count a refusal, and turn an accepted request into what it delivered."""

    rec: "Recorder"
    channel = ""

    def _next(self, default: Reply) -> Reply:
        return self.rec.delayed(super()._next(default))  # type: ignore[misc]

    async def _answer(self, request: Recorded) -> Reply:
        at = self.rec.request(self.channel)
        reply: Reply = await super()._answer(request)  # type: ignore[misc]
        if _ok(reply) and self.readable(request):
            self.delivered(at, request, reply)
        else:
            self.rec.refused[self.channel] += 1
        return reply

    def readable(self, request: Recorded) -> bool:
        return True

    @abstractmethod
    def delivered(self, at: float, request: Recorded, reply: Reply) -> None: ...


class PagerDuty(Late, PagerDutySink):
    channel = "pagerduty"

    def __init__(self, rec: Recorder) -> None:
        super().__init__()
        self.rec = rec

    def delivered(self, at: float, request: Recorded, reply: Reply) -> None:
        event: dict[str, Any] = request.json
        lane = int(str(event["routing_key"])[:8]) if str(event["routing_key"])[:8].isdigit() else -1
        action = str(event["event_action"])
        level = int(event["payload"]["custom_details"]["level"]) if action == "trigger" else 0
        seen = Seen(at, "pagerduty", lane, str(event.get("dedup_key")), action, level)
        self.rec.add(seen, "pagerduty", request.body.decode(errors="replace"))


class Webhook(Late, WebhookSink):
    channel = "webhook"

    def __init__(self, rec: Recorder, secret: str) -> None:
        super().__init__(secret)
        self.rec = rec

    def readable(self, request: Recorded) -> bool:
        return isinstance(request.json, dict)

    def delivered(self, at: float, request: Recorded, reply: Reply) -> None:
        body = request.json
        action = str(body.get("action"))
        level = int(body.get("level", 0)) if action == "trigger" else 0
        seen = Seen(
            at,
            "webhook",
            _lane_in_path(request.path),
            str(body.get("incident_id")),
            action,
            level,
            str(body.get("event_id", "")),
        )
        self.rec.add(seen, "webhook", request.body.decode(errors="replace"))


class Slack(Late, SlackSink):
    channel = "slack"

    def __init__(self, rec: Recorder, lanes: int) -> None:
        super().__init__(SLACK_TOKEN)
        self.rec = rec
        # a thread reply names the channel by the id the first post returned
        self.lane_of = {self.channel_id(slack_channel(n)): n for n in range(lanes)}

    def delivered(self, at: float, request: Recorded, reply: Reply) -> None:
        if not request.path.endswith("/chat.postMessage"):
            return  # chat.update: the page edited as part of a later message's delivery
        body: dict[str, Any] = request.json
        lane = self.lane_of.get(self.channel_id(str(body.get("channel"))), -1)
        self.rec.add(_marked(at, "slack", lane, str(body.get("text"))), "slack", str(body.get("text")))


class Telegram(Late, TelegramSink):
    channel = "telegram"

    def __init__(self, rec: Recorder) -> None:
        super().__init__(TELEGRAM_TOKEN)
        self.rec = rec
        self.incident_of: dict[tuple[Any, int], str] = {}  # (chat, message id) -> incident

    def delivered(self, at: float, request: Recorded, reply: Reply) -> None:
        if not request.path.endswith("/sendMessage"):
            return  # an edit: part of the delivery of the reply that follows it
        doc: dict[str, Any] = request.json
        chat, text = doc["chat_id"], str(doc["text"])
        lane = chat - telegram_chat(0) if isinstance(chat, int) else -1
        seen = _marked(at, "telegram", lane, text)
        if seen is not None and isinstance(reply.json, dict):
            self.incident_of[(chat, reply.json["result"]["message_id"])] = seen.incident
        elif seen is None:
            # "✅ Acknowledged by chaos" under the incident's first message: no title in it
            parent = self.incident_of.get((chat, (doc.get("reply_parameters") or {}).get("message_id", -1)))
            verb = "acknowledge" if "Acknowledged" in text else "resolve" if "Resolved" in text else ""
            if parent is not None and verb:
                seen = Seen(at, "telegram", lane, parent, verb, 0)
        self.rec.add(seen, "telegram", text)


class Teams(Late, TeamsSink):
    channel = "teams"

    def __init__(self, rec: Recorder) -> None:
        super().__init__()
        self.rec = rec

    def delivered(self, at: float, request: Recorded, reply: Reply) -> None:
        card = request.json["attachments"][0]["content"]
        title = str(card["body"][0].get("text", ""))
        self.rec.add(_marked(at, "teams", _lane_in_path(request.path), title), "teams", title)


class SmtpHandler:
    """aiosmtpd handler: records each message at DATA, answers 250 after the delay."""

    def __init__(self, rec: Recorder) -> None:
        self.rec = rec

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        at = self.rec.request("email")
        content = envelope.content if isinstance(envelope.content, bytes) else b""
        msg = email.message_from_bytes(content, policy=email.policy.default)
        subject = str(msg.get("Subject", ""))
        rcpt = envelope.rcpt_tos[0] if envelope.rcpt_tos else ""
        found = re.fullmatch(r"lane-(\d+)@chaos\.test", rcpt)
        seen = _marked(at, "email", int(found.group(1)) if found else -1, subject)
        self.rec.add(seen, "email", subject)
        await asyncio.sleep(self.rec.rng.uniform(*self.rec.delay_s))
        return "250 Message accepted for delivery"


async def start_smtp(rec: Recorder) -> tuple[asyncio.Server, int]:
    handler = SmtpHandler(rec)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(handler, hostname="chaos.test", loop=loop), "127.0.0.1", 0)
    port: int = server.sockets[0].getsockname()[1]
    return server, port
