"""JSON shapes of incidents as the API shows them."""

from typing import Any

from engine.incident import Incident
from engine.messages import rfc3339
from engine.timeline import TimelineEntry


def _at(ms: int | None) -> str | None:
    return rfc3339(ms) if ms is not None else None


def incident_view(inc: Incident, levels: int | None = None) -> dict[str, Any]:
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
        "level": level,  # 1-based ladder level last paged; 0 before the first page
        "next_wakeup_at": _at(inc.timer_ms),
        "acknowledged_by": inc.acked_by,
        "acknowledged_at": _at(inc.acked_ms),
        "snoozed_until": _at(inc.snoozed_until_ms),
        "resolved_by": inc.resolved_by,
        "resolved_at": _at(inc.resolved_ms),
        "time_to_acknowledge_s": (inc.acked_ms - inc.created_ms) / 1000 if inc.acked_ms else None,
        "time_to_resolve_s": (inc.resolved_ms - inc.created_ms) / 1000 if inc.resolved_ms else None,
        "paged": inc.paged,
        "duplicates": inc.duplicates,
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
            for a in inc.alerts.values()
        ],
    }


def timeline_view(entries: list[TimelineEntry]) -> list[dict[str, Any]]:
    return [{"at": rfc3339(e.at_ms), "kind": e.kind.value, "actor": e.actor, "text": e.text} for e in entries]
