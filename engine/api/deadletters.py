"""Dead letters: notifications that finally failed, listed for people and re-driven by them."""

import json

from aiohttp import web

from engine.api import keys
from engine.api.views import DeadLetterList, DeadLetterView
from engine.errors import IngestError
from engine.store.base import DeadLetter
from engine.timeline import EntryKind, TimelineEntry
from engine.times import rfc3339


def _view(d: DeadLetter) -> DeadLetterView:
    view: DeadLetterView = {
        "id": d.id,
        "channel": d.channel or None,
        "reason": d.reason,
        "at": rfc3339(d.at_ms),
    }
    try:
        raw = json.loads(d.message)
    except ValueError:
        raw = None
    if isinstance(raw, dict):
        view["incident_id"] = str(raw.get("incident_id", ""))
        view["action"] = str(raw.get("action", ""))
        view["target"] = str(raw.get("target", ""))
        view["address"] = None if raw.get("address") is None else str(raw["address"])
        view["attempts"] = int(raw.get("attempt", 0)) + 1
        view["message"] = raw
    else:
        view["raw"] = d.message[:2000]
    return view


async def list_dead_letters(request: web.Request) -> web.Response:
    text = request.query.get("limit", "100")
    if not (text.isascii() and text.isdigit() and len(text) <= 4 and 1 <= int(text) <= 1000):
        raise IngestError(f"limit: expected a whole number from 1 to 1000, got {text[:40]!r}", status=400)
    found = await request.app[keys.store].dead_letters(int(text))
    reply: DeadLetterList = {"dead_letters": [_view(d) for d in found]}
    return web.json_response(reply)


async def redrive(request: web.Request) -> web.Response:
    """Queue a dead letter again from its first attempt; it is sent only if it still applies
    (a page for an incident acknowledged since is skipped, and the timeline says so)."""
    app = request.app
    app[keys.auth].check(request)
    dead_id = request.match_info["id"]
    store = app[keys.store]
    try:
        message = await store.redrive(dead_id)
    except (ValueError, KeyError, TypeError) as exc:
        raise IngestError(
            f"dead letter {dead_id} is not a notification and cannot be re-driven: {exc}", status=422
        ) from None
    if message is None:
        raise IngestError(f"no dead letter {dead_id} (or it was re-driven already)", status=404)
    where = f"{message.action} to {message.target}"
    if message.address is not None:
        where += f" via {message.address.channel}:{message.address.name}"
    now_ms = app[keys.processor].clock.now_ms()
    entry = TimelineEntry(now_ms, EntryKind.REDRIVEN, "api", f"dead letter {dead_id} re-driven: {where}")
    await store.append_timeline(message.incident_id, entry)
    return web.json_response(
        {"redriven": dead_id, "incident_id": message.incident_id, "queued": where}, status=202
    )
