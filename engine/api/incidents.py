"""Incidents: list, show with timeline, and people's actions (ack, unack, resolve, snooze, escalate)."""

from aiohttp import web

from engine.api import actions, keys
from engine.api.body import json_body
from engine.api.requests import ActionBody, OpenBody, ReassignBody, SnoozeBody, StatusBody, validate
from engine.api.views import IncidentList, incident_detail, incident_view
from engine.errors import IncidentNotFound, IngestError
from engine.events import MANUAL_ACTIONS, Event, Reassign, Snooze, StatusUpdate
from engine.manual import ManualIncident, target_problem
from engine.messages import SHOWN_ALERTS
from engine.policy.durations import parse_duration_ms
from engine.policy.matchers import parse_matcher

MAX_SNOOZE_MS = 30 * 86_400_000
# alerts of one incident in an answer, by default and at most: `alert_count` says how many it holds
DETAIL_ALERTS, MAX_ALERTS = 100, 1000


async def list_incidents(request: web.Request) -> web.Response:
    q = request.query
    text = q.get("limit", "100")
    if not (text.isascii() and text.isdigit() and len(text) <= 4 and 1 <= int(text) <= 1000):
        raise IngestError(f"limit: expected a whole number from 1 to 1000, got {text[:40]!r}", status=400)
    limit = int(text)
    label_filters = []
    for text in q.getall("label", []):
        try:
            label_filters.append(parse_matcher(text if any(op in text for op in "=!~") else f'{text}!=""'))
        except ValueError as exc:
            raise IngestError(f"label: {exc}", status=400) from None
    filtered = any(k in q for k in ("status", "severity", "label"))
    # each with the alerts a page shows: a list costs the same however many an incident holds
    incidents = await request.app[keys.store].list_incidents(1000 if filtered else limit, SHOWN_ALERTS)
    out = []
    for inc in incidents:
        if "status" in q and inc.status.value not in q["status"].split(","):
            continue
        if "severity" in q and inc.severity not in q["severity"].split(","):
            continue
        labels = {k: v for a in inc.alerts.values() for k, v in a.labels.items()}  # of those read
        if not all(m.matches(labels) for m in label_filters):
            continue
        out.append(incident_view(inc, _levels(request, inc.policy)))
    reply: IncidentList = {"incidents": out[:limit]}
    return web.json_response(reply)


def _levels(request: web.Request, policy: str) -> int | None:
    found = request.app[keys.policies]().escalation_policies.get(policy)
    return len(found.levels) if found else None


async def get_incident(request: web.Request) -> web.Response:
    store = request.app[keys.store]
    incident_id = request.match_info["id"]
    text = request.query.get("alerts", str(DETAIL_ALERTS))
    if not (text.isascii() and text.isdigit() and len(text) <= 4 and int(text) <= MAX_ALERTS):
        expected = f"expected a whole number from 0 to {MAX_ALERTS}"
        raise IngestError(f"alerts: {expected}, got {text[:40]!r}", status=400)
    inc = await store.load_shown(incident_id, int(text))
    if inc is None:
        raise IncidentNotFound(incident_id)
    detail = incident_detail(inc, _levels(request, inc.policy), await store.timeline(incident_id))
    return web.json_response(detail)


ACTIONS = (*MANUAL_ACTIONS, "snooze", "status", "reassign")


async def incident_action(request: web.Request) -> web.Response:
    app = request.app
    app[keys.auth].check(request)
    action = request.match_info["action"]
    if action not in ACTIONS:
        raise IngestError(f"unknown action {action!r}: use {', '.join(ACTIONS)}", status=404)
    raw = await json_body(request, required=action in ("snooze", "status", "reassign"))
    event = _event(action, raw, request)
    incident_id = request.match_info["id"]
    if isinstance(event, StatusUpdate):
        inc = await actions.post_status(app, incident_id, event.by, event.status, event.message)
    elif isinstance(event, Reassign):
        inc = await actions.reassign(app, incident_id, event.by, event.to, event.note)
    else:
        inc = await app[keys.processor].act(incident_id, event)
    return web.json_response(incident_view(inc, _levels(request, inc.policy)))


def _event(action: str, raw: object, request: web.Request) -> Event:
    if action == "snooze":
        snooze = validate(SnoozeBody, raw)
        try:
            duration_ms = parse_duration_ms(snooze.duration)
        except ValueError as exc:
            raise IngestError(f"duration: {exc}", status=422) from None
        if not 0 < duration_ms <= MAX_SNOOZE_MS:
            raise IngestError("duration: must be more than 0s and at most 30d", status=422)
        return Snooze(snooze.by, duration_ms, snooze.note)
    if action == "status":
        update = validate(StatusBody, raw)
        return StatusUpdate(update.by, update.status, update.message)
    if action == "reassign":
        body = validate(ReassignBody, raw)
        if problem := target_problem(body.to, request.app[keys.policies]()):
            raise IngestError(f"to: {problem}", [{"field": "to", "message": problem}])
        return Reassign(body.by, body.to, body.note)
    plain = validate(ActionBody, raw)
    return MANUAL_ACTIONS[action](plain.by, plain.note)


async def open_incident(request: web.Request) -> web.Response:
    """POST /api/v1/incidents: a customer report pages exactly like an alert does."""
    app = request.app
    app[keys.auth].check(request)
    body = validate(OpenBody, await json_body(request, required=True))
    req = ManualIncident(
        title=body.title,
        reporter=body.reporter,
        severity=body.severity,
        policy=body.policy,
        labels=body.labels,
        description=body.description,
    )
    inc = await app[keys.processor].open_manual(req)
    return web.json_response(incident_view(inc, _levels(request, inc.policy)), status=201)
