"""What a paged person reads: one Message per incident, action and address. Pure."""

from dataclasses import dataclass, field
from typing import Any

from engine.escalation import policy_of
from engine.events import Action
from engine.incident import Incident
from engine.policy import templates
from engine.policy.models import PolicySet
from engine.policy.templates import SHOWN_ALERTS, common_labels
from engine.postmortem import review_due
from engine.times import rfc3339

__all__ = [
    "SHOWN_ALERTS",
    "AlertSummary",
    "Message",
    "build_message",
    "common_labels",
    "rfc3339",
    "template_kind",
]


@dataclass(frozen=True, slots=True)
class AlertSummary:
    fingerprint: str
    status: str  # firing | resolved
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: str  # RFC 3339
    generator_url: str = ""


@dataclass(frozen=True, slots=True)
class Message:
    """One notification about one incident, addressed to one channel address."""

    action: Action
    incident_id: str
    title: str  # the rendered subject template, one line, e.g. "[P0] checkout - 5xx ratio above 5%"
    body: str  # the rendered body template: plain text, several lines
    severity: str  # the policy's severity name (P0..P3)
    severity_rank: int  # 0 = highest; PagerDuty maps 0 critical, 1 error, 2 warning, else info
    status: str  # incident status after the change: triggered | acknowledged | resolved | snoozed
    level: int  # 0-based ladder level that caused a trigger (0 for ack/resolve)
    target: str  # the policy target that led here, e.g. "user:sre-oncall" or "pagerduty:platform"
    address: str  # channel-specific: PagerDuty service name, webhook endpoint name, email address
    labels: dict[str, str] = field(default_factory=dict)  # labels common to the incident's alerts
    alerts: tuple[AlertSummary, ...] = ()  # at most SHOWN_ALERTS of them, the firing ones first
    triggered_at: str = ""  # RFC 3339 trigger time
    actor: str = ""  # who acked/resolved, when known
    incident_url: str = ""  # link to the incident in the engine's API
    decided_ms: int = 0  # when the engine decided this notification: retries of it share the value
    html: str = ""  # the body template rendered with alert data HTML-escaped ("": escape `body`)
    # signed one-click links by action ("acknowledge", "resolve"): GET shows a confirmation page
    links: dict[str, str] = field(default_factory=dict)
    paged: tuple[str, ...] = ()  # the targets paged so far, e.g. ("user:alice", "slack:#ops")
    acknowledged_by: str = ""
    resolved_by: str = ""
    note: str = ""  # an update that is not a status update: "Reassigned to user:bob by alice"
    status_update: dict[str, Any] | None = None  # the latest status update (UPDATE #n), if any
    alert_count: int = 0  # every alert the incident holds (0: as many as `alerts`)
    firing_count: int = -1  # the firing ones among them (-1: as many as are in `alerts`)

    @property
    def total_alerts(self) -> int:
        return max(self.alert_count, len(self.alerts))

    @property
    def total_firing(self) -> int:
        if self.firing_count >= 0:
            return self.firing_count
        return sum(1 for a in self.alerts if a.status == "firing")


def template_kind(action: Action, level: int) -> str:
    """The communication template a notification uses: a page at level 0 is the initial
    notification (first cycle, repeat cycle and re-page alike), a later level an escalation."""
    if action is Action.ACKNOWLEDGE:
        return "acknowledge"
    if action is Action.RESOLVE:
        return "resolve"
    if action is Action.UPDATE:
        return "update"
    return "trigger" if level == 0 else "escalation"


def build_message(
    inc: Incident,
    action: Action,
    *,
    level: int,
    target: str,
    address: str,
    policies: PolicySet,
    public_url: str = "",
    decided_ms: int = 0,
    now_ms: int = 0,
    links: dict[str, str] | None = None,
    note: str = "",
    update: int = 0,
) -> Message:
    """The notification, worded by the incident's policy's templates (else the top-level ones,
    else the built-in defaults). `now_ms` (default: `decided_ms`, else the incident's creation) is
    the time the words describe: retries of one delivery share `decided_ms`, so they read the same."""
    rank = (
        policies.severity_rank(inc.severity)
        if inc.severity in policies.severities
        else len(policies.severities)
    )
    url = f"{public_url.rstrip('/')}/api/v1/incidents/{inc.id}" if public_url else ""
    actor = (
        inc.acked_by
        if action is Action.ACKNOWLEDGE
        else inc.resolved_by
        if action is Action.RESOLVE
        else None
    )
    listed = inc.shown(SHOWN_ALERTS)
    alerts = tuple(
        AlertSummary(
            fingerprint=a.fingerprint,
            status=a.status.value,
            labels=a.labels,
            annotations=a.annotations,
            starts_at=rfc3339(a.starts_at_ms),
            generator_url=a.generator_url,
        )
        for a in listed
    )

    kind = template_kind(action, level)
    rule = next((r for r in policies.rules if r.name == inc.rule), None)
    name = (rule.templates if rule else None) or policy_of(inc, policies).templates or "default"
    chosen = policies.templates.get(name)  # None: the built-in defaults
    sev = policies.severities.get(inc.severity)
    ctx = templates.context(
        inc,
        kind=kind,
        level=level,
        now_ms=now_ms or decided_ms or inc.created_ms,
        severity_description=sev.description if sev is not None else "",
        external_url=url,
        paged=inc.paged,
        links=links,
        updates=inc.updates[:update] if update else inc.updates,  # UPDATE #n says what #n said
        note=note,
        review=(review_due(inc, policies.severities) or "") if kind == "resolve" else "",
        shown=listed,
    )
    subject, body = templates.render(chosen, kind, ctx)
    _, html = templates.render(chosen, kind, ctx, html=True)
    return Message(
        action=action,
        incident_id=inc.id,
        title=subject,  # threading is by References (notifiers/email.py), so it may vary per kind
        body=body,
        severity=inc.severity,
        severity_rank=rank,
        status=inc.status.value,
        level=level,
        target=target,
        address=address,
        labels=common_labels(inc),
        alerts=alerts,
        triggered_at=rfc3339(inc.created_ms),
        actor=actor or "",
        incident_url=url,
        decided_ms=decided_ms,
        html=html,
        links=dict(links or {}),
        paged=tuple(inc.paged),
        acknowledged_by=inc.acked_by or "",
        resolved_by=inc.resolved_by or "",
        note=note,
        status_update=shown[-1] if (shown := inc.updates[:update] if update else inc.updates) else None,
        alert_count=inc.alert_total if inc.alert_total is not None else len(inc.alerts),
        firing_count=inc.firing_count(),
    )
