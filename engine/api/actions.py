"""People's actions on an incident from wherever they click: API, Slack, Telegram, signed links."""

import asyncio
from collections.abc import Coroutine
from typing import Any

import structlog
from aiohttp import web

from engine.api import keys
from engine.errors import IncidentNotFound, IngestError
from engine.events import MANUAL_ACTIONS, Event, Reassign, Snooze, StatusUpdate
from engine.incident import Incident

log = structlog.get_logger(__name__)
VERBS = ("ack", "unack", "resolve", "escalate", "snooze")


async def act(
    app: web.Application, incident_id: str, verb: str, by: str, *, note: str = "", snooze_ms: int = 0
) -> Incident:
    """Run one action through the processor (the one write path); raises IncidentNotFound."""
    event: Event = Snooze(by, snooze_ms, note) if verb == "snooze" else MANUAL_ACTIONS[verb](by, note)
    return await app[keys.processor].act(incident_id, event)


async def _still_open(app: web.Application, incident_id: str, what: str) -> None:
    """A resolved incident takes no update and no new owner: say so (409), never a silent 200."""
    inc = await app[keys.store].load(incident_id)
    if inc is None:
        raise IncidentNotFound(incident_id)
    if not inc.is_open:
        raise IngestError(f"incident {incident_id} is resolved: {what}", status=409)


async def post_status(app: web.Application, incident_id: str, by: str, status: str, message: str) -> Incident:
    """A status update (UPDATE #n) to everyone paged; `status` one of events.UPDATE_STATUSES."""
    await _still_open(app, incident_id, "post-incident notes go in its review, not in an update")
    return await app[keys.processor].act(incident_id, StatusUpdate(by, status, message))


async def reassign(app: web.Application, incident_id: str, by: str, to: str, note: str = "") -> Incident:
    """Hand the incident to `to` (checked by the caller: manual.target_problem)."""
    await _still_open(app, incident_id, "there is nothing to hand over")
    return await app[keys.processor].act(incident_id, Reassign(by, to, note))


_background: set["asyncio.Task[None]"] = set()  # chat clicks still running after their answer
CHAT_ANSWER_WITHIN_S = 2.0  # Slack shows an error after 3 s without an answer


async def within(work: Coroutine[Any, Any, None], what: str) -> bool:
    """Run a chat click's work; wait for it at most CHAT_ANSWER_WITHIN_S, then let it finish in
    the background (the chat must be answered in time). True when it finished in time."""
    task = asyncio.ensure_future(work)
    _background.add(task)
    task.add_done_callback(_background.discard)
    done, _ = await asyncio.wait({task}, timeout=CHAT_ANSWER_WITHIN_S)
    if not done:
        log.info("chat_action_in_background", what=what)
    return bool(done)


async def drain(timeout_s: float = 5.0) -> None:
    """Let clicks still running finish (at shutdown, before the store closes)."""
    if _background:
        await asyncio.wait(set(_background), timeout=timeout_s)
