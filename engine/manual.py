"""Incidents opened by hand (a customer report) and targets named by people. Pure.

An incident opened by hand is one firing alert of its own, routed like any alert: it pages
exactly as an alert with the same labels would, unless the reporter names a severity or policy.
"""

from dataclasses import dataclass, field

from engine.alerts import Alert, AlertStatus
from engine.events import RoutedAlert
from engine.policy.channels import CHANNELS
from engine.policy.models import PolicySet
from engine.policy.routing import Route, route

MANUAL_ALERTNAME = "ManualIncident"


@dataclass(frozen=True, slots=True)
class ManualIncident:
    title: str
    reporter: str
    severity: str | None = None
    policy: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    description: str = ""


def problems(req: ManualIncident, policies: PolicySet) -> list[str]:
    """What is wrong with the request, each naming its field ([] when nothing)."""
    found = []
    if req.severity is not None and req.severity not in policies.severities:
        found.append(f"severity: no severity {req.severity!r} (defined: {', '.join(policies.severities)})")
    if req.policy is not None and req.policy not in policies.escalation_policies:
        names = ", ".join(policies.escalation_policies)
        found.append(f"policy: no escalation policy {req.policy!r} (defined: {names})")
    return found


def routed_alert(req: ManualIncident, policies: PolicySet, fingerprint: str, now_ms: int) -> RoutedAlert:
    """The request as an alert and its route: the rules decide what the reporter left open."""
    labels = {**req.labels, "alertname": MANUAL_ALERTNAME}  # never a heartbeat or another rule's alert
    terminal = route(policies, labels)[-1]
    chosen = Route(
        rule=terminal.rule if req.severity is None and req.policy is None else "manual",
        severity=req.severity or terminal.severity,
        policy=req.policy or _policy_for(req.severity, policies) or terminal.policy,
        group_by="alert",
        lane="",
    )
    notes = {"summary": req.title, "reporter": req.reporter}
    if req.description:
        notes["description"] = req.description
    alert = Alert(fingerprint, AlertStatus.FIRING, labels, now_ms, annotations=notes)
    return RoutedAlert(alert, chosen)


def _policy_for(severity: str | None, policies: PolicySet) -> str | None:
    """The policy the rules use for `severity` (the first rule giving it; the default's): a P1
    reported by hand climbs the P1 ladder, not the one its labels alone would pick."""
    if severity is None:
        return None
    if policies.default.severity == severity:
        return policies.default.policy
    return next((r.policy for r in policies.rules if r.severity == severity and r.heartbeat is None), None)


def target_problem(target: str, policies: PolicySet) -> str | None:
    """Why `target` cannot be reassigned to (None when it can): an unknown user, schedule, team."""
    kind, sep, name = target.partition(":")
    if not sep or not name:
        return f"{target!r} is not a target: use user:NAME, schedule:NAME, team:NAME or CHANNEL:ADDRESS"
    known: dict[str, set[str]] = {
        "user": set(policies.users),
        "schedule": set(policies.schedules),
        "team": set(policies.teams),
    }
    if kind in known:
        return None if name in known[kind] else f"no {kind} {name!r} in the policies"
    if kind in CHANNELS:
        return None
    return f"unknown target kind {kind!r} in {target!r}"
