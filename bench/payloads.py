"""Alertmanager webhook bodies for the ingest benchmark: N alerts each, routed by the shipped rules.

`write(path, n)` writes one body template per line for bench/ingest.lua; group g is sent with
template g mod 10, so a run's groups follow SHAPES whatever the mix, and a repeat of a group is
byte-identical to its first sending. Placeholders: @G@ (the group, also in the `service` label so
that each new group is a new incident under every rule's group_by) and @F<i>@ (alert i's
fingerprint). Each alert is the shape of tests/fixtures/02-firing-group.json's alerts (same
annotations and generator URL, so the same size).

The shapes, per 10 groups, and what the shipped policies/routing.yaml does with them:
  1 critical   every alert severity=critical: P0 `critical`, one incident per group
  1 mixed      the fixture's shape, one critical then warnings: one P0 + one P2 per warning
  2 error      severity=error: P1 `standard`, one incident per (alertname, service)
  4 warning    severity=warning: P2 `slow`, one incident per alert
  2 info       severity=info: the default, P3 `low` (email only, held outside office hours)
"""

import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "02-firing-group.json"
SHAPES = ("critical", "mixed", "error", "error", "warning", "warning", "warning", "warning", "info", "info")
ALERTNAME = {"critical": "HighRequestLatency", "mixed": "HighRequestLatency", "error": "HighErrorRate",
             "warning": "DiskFillingUp", "info": "CertificateExpiresSoon"}  # fmt: skip


def _severity(shape: str, i: int) -> str:
    if shape == "mixed":
        return "critical" if i == 0 else "warning"
    return shape


def body(shape: str, n: int) -> dict[str, Any]:
    """One template: n alerts of `shape`, with the placeholders."""
    doc: dict[str, Any] = json.loads(FIXTURE.read_text())
    base = doc["alerts"][0]
    alertname, service = ALERTNAME[shape], "search-api-@G@"
    alerts = []
    for i in range(n):
        instance = f"search-api-{i}.prod.example.internal:9100"
        labels = {"alertname": alertname, "env": "prod", "instance": instance, "job": "search-api",
                  "service": service, "severity": _severity(shape, i), "team": "discovery"}  # fmt: skip
        annotations = base["annotations"] | {
            "description": f"{alertname} on {instance} ({shape}, alert {i + 1} of {n})."
        }
        alerts.append(base | {"labels": labels, "annotations": annotations, "fingerprint": f"@F{i}@"})
    common = {k: v for k, v in alerts[0]["labels"].items() if k not in ("instance", "severity")}
    return doc | {
        "alerts": alerts,
        "groupLabels": {"alertname": alertname, "service": service},
        "commonLabels": common if n > 1 else alerts[0]["labels"],
        "commonAnnotations": {k: base["annotations"][k] for k in ("runbook_url", "summary")},
        "groupKey": f'{{}}:{{alertname="{alertname}", service="{service}"}}',
    }


def write(path: Path, n: int) -> Path:
    """The templates for n alerts per webhook, one compact JSON per line; returns path."""
    path.write_text("\n".join(json.dumps(body(shape, n), separators=(",", ":")) for shape in SHAPES) + "\n")
    return path


def severity_shares(n: int) -> dict[str, float]:
    """The share of alerts of each severity over the shapes (for the report)."""
    counts: dict[str, int] = {}
    for shape in SHAPES:
        for i in range(n):
            counts[_severity(shape, i)] = counts.get(_severity(shape, i), 0) + 1
    total = sum(counts.values())
    return {k: round(v / total, 3) for k, v in counts.items()}
