"""What a paged person reads: one Message per incident, action and address. Pure."""

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from engine.events import Action
from engine.incident import Incident
from engine.policy.models import PolicySet

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


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
    title: str  # one line, e.g. "[P0] HighErrorRate checkout: 5xx ratio above 5%"
    body: str  # plain text, several lines
    severity: str  # the policy's severity name (P0..P3)
    severity_rank: int  # 0 = highest; PagerDuty maps 0 critical, 1 error, 2 warning, else info
    status: str  # incident status after the change: triggered | acknowledged | resolved | snoozed
    level: int  # 0-based ladder level that caused a trigger (0 for ack/resolve)
    target: str  # the policy target that led here, e.g. "user:sre-oncall" or "pagerduty:platform"
    address: str  # channel-specific: PagerDuty service name, webhook endpoint name, email address
    labels: dict[str, str] = field(default_factory=dict)  # labels common to the incident's alerts
    alerts: tuple[AlertSummary, ...] = ()
    triggered_at: str = ""  # RFC 3339 trigger time
    actor: str = ""  # who acked/resolved, when known
    incident_url: str = ""  # link to the incident in the engine's API
    decided_ms: int = 0  # when the engine decided this notification: retries of it share the value


def rfc3339(ms: int) -> str:
    """Exact to the millisecond (integer arithmetic: a float loses the last digit near year 9999)."""
    stamp = _EPOCH + timedelta(milliseconds=ms)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def common_labels(inc: Incident) -> dict[str, str]:
    alerts = list(inc.alerts.values())
    if not alerts:
        return {}
    first = alerts[0].labels
    return {k: v for k, v in first.items() if all(a.labels.get(k) == v for a in alerts[1:])}


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
) -> Message:
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
    alerts = tuple(
        AlertSummary(
            fingerprint=a.fingerprint,
            status=a.status.value,
            labels=a.labels,
            annotations=a.annotations,
            starts_at=rfc3339(a.starts_at_ms),
            generator_url=a.generator_url,
        )
        for a in inc.alerts.values()
    )
    return Message(
        action=action,
        incident_id=inc.id,
        title=f"[{inc.severity}] {inc.title}",  # the same for every message: mail clients thread by subject
        body=_body(inc, action, level, policies, url),
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
    )


def _body(inc: Incident, action: Action, level: int, policies: PolicySet, url: str) -> str:
    sev = policies.severities.get(inc.severity)
    lines = [f"Incident {inc.id}: {inc.title}"]
    lines.append(f"Severity: {inc.severity}" + (f" ({sev.description})" if sev and sev.description else ""))
    lines.append(
        f"Status: {inc.status.value}"
        + (f", escalation level {level + 1}" if action is Action.TRIGGER else "")
    )
    lines.append(f"Triggered: {rfc3339(inc.created_ms)}")
    if inc.acked_by:
        lines.append(f"Acknowledged by: {inc.acked_by}")
    if inc.resolved_by:
        lines.append(f"Resolved by: {inc.resolved_by}")
    firing = inc.firing()
    lines.append(f"Alerts: {len(firing)} firing, {len(inc.alerts) - len(firing)} resolved")
    for a in list(inc.alerts.values())[:20]:
        name = a.labels.get("alertname", a.fingerprint)
        summary = a.annotations.get("summary") or a.annotations.get("description") or ""
        lines.append(f"  [{a.status.value}] {name} {a.labels.get('instance', '')} {summary}".rstrip())
        if runbook := a.annotations.get("runbook_url"):
            lines.append(f"    runbook: {runbook}")
    if url and action is Action.TRIGGER:
        lines.append(f"Acknowledge: POST {url}/ack  ·  Resolve: POST {url}/resolve")
    return "\n".join(lines)
