"""Reports over many incidents: MTTA/MTTR per severity and service, targets met, pages per person,
noisiest alerts. Pure: no I/O, no clock; the caller loads the incidents and says what time it is.

The post-incident review of one incident is engine/postmortem.py; its entry points are re-exported
here (`postmortem`, `review_due`).
"""

import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from engine.incident import Incident
from engine.policy.calendars import Calendar, is_open
from engine.policy.models import PolicySet
from engine.postmortem import (
    ack_target,
    alert_service,
    deliveries,
    human,
    md,
    postmortem,
    review_due,
    row,
    service_of,
)
from engine.timeline import EntryKind, TimelineEntry, in_time_order
from engine.times import rfc3339, utc

__all__ = ["out_of_hours_rule", "percentile", "postmortem", "report", "report_markdown", "review_due"]

TOP_ALERTS = 10
DEFAULT_HOURS = "outside Mon-Fri 09:00-17:00 UTC"


def percentile(values: list[float], q: float) -> float | None:
    """The q-quantile (0..1) by linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    low, high = math.floor(pos), math.ceil(pos)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def _stats(seconds: list[float]) -> dict[str, float | None]:
    def r(v: float | None) -> float | None:
        return None if v is None else round(v, 3)

    return {"median": r(percentile(seconds, 0.5)), "p90": r(percentile(seconds, 0.9)), "count": len(seconds)}


def out_of_hours_rule(policies: PolicySet) -> tuple[str, Calendar | None, str]:
    """(calendar name or "", the calendar, how the report says it): the first severity's
    business_hours_only calendar, else Mon-Fri 09:00-17:00 UTC."""
    for sev in policies.severities.values():
        name = sev.business_hours_only
        if name is not None and name in policies.calendars:
            cal = policies.calendars[name]
            return name, cal, f"outside calendar {name} ({cal.time_zone})"
    return "", None, DEFAULT_HOURS


def _out_of_hours(cal: Calendar | None, at_ms: int) -> bool:
    at: datetime = utc(at_ms)
    if cal is not None:
        return not is_open(cal, at)
    return at.weekday() >= 5 or not 9 <= at.hour < 17


class _Group:
    """The numbers of one severity or one service."""

    def __init__(self) -> None:
        self.incidents = 0
        self.acknowledged = 0
        self.resolved = 0
        self.tta: list[float] = []
        self.ttr: list[float] = []
        self.outcomes: Counter[str] = Counter()

    def add(self, inc: Incident, outcome: str) -> None:
        self.incidents += 1
        if inc.answered_ms is not None:
            self.acknowledged += 1
            self.tta.append((inc.answered_ms - inc.created_ms) / 1000)
        if inc.resolved_ms is not None:
            self.resolved += 1
            self.ttr.append((inc.resolved_ms - inc.created_ms) / 1000)
        self.outcomes[outcome] += 1

    def view(self) -> dict[str, Any]:
        return {
            "incidents": self.incidents,
            "acknowledged": self.acknowledged,
            "resolved": self.resolved,
            "mtta_s": _stats(self.tta),
            "mttr_s": _stats(self.ttr),
            "target_met": self.outcomes["met"],
            "target_missed": self.outcomes["missed"],
            "target_pending": self.outcomes["pending"],
        }


def report(
    incidents_with_timelines: Iterable[tuple[Incident, list[TimelineEntry]]],
    policies: PolicySet,
    since_ms: int,
    now_ms: int,
) -> dict[str, Any]:
    """The report over the incidents created in [since_ms, now_ms] (others are ignored)."""
    cal_name, cal, hours = out_of_hours_rule(policies)
    by_sev: dict[str, _Group] = {name: _Group() for name in policies.severities}
    by_service: dict[str, _Group] = defaultdict(_Group)
    people: dict[str, dict[str, Any]] = {}
    noisy: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    reviews = []
    count = 0
    for inc, timeline in incidents_with_timelines:
        if not since_ms <= inc.created_ms <= now_ms:
            continue
        count += 1
        outcome = ack_target(inc, policies.severities, now_ms).outcome
        by_sev.setdefault(inc.severity, _Group()).add(inc, outcome)
        by_service[service_of(inc)].add(inc, outcome)
        for person, at_list in _page_times(inc, timeline, policies).items():
            p = people.setdefault(person, {"person": person, "pages": 0, "out_of_hours": 0, "incidents": 0})
            p["incidents"] += 1
            p["pages"] += len(at_list)
            p["out_of_hours"] += sum(1 for at in at_list if _out_of_hours(cal, at))
        kinds = {
            (a.labels.get("alertname", "") or "unknown", alert_service(a.labels)) for a in inc.alerts.values()
        }
        for a in inc.alerts.values():
            noisy[(a.labels.get("alertname", "") or "unknown", alert_service(a.labels))][1] += 1
        for k in kinds:
            noisy[k][0] += 1
        why = review_due(inc, policies.severities, now_ms)
        if why:
            reviews.append({"id": inc.id, "title": inc.title, "severity": inc.severity, "reason": why})
    severities = []
    for name, group in by_sev.items():
        sev = policies.severities.get(name)
        target = sev.ack_within if sev is not None else None
        severities.append(
            {
                "severity": name,
                "description": sev.description if sev is not None else "",
                "ack_target_s": target / 1000 if target is not None else None,
                **group.view(),
            }
        )
    services: list[dict[str, Any]] = [{"service": name, **g.view()} for name, g in by_service.items()]
    services.sort(key=lambda s: (-s["incidents"], s["service"]))
    pages = sorted(people.values(), key=lambda p: (-p["pages"], p["person"]))
    alerts: list[dict[str, Any]] = [
        {"alertname": name, "service": service, "incidents": n[0], "alerts": n[1]}
        for (name, service), n in noisy.items()
    ]
    alerts.sort(key=lambda a: (-a["incidents"], -a["alerts"], a["alertname"], a["service"]))
    return {
        "since": rfc3339(since_ms),
        "until": rfc3339(now_ms),
        "incidents": count,
        "truncated": False,
        "out_of_hours": {"calendar": cal_name or None, "rule": hours},
        "by_severity": severities,
        "by_service": services,
        "pages_per_person": pages,
        "noisiest_alerts": alerts[:TOP_ALERTS],
        "reviews_due": reviews,
    }


def _page_times(inc: Incident, timeline: list[TimelineEntry], policies: PolicySet) -> dict[str, list[int]]:
    """person -> the instant of each page that reached them in this incident.

    A page is one ladder step (a `paged` entry) or reassignment reaching a person, however many of
    their contact methods it went through: user: targets count from the `paged` entry itself, the
    people behind schedules and teams from the `delivered` entries that name them (grouped under
    the latest `paged` entry before them).
    """
    entries = in_time_order(timeline)
    seen: dict[tuple[int, str], int] = {}  # (page round, person) -> first instant
    rounds = [e.at_ms for e in entries if e.kind in (EntryKind.PAGED, EntryKind.REASSIGNED)]
    for e in entries:
        if e.kind is EntryKind.PAGED:
            for t in e.text.removeprefix("Paged ").rsplit(" (", 1)[0].split(", "):
                kind, _, name = t.partition(":")
                if kind == "user" and name:
                    seen.setdefault((e.at_ms, name), e.at_ms)
    for d in deliveries(entries, policies):
        if d.action != "trigger" or not d.person:
            continue
        started = max((r for r in rounds if r <= d.at_ms), default=inc.created_ms)
        seen.setdefault((started, d.person), d.at_ms)
    out: dict[str, list[int]] = defaultdict(list)
    for (_, person), at in sorted(seen.items(), key=lambda kv: kv[1]):
        out[person].append(at)
    return dict(out)


def _s(seconds: float | None) -> str:
    return "—" if seconds is None else human(int(seconds * 1000))


def _counts_and_times(s: dict[str, Any]) -> list[Any]:
    """A summary row's middle: incidents, acknowledged, resolved, MTTA and MTTR median and p90."""
    times = [s["mtta_s"]["median"], s["mtta_s"]["p90"], s["mttr_s"]["median"], s["mttr_s"]["p90"]]
    return [s["incidents"], s["acknowledged"], s["resolved"], *(_s(t) for t in times)]


