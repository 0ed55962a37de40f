"""JSON shapes the API answers with. Each is a TypedDict: the type checker holds the handlers to
it, and the OpenAPI document is generated from the same types (api/openapi.py)."""

from typing import Any, Literal, Required

from typing_extensions import TypedDict  # pydantic reads TypedDicts from here on Python < 3.12

from engine.incident import Incident
from engine.timeline import TimelineEntry
from engine.times import rfc3339

Stamp = str | None  # RFC 3339 with milliseconds and Z, or null


class AlertView(TypedDict):
    fingerprint: str
    status: Literal["firing", "resolved"]
    severity: str
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: Stamp
    ends_at: Stamp
    generator_url: str


class UpdateView(TypedDict):
    number: int
    status: str  # investigating | identified | monitoring | resolved
    message: str
    by: str
    at: Stamp


class IncidentView(TypedDict):
    id: str
    title: str
    status: Literal["triggered", "acknowledged", "snoozed", "resolved"]
    severity: str
    policy: str
    rule: str
    key: str
    created_at: Stamp
    level: int  # 1-based ladder level last paged; 0 before the first page
    next_wakeup_at: Stamp
    acknowledged_by: str | None
    acknowledged_at: Stamp
    snoozed_until: Stamp
    resolved_by: str | None
    resolved_at: Stamp
    time_to_acknowledge_s: float | None
    time_to_resolve_s: float | None
    paged: list[str]
    assignee: str | None  # the target it was last reassigned to
    opened_by: str | None  # who opened it by hand (null: an alert did)
    updates: list[UpdateView]  # status updates, oldest first
    next_update_due_at: Stamp  # when the next status update is due (the severity's update_every)
    duplicates: int
    alert_count: int  # every alert it holds
    firing: int  # the firing ones among them
    alerts: list[AlertView]  # some of them (see the request), the firing ones first


class TimelineItem(TypedDict):
    at: str
    kind: str
    actor: str
    text: str


class IncidentDetail(IncidentView):
    timeline: list[TimelineItem]


class IncidentList(TypedDict):
    incidents: list[IncidentView]


class IngestReply(TypedDict):
    status: Literal["ok"]
    alerts: int
    incidents: list[str]
    opened: int
    duplicates: int
    truncated_alerts: int


class ReloadReply(TypedDict):
    status: Literal["reloaded"]
    policies: str  # what is in force now, e.g. "4 severities, 5 rules, ..."


class DeadLetterView(TypedDict, total=False):
    id: Required[str]  # `<shard>-<stream id>`, for POST /api/v1/deadletters/{id}/redrive
    channel: Required[str | None]  # the channel it failed on (None: before the channel split)
    reason: Required[str]  # what happened, as the timeline said it
    at: Required[str]  # when it was given up on (RFC 3339)
    incident_id: str
    action: str
    target: str
    address: str | None
    attempts: int
    message: dict[str, Any]  # the notification as queued
    raw: str  # instead of the fields above: an entry that is not a notification (first 2000 chars)


class DeadLetterList(TypedDict):
    dead_letters: list[DeadLetterView]


class RedriveReply(TypedDict):
    redriven: str
    incident_id: str
    queued: str  # e.g. "trigger to user:alice via slack:U01ALICE"


class ErrorReply(TypedDict):
    error: str
    detail: Any


def _at(ms: int | None) -> str | None:
    return rfc3339(ms) if ms is not None else None


def incident_view(inc: Incident, levels: int | None = None) -> IncidentView:
    level = (inc.step - 1) % levels + 1 if levels and inc.step else 0
    return {
        "id": inc.id,
        "title": inc.title,
        "status": inc.status.value,
        "severity": inc.severity,
        "policy": inc.policy,
        "rule": inc.rule,
        "key": inc.key,
        "created_at": _at(inc.created_ms),
        "level": level,
        "next_wakeup_at": _at(inc.timer_ms),
        "acknowledged_by": inc.acked_by,
        "acknowledged_at": _at(inc.acked_ms),
        "snoozed_until": _at(inc.snoozed_until_ms),
        "resolved_by": inc.resolved_by,
        "resolved_at": _at(inc.resolved_ms),
        "time_to_acknowledge_s": (inc.answered_ms - inc.created_ms) / 1000 if inc.answered_ms else None,
        "time_to_resolve_s": (inc.resolved_ms - inc.created_ms) / 1000 if inc.resolved_ms else None,
        "paged": inc.paged,
        "assignee": inc.assignee,
        "opened_by": inc.opened_by or None,
        "updates": [
            {
                "number": int(u.get("n", i + 1)),
                "status": str(u.get("status", "")),
                "message": str(u.get("text", "")),
                "by": str(u.get("by", "")),
                "at": _at(u.get("at_ms")),
            }
            for i, u in enumerate(inc.updates)
        ],
        "next_update_due_at": _at(inc.update_due_ms),
        "duplicates": inc.duplicates,
        "alert_count": inc.alert_total if inc.alert_total is not None else len(inc.alerts),
        "firing": inc.firing_count(),
        "alerts": [
            {
                "fingerprint": a.fingerprint,
                "status": a.status.value,
                "severity": a.severity,
                "labels": a.labels,
                "annotations": a.annotations,
                "starts_at": _at(a.starts_at_ms),
                "ends_at": _at(a.ends_at_ms),
                "generator_url": a.generator_url,
            }
            for a in inc.shown(len(inc.alerts))
        ],
    }


def incident_detail(inc: Incident, levels: int | None, timeline: list[TimelineEntry]) -> IncidentDetail:
    items: list[TimelineItem] = [
        {"at": rfc3339(e.at_ms), "kind": e.kind.value, "actor": e.actor, "text": e.text} for e in timeline
    ]
    return IncidentDetail(**incident_view(inc, levels), timeline=items)
