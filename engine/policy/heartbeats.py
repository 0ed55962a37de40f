"""The dead man's switch, pure: which rules are heartbeats, and the alert their silence raises.

A rule with `heartbeat: 5m` marks an always-firing alert (Alertmanager's Watchdog) as the
alerting pipeline's heartbeat. Its arrivals open no incident; when none has arrived for the
interval, a synthetic alert opens "alerting pipeline silent" under the rule's severity and
policy, and the next arrival resolves it. The synthetic alert goes through decide() like any
other, so duplicates across replicas, paging and the timeline all work as for real alerts.
"""

import hashlib

from engine.alerts import Alert, AlertStatus
from engine.events import RoutedAlert
from engine.policy.durations import format_duration_ms
from engine.policy.models import PolicySet
from engine.policy.routing import Route

SILENCE_ALERTNAME = "AlertingPipelineSilent"


def heartbeat_rules(policies: PolicySet) -> dict[str, int]:
    """Heartbeat rule name -> how long it may stay silent, in ms."""
    return {rule.name: rule.heartbeat for rule in policies.rules if rule.heartbeat is not None}


def silence_alert(
    rule: str, policies: PolicySet, status: AlertStatus, starts_at_ms: int, now_ms: int
) -> RoutedAlert | None:
    """The alert that stands for `rule`'s silence (firing) or its return (resolved); None when
    `rule` is no longer a heartbeat rule in `policies`."""
    found = next((r for r in policies.rules if r.name == rule and r.heartbeat is not None), None)
    if found is None or found.heartbeat is None:
        return None
    silent_for = format_duration_ms(found.heartbeat)
    labels = {"alertname": SILENCE_ALERTNAME, "heartbeat": rule, "severity": found.severity}
    summary = (
        f"no heartbeat from rule {rule} for {silent_for}: Prometheus, Alertmanager or the way "
        "from them to this engine may be down, and no other alert would reach anyone"
    )
    alert = Alert(
        fingerprint=hashlib.sha256(f"heartbeat|{rule}".encode()).hexdigest()[:16],
        status=status,
        labels=labels,
        starts_at_ms=starts_at_ms,
        ends_at_ms=now_ms if status is AlertStatus.RESOLVED else None,
        annotations={"summary": summary},
    )
    return RoutedAlert(alert, Route(rule, found.severity, found.policy, "alert", "heartbeat"))