def report_markdown(data: dict[str, Any]) -> str:
    """The report (as report() returned it) for people."""
    lines = [
        f"# Incident report {data['since']} to {data['until']}",
        "",
        f"**Incidents:** {data['incidents']}"
        + (" (truncated: only the newest were read)" if data.get("truncated") else ""),
        "",
        "MTTA and MTTR are the median and 90th percentile of the time from trigger to acknowledgement "
        "and to resolution. An incident meets its target when it is acknowledged (or resolved) within "
        "its severity's ack_within.",
        "",
        "## By severity",
        "",
        "| Severity | Incidents | Acknowledged | Resolved | MTTA median | MTTA p90 | MTTR median | MTTR p90 "
        "| Ack target | Met | Missed |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in data["by_severity"]:
        lines.append(
            row(
                s["severity"],
                *_counts_and_times(s),
                _s(s["ack_target_s"]),
                s["target_met"],
                s["target_missed"],
            )
        )
    lines += [
        "",
        "## By service",
        "",
        "| Service | Incidents | Acknowledged | Resolved | MTTA median | MTTA p90 | MTTR median | MTTR p90 "
        "| Met | Missed |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in data["by_service"]:
        lines.append(row(s["service"], *_counts_and_times(s), s["target_met"], s["target_missed"]))
    lines += [
        "",
        "## Pages per person",
        "",
        f"Out of hours: {md(data['out_of_hours']['rule'])}.",
        "",
        "| Person | Pages | Out of hours | Incidents |",
        "|---|---|---|---|",
    ]
    lines += [
        row(p["person"], p["pages"], p["out_of_hours"], p["incidents"]) for p in data["pages_per_person"]
    ]
    lines += ["", "## Noisiest alerts", "", "| Alert | Service | Incidents | Alerts |", "|---|---|---|---|"]
    lines += [row(a["alertname"], a["service"], a["incidents"], a["alerts"]) for a in data["noisiest_alerts"]]
    lines += ["", "## Post-incident reviews due", ""]
    if data["reviews_due"]:
        lines += ["| Incident | Severity | Title | Why |", "|---|---|---|---|"]
        lines += [row(r["id"], r["severity"], r["title"], r["reason"]) for r in data["reviews_due"]]
    else:
        lines.append("None.")
    return "\n".join(lines) + "\n"
