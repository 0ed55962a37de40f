#!/usr/bin/env python3
"""Check the Grafana dashboard: its structure, and every query with `promtool check rules`.

    python3 deploy/check_dashboard.py [DASHBOARD.json ...]   # default: deploy/grafana/dashboards/*.json

Structure: fixed uid, no database id, schemaVersion >= 33, unique panel ids, unique refIds per
panel, gridPos inside the 24-column grid and no two panels overlapping, every panel/target/
variable data source is {"type": "prometheus", "uid": "${datasource}"}, no ${DS_...} import
placeholders (file provisioning does not fill them in), every expr names only metrics of the
engine's metric contract (deploy/README.md, "Metrics") or Prometheus' own `up`.

Queries: Grafana's variables are replaced by concrete values ($__rate_interval -> 1m,
$__range -> 1h, $__interval -> 1m, dashboard variables -> their "All" value), then every expr
is written as a recording rule into a temporary rules file and `promtool check rules` parses it.

Run without arguments, it also checks deploy/prometheus/rules/*.rules.yml: metric names from
the contract, and every runbook_url anchor is a heading of deploy/README.md (as are its #links).

Importable, standard library only: `dashboard_queries(path)` returns the substituted queries, so a
test can run them against a real Prometheus.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DEFAULT_DASHBOARDS = sorted((HERE / "grafana" / "dashboards").glob("*.json"))

DATASOURCE_REF = {"type": "prometheus", "uid": "${datasource}"}
GRID_COLUMNS = 24

# Grafana's built-in variables and the concrete values the queries are checked with.
BUILTINS = {"__rate_interval": "1m", "__range": "1h", "__interval": "1m"}

# The metric contract (engine/metrics.py). Histograms also expose _bucket, _sum and _count.
COUNTERS = {
    "escalation_webhook_requests_total",
    "escalation_alerts_received_total",
    "escalation_duplicate_alerts_total",
    "escalation_incidents_opened_total",
    "escalation_escalations_total",
    "escalation_notifications_total",
    "escalation_dead_letters_total",
    "escalation_failovers_total",
    "escalation_notifications_deferred_total",
    "escalation_store_errors_total",
    "escalation_commit_conflicts_total",
}
GAUGES = {
    "escalation_build_info",
    "escalation_incidents",
    "escalation_severity_ack_target_seconds",
    "escalation_outbox_depth",
    "escalation_outbox_oldest_age_seconds",
    "escalation_breaker_state",
    "escalation_config_last_reload_successful",
    "escalation_worker_restarts_total",
    "escalation_store_state_lost",
    "escalation_config_last_reload_success_timestamp_seconds",
    "escalation_heartbeat_last_seen_timestamp_seconds",
    "escalation_heartbeat_interval_seconds",
}
HISTOGRAMS = {
    "escalation_time_to_acknowledge_seconds",
    "escalation_time_to_resolve_seconds",
    "escalation_notification_duration_seconds",
    "escalation_delivery_latency_seconds",
    "escalation_timer_lateness_seconds",
    "escalation_store_operation_duration_seconds",
}
KNOWN_SERIES = (
    COUNTERS
    | GAUGES
    | {f"{h}_{suffix}" for h in HISTOGRAMS for suffix in ("bucket", "sum", "count")}
    | {"up"}
)
_METRIC = re.compile(r"\bescalation_[a-z0-9_]+")


def load(path: str | Path) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        dashboard = json.load(f)
    if not isinstance(dashboard, dict):
        raise ValueError(f"{path}: not a JSON object")
    return dashboard


def iter_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, including those nested in collapsed rows."""
    for panel in panels:
        yield panel
        yield from iter_panels(panel.get("panels") or [])


def _range_selectors(expr: str) -> list[str]:
    """The contents of every [...] in the expr, string literals (label values, regexes) left out."""
    code = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    return re.findall(r"\[([^\]]*)\]", code)


def _variable_values(dashboard: dict[str, Any]) -> dict[str, str]:
    """Each dashboard variable's value for checking: its "All" value, else its current value."""
    values = dict(BUILTINS)
    for var in dashboard.get("templating", {}).get("list", []):
        name = var.get("name")
        if not name or var.get("type") == "datasource":
            continue
        if var.get("includeAll"):
            values[name] = var.get("allValue") or ".*"
        else:
            current = (var.get("current") or {}).get("value")
            values[name] = current if isinstance(current, str) and current else ".*"
    return values


