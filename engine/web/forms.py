"""The console's POST handlers: every change goes through engine.api.actions (or open_manual),
the one write path the API, chat and signed links use too. Each answers 303 back to the page,
with a flash message saying what happened (or what was wrong)."""

import re

from aiohttp import web

from engine.api import actions, keys
from engine.errors import IngestError
from engine.events import UPDATE_STATUSES
from engine.incident import Incident
from engine.manual import ManualIncident, target_problem
from engine.policy.durations import parse_duration_ms
from engine.web.base import action, display_name, flash, see_other
from engine.web.pages import SNOOZE_CHOICES
from engine.web.session import Session

VERBS = {
    "ack": "Acknowledged",
    "unack": "Acknowledgement withdrawn",
    "resolve": "Resolved",
    "escalate": "Escalated to the next level",
    "snooze": "Snoozed",
}
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
MAX_NOTE = 4096
MAX_TITLE = 512
MAX_LABELS = 30


def _text(fields: dict[str, str], name: str, limit: int, *, required: str = "") -> str:
    value = fields.get(name, "").strip()
    if required and not value:
        raise IngestError(f"{required} is required")
    if len(value) > limit:
        raise IngestError(f"{name}: at most {limit} characters")
    return value


def _page_of(inc_id: str) -> str:
    return f"/incidents/{inc_id}"


async def _done(request: web.Request, s: Session, location: str, text: str) -> web.Response:
    resp = see_other(location)
    await flash(request, resp, s, "ok", text)
    return resp


async def _verb(request: web.Request, s: Session, fields: dict[str, str]) -> web.StreamResponse:
    incident_id, verb = request.match_info["id"], request.match_info["verb"]
    fields.setdefault("back", _page_of(incident_id))
    if verb not in VERBS:
        raise IngestError(f"unknown action {verb!r}")
    note = _text(fields, "note", MAX_NOTE)
    snooze_ms = 0
    if verb == "snooze":
        duration = fields.get("duration", "")
        if duration not in SNOOZE_CHOICES:
            raise IngestError(f"snooze: choose one of {', '.join(SNOOZE_CHOICES)}")
        snooze_ms = parse_duration_ms(duration)
    inc = await actions.act(request.app, incident_id, verb, display_name(s), note=note, snooze_ms=snooze_ms)
    what = VERBS[verb] + (f" for {fields['duration']}" if verb == "snooze" else "")
    return await _done(request, s, _page_of(inc.id), f"{what}: the incident is now {inc.status.value}.")


async def _status(request: web.Request, s: Session, fields: dict[str, str]) -> web.StreamResponse:
    incident_id = request.match_info["id"]
    fields.setdefault("back", _page_of(incident_id))
    status = fields.get("status", "")
    if status not in UPDATE_STATUSES:
        raise IngestError(f"status: choose one of {', '.join(UPDATE_STATUSES)}")
    message = _text(fields, "message", MAX_NOTE, required="A message")
    inc = await actions.post_status(request.app, incident_id, display_name(s), status, message)
    n = len(inc.updates)
    return await _done(request, s, _page_of(inc.id), f"Status update #{n} ({status}) posted.")


async def _reassign(request: web.Request, s: Session, fields: dict[str, str]) -> web.StreamResponse:
    incident_id = request.match_info["id"]
    fields.setdefault("back", _page_of(incident_id))
    to = _text(fields, "to_text", 256) or _text(fields, "to", 256)
    if not to:
        raise IngestError("Reassign: choose a target or type one (user:NAME, schedule:NAME, team:NAME...)")
    if problem := target_problem(to, request.app[keys.policies]()):
        raise IngestError(f"Reassign: {problem}")
    note = _text(fields, "note", MAX_NOTE)
    inc = await actions.reassign(request.app, incident_id, display_name(s), to, note)
    return await _done(request, s, _page_of(inc.id), f"Reassigned to {to}: they are paged now.")


def parse_labels(text: str) -> dict[str, str]:
    """`name=value` lines (blank lines ignored) as labels; IngestError naming the bad line."""
    labels: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        name, eq, value = line.partition("=")
        name, value = name.strip(), value.strip()
        if not eq or not LABEL_NAME.fullmatch(name):
            raise IngestError(f"labels, line {n}: expected name=value with a label name such as service")
        labels[name] = value
    if len(labels) > MAX_LABELS:
        raise IngestError(f"labels: at most {MAX_LABELS}")
    return labels


async def _open(request: web.Request, s: Session, fields: dict[str, str]) -> web.StreamResponse:
    fields.setdefault("back", "/incidents/new")
    policies = request.app[keys.policies]()
    severity = fields.get("severity") or None
    policy = fields.get("policy") or None
    if severity is not None and severity not in policies.severities:
        raise IngestError(f"severity: no severity {severity!r}")
    if policy is not None and policy not in policies.escalation_policies:
        raise IngestError(f"policy: no escalation policy {policy!r}")
    req = ManualIncident(
        title=_text(fields, "title", MAX_TITLE, required="A title"),
        reporter=_text(fields, "reporter", 256) or display_name(s),
        severity=severity,
        policy=policy,
        labels=parse_labels(fields.get("labels", "")),
        description=_text(fields, "description", 8192),
    )
    inc: Incident = await request.app[keys.processor].open_manual(req)
    return await _done(request, s, _page_of(inc.id), f"Incident {inc.id} opened ({inc.severity}).")


verb = action(_verb)
status = action(_status)
reassign = action(_reassign)
open_incident = action(_open)
