"""The post-incident review and the incident report. The handlers load data; engine/reports.py
(pure) does the work."""

import asyncio

from aiohttp import web

from engine import reports
from engine.api import keys
from engine.errors import IncidentNotFound, IngestError
from engine.incident import Incident
from engine.policy.durations import parse_duration_ms
from engine.timeline import TimelineEntry

MAX_INCIDENTS = 10_000  # a report reads at most this many of the newest incidents
MAX_SINCE_MS = 366 * 86_400_000
TIMELINE_BATCH = 200  # timelines read concurrently, this many at a time


async def postmortem(request: web.Request) -> web.Response:
    store = request.app[keys.store]
    incident_id = request.match_info["id"]
    inc = await store.load(incident_id)
    if inc is None:
        raise IncidentNotFound(incident_id)
    timeline = await store.timeline(incident_id)
    now_ms = request.app[keys.processor].clock.now_ms()
    text = reports.postmortem(inc, timeline, request.app[keys.policies](), now_ms)
    return web.Response(text=text, content_type="text/markdown", charset="utf-8")


def _since_ms(text: str) -> int:
    try:
        since = parse_duration_ms(text)
    except ValueError as exc:
        raise IngestError(f"since: {exc}", status=400) from None
    if not 0 < since <= MAX_SINCE_MS:
        raise IngestError(f"since: must be more than 0s and at most 366d, got {text[:40]!r}", status=400)
    return since


async def report(request: web.Request) -> web.Response:
    q = request.query
    since = _since_ms(q.get("since", "30d"))
    form = q.get("format", "json")
    if form not in ("json", "markdown"):
        raise IngestError(f"format: expected json or markdown, got {form[:40]!r}", status=400)
    store = request.app[keys.store]
    now_ms = request.app[keys.processor].clock.now_ms()
    since_ms = now_ms - since
    newest = await store.list_incidents(MAX_INCIDENTS)
    chosen: list[Incident] = []
    for inc in newest:  # newest first: stop at the first one older than the window
        if inc.created_ms < since_ms:
            break
        chosen.append(inc)
    truncated = len(newest) >= MAX_INCIDENTS and len(chosen) == len(newest)
    timelines: list[list[TimelineEntry]] = []
    for start in range(0, len(chosen), TIMELINE_BATCH):
        batch = chosen[start : start + TIMELINE_BATCH]
        timelines += await asyncio.gather(*(store.timeline(inc.id) for inc in batch))
    data = reports.report(zip(chosen, timelines, strict=True), request.app[keys.policies](), since_ms, now_ms)
    data["truncated"] = truncated
    if form == "markdown":
        return web.Response(text=reports.report_markdown(data), content_type="text/markdown", charset="utf-8")
    return web.json_response(data)