def substitute(expr: str, values: dict[str, str]) -> str:
    """Replace $name, ${name}, ${name:format} and [[name]] by the given values."""

    def repl(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2) or m.group(3)
        return values.get(name, m.group(0))

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)", repl, expr)


def _targets(dashboard: dict[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for panel in iter_panels(dashboard.get("panels", [])):
        for target in panel.get("targets") or []:
            yield panel, target


def dashboard_queries(path: str | Path) -> list[str]:
    """Every panel query of the dashboard, with Grafana's variables replaced by concrete values."""
    dashboard = load(path)
    values = _variable_values(dashboard)
    return [substitute(t["expr"], values) for _, t in _targets(dashboard) if t.get("expr")]


def structure_problems(dashboard: dict[str, Any]) -> list[str]:
    """What is wrong with the dashboard's structure; empty when nothing is."""
    problems = _top_level_problems(dashboard)
    seen_ids: set[int] = set()
    cells: dict[tuple[int, int], str] = {}
    top_level = {id(p) for p in dashboard.get("panels", [])}
    for panel in iter_panels(dashboard.get("panels", [])):
        pid = panel.get("id")
        where = f"panel {pid} ({panel.get('title')!r})"
        if not isinstance(pid, int):
            problems.append(f"{where}: id must be an integer")
        elif pid in seen_ids:
            problems.append(f"{where}: duplicate panel id")
        else:
            seen_ids.add(pid)
        # Panels inside a collapsed row are laid out when it opens: no overlap check for them.
        problems += _grid_problems(panel, where, cells if id(panel) in top_level else None)
        if panel.get("type") != "row":
            problems += _query_problems(panel, where)
    return problems


def _top_level_problems(dashboard: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    if not dashboard.get("uid"):
        problems.append("dashboard has no uid")
    if dashboard.get("id") is not None:
        problems.append("dashboard has an id: leave it out, the database assigns it")
    if not isinstance(dashboard.get("schemaVersion"), int) or dashboard["schemaVersion"] < 33:
        problems.append("schemaVersion must be an integer >= 33 (data source refs as objects)")
    if "${DS_" in json.dumps(dashboard):
        problems.append("${DS_...} placeholder found: only the Import UI fills those in, not provisioning")
    variables = dashboard.get("templating", {}).get("list", [])
    if not any(v.get("name") == "datasource" and v.get("type") == "datasource" for v in variables):
        problems.append('no "datasource" variable of type datasource')
    for var in variables:
        if "datasource" in var and var.get("datasource") != DATASOURCE_REF:
            problems.append(f"variable {var.get('name')!r}: datasource must be {DATASOURCE_REF}")
    return problems


def _grid_problems(panel: dict[str, Any], where: str, cells: dict[tuple[int, int], str] | None) -> list[str]:
    grid = panel.get("gridPos") or {}
    x, y, w, h = (grid.get(k) for k in ("x", "y", "w", "h"))
    if not (isinstance(x, int) and isinstance(y, int) and isinstance(w, int) and isinstance(h, int)):
        return [f"{where}: gridPos needs integer x, y, w, h"]
    if x < 0 or y < 0 or w < 1 or h < 1 or x + w > GRID_COLUMNS:
        return [f"{where}: gridPos {grid} is outside the {GRID_COLUMNS}-column grid"]
    if cells is not None:
        for cell in ((cx, cy) for cx in range(x, x + w) for cy in range(y, y + h)):
            other = cells.setdefault(cell, where)
            if other != where:
                return [f"{where}: overlaps {other} at x={cell[0]} y={cell[1]}"]
    return []


def _query_problems(panel: dict[str, Any], where: str) -> list[str]:
    problems: list[str] = []
    if panel.get("datasource") != DATASOURCE_REF:
        problems.append(f"{where}: datasource must be {DATASOURCE_REF}")
    targets = panel.get("targets") or []
    if not targets:
        problems.append(f"{where}: no targets")
    ref_ids: set[str] = set()
    for target in targets:
        ref = target.get("refId")
        if not ref:
            problems.append(f"{where}: a target has no refId")
        elif ref in ref_ids:
            problems.append(f"{where}: duplicate refId {ref}")
        else:
            ref_ids.add(ref)
        if target.get("datasource") != DATASOURCE_REF:
            problems.append(f"{where} target {ref}: datasource must be {DATASOURCE_REF}")
        expr = target.get("expr")
        if not isinstance(expr, str) or not expr.strip():
            problems.append(f"{where} target {ref}: no expr")
            continue
        problems += [
            f"{where} target {ref}: {name} is not in the metric contract"
            for name in sorted(set(_METRIC.findall(expr)) - KNOWN_SERIES)
        ]
        problems += [
            f"{where} target {ref}: range [{window}]: use [$__rate_interval] or [$__range]"
            for window in _range_selectors(expr)
            if window not in ("$__rate_interval", "$__range")
        ]
    return problems


def rules_file(queries: list[str]) -> str:
    """The queries as recording rules, in a rules file `promtool check rules` accepts (JSON is YAML)."""
    rules = [{"record": f"dashboard:query_{i}:check", "expr": q} for i, q in enumerate(queries, 1)]
    return json.dumps({"groups": [{"name": "dashboard-queries", "rules": rules}]}, indent=2)


def promtool_problems(queries: list[str], promtool: str) -> list[str]:
    leftover = [q for q in queries if re.search(r"\$\{?\w|\[\[\w", q)]
    problems = [f"unsubstituted variable in query: {q}" for q in leftover]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "dashboard-queries.rules.yml"
        path.write_text(rules_file(queries), encoding="utf-8")
        cmd = [promtool, "check", "rules", str(path)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)  # noqa: S603 - promtool from PATH, our temp file
        if proc.returncode != 0:
            problems.append(f"promtool check rules failed:\n{proc.stdout}{proc.stderr}")
    return problems


def rules_metric_problems(paths: list[Path]) -> list[str]:
    """Metric names in the alerting rules that are not in the metric contract."""
    problems = []
    for path in paths:
        for name in sorted(set(_METRIC.findall(path.read_text(encoding="utf-8"))) - KNOWN_SERIES):
            problems.append(f"{path}: {name} is not in the metric contract")
    return problems


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading: lower case, punctuation dropped, spaces -> '-'."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def link_problems(readme: Path, rule_files: list[Path]) -> list[str]:
    """runbook_url anchors of the rules, and #links inside the README, that match no README heading."""
    text = re.sub(r"^```.*?^```", "", readme.read_text(encoding="utf-8"), flags=re.MULTILINE | re.DOTALL)
    anchors = {github_anchor(h) for h in re.findall(r"^#{1,6} (.+)$", text, flags=re.MULTILINE)}
    problems = [
        f"{readme}: link to #{a}: no such heading"
        for a in re.findall(r"\]\(#([^)]+)\)", text)
        if a not in anchors
    ]
    for path in rule_files:
        for anchor in re.findall(
            r"runbook_url: \S+/deploy/README\.md#(\S+)", path.read_text(encoding="utf-8")
        ):
            if anchor not in anchors:
                problems.append(f"{path}: runbook_url #{anchor}: no such heading in {readme}")
    return problems


def main(argv: list[str]) -> int:
    paths = [Path(a) for a in argv] or DEFAULT_DASHBOARDS
    if not paths:
        print("check_dashboard: no dashboard found", file=sys.stderr)
        return 2
    promtool = shutil.which("promtool")
    if promtool is None:
        print(
            "check_dashboard: promtool not found (Debian package prometheus: `make prometheus`)",
            file=sys.stderr,
        )
        return 2
    failed = False
    for path in paths:
        try:
            dashboard = load(path)
        except (OSError, ValueError) as exc:
            print(f"{path}: {exc}", file=sys.stderr)
            failed = True
            continue
        queries = dashboard_queries(path)
        problems = structure_problems(dashboard) + promtool_problems(queries, promtool)
        for problem in problems:
            print(f"{path}: {problem}", file=sys.stderr)
        failed |= bool(problems)
        if not problems:
            panels = sum(1 for p in iter_panels(dashboard.get("panels", [])) if p.get("type") != "row")
            print(f"{path}: OK ({panels} panels, {len(queries)} queries pass promtool check rules)")
    if not argv:  # the default run also checks the alerting rules: metric names, runbook links
        rule_files = sorted((HERE / "prometheus" / "rules").glob("*.rules.yml"))
        for problem in rules_metric_problems(rule_files) + link_problems(HERE / "README.md", rule_files):
            print(problem, file=sys.stderr)
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
