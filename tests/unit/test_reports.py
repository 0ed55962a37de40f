"""Post-incident review and reports, on an incident history scripted with decide() on fake times.

Golden files in tests/fixtures/reports/: the default run compares; UPDATE_GOLDEN=1 rewrites them.
"""

import json
import os
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from engine.alerts import Alert, AlertStatus
from engine.escalation import decide
from engine.events import (
    Acknowledge,
    Action,
    AlertsReceived,
    Event,
    Note,
    Notify,
    Resolve,
    RoutedAlert,
    StatusUpdate,
    TimerFired,
)
from engine.incident import Incident
from engine.policy.models import PolicySet
from engine.policy.routing import Route
from engine.policy.targets import resolve_target
from engine.reports import percentile, postmortem, report, report_markdown, review_due
from engine.timeline import EntryKind, TimelineEntry

GOLDEN = Path(__file__).parent.parent / "fixtures" / "reports"
MIN = 60_000
HOUR = 60 * MIN
DAY = 24 * HOUR


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


MONDAY = ms("2027-03-01T10:00:00Z")  # Berlin is on CET (+1) all that week
NOW = ms("2027-03-06T18:00:00Z")  # the Saturday evening the report is made

POLICY_DOC: dict[str, Any] = {
    "severities": {
        "P0": {"description": "Complete outage", "ack_within": "5m"},
        "P1": {"description": "Major feature unavailable", "ack_within": "15m"},
        "P2": {"description": "Partial degradation", "ack_within": "1h"},
        "P3": {"description": "Minor", "business_hours_only": "office"},
    },
    "default": {"severity": "P3", "policy": "std"},
    "escalation_policies": {
        "std": {
            "levels": [
                {"after": "0s", "notify": ["user:alice"]},
                {"after": "15m", "notify": ["team:sre"]},
            ]
        },
    },
    "users": {
        "alice": {"name": "Alice", "email": "alice@example.com"},
        "bob": {"name": "Bob", "email": "bob@example.com", "slack": "U0BOB"},
        "carol": {"name": "Carol", "email": "carol@example.com"},
    },
    "teams": {"sre": {"members": ["bob", "carol"]}},
    "calendars": {"office": {"time_zone": "Europe/Berlin", "hours": {"mon-fri": "09:00-17:00"}}},
}
POLICIES = PolicySet.model_validate(POLICY_DOC)


@dataclass
class History:
    """One incident driven through decide(); the timeline as the store and delivery would write it
    (a page is delivered to every address of its target one second after it is decided)."""

    incident: Incident | None = None
    timeline: list[TimelineEntry] = field(default_factory=list)

    def at(self, now: int, event: Event) -> "History":
        d = decide(self.incident, event, now, POLICIES)
        for e in d.effects:
            if isinstance(e, Note):
                self.timeline.append(TimelineEntry(now, e.kind, e.actor, e.text))
            elif isinstance(e, Notify) and e.action is Action.TRIGGER:
                for target in e.targets:
                    for a in resolve_target(target, POLICIES, now).addresses:
                        text = f"trigger to {a.channel}:{a.name} ({target}) delivered"
                        self.timeline.append(TimelineEntry(now + 1000, EntryKind.DELIVERED, a.channel, text))
        self.incident = d.incident
        return self

    def timers_until(self, until: int) -> "History":
        while (
            self.incident is not None
            and self.incident.timer_ms is not None
            and self.incident.timer_ms <= until
        ):
            self.at(self.incident.timer_ms, TimerFired(self.incident.timer_ms))
        return self

    @property
    def inc(self) -> Incident:
        assert self.incident is not None
        return self.incident


def alert(
    name: str, start: int, fp: str, labels: dict[str, str], annotations: dict[str, str] | None = None
) -> Alert:
    """A firing alert; fingerprints are fixed so that the golden files are too."""
    return Alert(fp, AlertStatus.FIRING, {"alertname": name, **labels}, start, annotations=annotations or {})


def opened(new_id: str, severity: str, now: int, *alerts: Alert) -> History:
    route = Route(
        rule=f"{severity.lower()}-rule", severity=severity, policy="std", group_by="alertmanager", lane=""
    )
    ev = AlertsReceived(tuple(RoutedAlert(a, route) for a in alerts), f"key-{new_id}", new_id)
    return History().at(now, ev)


def checkout(start: int, fp: str) -> Alert:
    return alert(
        "CheckoutDown",
        start,
        fp=fp,
        labels={"service": "checkout", "env": "prod", "severity": "critical"},
        annotations={
            "summary": "Checkout returns 503 for 60% of requests",
            "description": "The checkout API fails its health checks in all zones.",
            "impact": "Customers cannot pay for their orders",
            "runbook_url": "https://runbooks.example/checkout-down",
        },
    )


def history() -> list[History]:
    """Six incidents: five in the report's week, one long before it."""
    # 1. P1, Monday office hours: alice acks in 4m, two updates, resolves after 1h05m
    one = opened("inc-1", "P1", MONDAY, checkout(MONDAY, "00000000000000c1"))
    one.at(MONDAY + 4 * MIN, Acknowledge("alice"))
    one.at(
        MONDAY + 10 * MIN, StatusUpdate("alice", "investigating", "Error rate at 60%, looking at the deploy")
    )
    one.at(MONDAY + 30 * MIN, StatusUpdate("alice", "identified", "Bad config push; rolling back"))
    one.at(MONDAY + 65 * MIN, Resolve("alice", "rolled back"))
    # 2. P1, Tuesday 02:00 UTC (night): alice sleeps, team:sre paged at 15m, bob acks at 20m,
    #    the alert clears at 50m
    t2 = MONDAY + DAY - 8 * HOUR
    two = opened("inc-2", "P1", t2, checkout(t2, "00000000000000c2"))
    two.timers_until(t2 + 20 * MIN).at(t2 + 20 * MIN, Acknowledge("bob"))
    cleared = checkout(t2, "00000000000000c2")
    cleared = Alert(
        cleared.fingerprint, AlertStatus.RESOLVED, cleared.labels, t2, t2 + 50 * MIN, cleared.annotations
    )
    route = Route(rule="p1-rule", severity="P1", policy="std", group_by="alertmanager", lane="")
    two.at(t2 + 50 * MIN, AlertsReceived((RoutedAlert(cleared, route),), "key-inc-2", "x"))
    # 3. P2, Wednesday afternoon, hostile labels: acked in 30m, resolved after 5h (a review is due)
    t3 = MONDAY + 2 * DAY + 4 * HOUR
    hostile = alert(
        "PaymentsLatency",
        t3,
        fp="00000000000000p3",
        labels={"service": "payments", "instance": "a|b<script>alert(1)</script>"},
        annotations={
            "summary": "p99 over 2s | worst in eu-west\n# not a heading",
            "impact": "Slow <b>payments</b>",
        },
    )
    three = opened("inc-3", "P2", t3, hostile)
    three.at(t3 + 30 * MIN, Acknowledge("carol", "on it | <script>x</script>"))
    three.at(t3 + 5 * HOUR, Resolve("carol"))
    # 4. P0, Saturday noon: two alerts; carol acks in 2m, resolves at 20m
    t4 = MONDAY + 5 * DAY + 2 * HOUR
    db = {"job": "postgres"}
    four = opened("inc-4", "P0", t4, alert("DatabaseDown", t4, fp="00000000000000d1", labels=db))
    four.at(
        t4 + MIN,
        AlertsReceived(
            (
                RoutedAlert(
                    alert("DatabaseDown", t4, fp="00000000000000d2", labels=db),
                    Route("p0-rule", "P0", "std", "alertmanager", ""),
                ),
            ),
            "key-inc-4",
            "x",
        ),
    )
    four.at(t4 + 2 * MIN, Acknowledge("carol"))
    four.at(t4 + 20 * MIN, Resolve("carol"))
    # 5. P1, Thursday 09:30 UTC: alice acks in 10m; still open when the report is made
    t5 = MONDAY + 3 * DAY - 30 * MIN
    five = opened("inc-5", "P1", t5, checkout(t5, "00000000000000c5"))
    five.at(t5 + 10 * MIN, Acknowledge("alice"))
    # 6. long before the report's window
    t6 = MONDAY - 40 * DAY
    six = opened("inc-6", "P1", t6, checkout(t6, "00000000000000c6"))
    six.at(t6 + MIN, Resolve("alice"))
    return [one, two, three, four, five, six]


def golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"{path} is missing: run with UPDATE_GOLDEN=1 to write it"
    assert text == path.read_text(encoding="utf-8"), f"{name} differs; UPDATE_GOLDEN=1 rewrites it"


# ---- the review ----------------------------------------------------------------------------------


def test_the_postmortem_of_a_p1_matches_its_golden_file() -> None:
    one = history()[0]
    golden("postmortem-p1.md", postmortem(one.inc, one.timeline, POLICIES, NOW))


def test_the_postmortem_of_a_missed_target_and_an_open_incident() -> None:
    incidents = history()
    two, five = incidents[1], incidents[4]
    text = postmortem(two.inc, two.timeline, POLICIES, NOW)
    golden("postmortem-p1-night.md", text)
    assert "| Time to acknowledge | 20m (by bob) | 15m (P1 ack_within) | missed by 5m |" in text
    assert "| bob | email:bob@example.com | 1 |" in text and "| carol | email:carol@example.com | 1 |" in text
    open_text = postmortem(five.inc, five.timeline, POLICIES, NOW)
    assert "- **End:** still open on 2027-03-06 18:00:00 UTC" in open_text
    assert "- **Duration:** 2d 8h 30m so far" in open_text


def test_the_postmortem_states_the_facts_of_the_p1() -> None:
    one = history()[0]
    text = postmortem(one.inc, one.timeline, POLICIES, NOW)
    assert text.startswith("# Post-incident review: CheckoutDown")
    assert (
        "**Review required:** yes — P1 incident: every P0 and P1 incident gets a post-incident review."
        in text
    )
    assert "- **Start:** 2027-03-01 10:00:00 UTC" in text and "- **Duration:** 1h 5m" in text
    assert "- **Severity:** P1 — Major feature unavailable" in text
    assert "- **Impact:** Customers cannot pay for their orders" in text
    assert "| Time to acknowledge | 4m (by alice) | 15m (P1 ack_within) | met, 11m to spare |" in text
    assert "| Time to resolve | 1h 5m (by alice) |" in text
    for heading in (
        "## Root cause analysis",
        "## What went well",
        "## What could be improved",
        "## Action items",
    ):
        assert heading in text
    assert all(f"{n}. Why {n}? →" in text for n in range(1, 6))
    assert "| Item | Owner | Due date | Status |" in text
    assert "| 2 | 2027-03-01 10:30:00 UTC | identified | alice | Bad config push; rolling back |" in text


def test_outside_text_is_escaped_and_tables_keep_their_columns() -> None:
    three = history()[2]
    text = postmortem(three.inc, three.timeline, POLICIES, NOW)
    golden("postmortem-p2-hostile.md", text)
    assert "<script>" not in text and "<b>" not in text
    assert "a\\|b&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "\n# not a heading" not in text and "<br># not a heading" in text
    width = 0
    for line in text.splitlines():  # every row of a table has its header's columns
        cells = len(re.split(r"(?<!\\)\|", line)) - 2
        if not line.startswith("|"):
            width = 0
        elif width == 0:
            width = cells
        else:
            assert cells == width, line
    timeline = text.split("## Timeline")[1].split("\n\n")[1].splitlines()
    assert len(timeline) == 7 and all(len(re.split(r"(?<!\\)\|", r)) == 5 for r in timeline)
    assert "on it \\| &lt;script&gt;x&lt;/script&gt;" in text


def test_review_due_follows_the_runbooks() -> None:
    one, _, three, four, *_ = history()
    sev = POLICIES.severities
    assert review_due(four.inc, sev) == "P0 incident: every P0 and P1 incident gets a post-incident review"
    assert review_due(one.inc, sev) is not None
    assert review_due(three.inc, sev) == (
        "P2 incident that lasted 5h, over 4 hours: "
        "P2 incidents lasting over 4 hours get a post-incident review"
    )
    short = three.inc.clone()
    short.resolved_ms = short.created_ms + 4 * HOUR  # exactly 4 hours is not "over 4 hours"
    assert review_due(short, sev) is None
    short.severity = "P3"
    short.resolved_ms = short.created_ms + 9 * HOUR
    assert review_due(short, sev) is None
    still_open = three.inc.clone()
    still_open.resolved_ms = None
    assert review_due(still_open, sev) is None  # how long it lasts is not known yet
    assert review_due(still_open, sev, still_open.created_ms + 5 * HOUR) is not None
    short.severity = "SEV-9"
    assert review_due(short, sev) is None


# ---- the report -----------------------------------------------------------------------------------


def the_report() -> dict[str, Any]:
    return report([(h.inc, h.timeline) for h in history()], POLICIES, NOW - 7 * DAY, NOW)


def test_the_report_matches_its_golden_files() -> None:
    data = the_report()
    golden("report.json", json.dumps(data, indent=2, sort_keys=True) + "\n")
    golden("report.md", report_markdown(data))


def test_mtta_and_mttr_by_hand() -> None:
    data = the_report()
    assert data["incidents"] == 5  # inc-6 is older than the window
    p1 = next(s for s in data["by_severity"] if s["severity"] == "P1")
    # time to acknowledge: 240 s, 1200 s, 600 s -> sorted 240, 600, 1200
    # median 600; p90 at rank 0.9 * 2 = 1.8: 600 + 0.8 * (1200 - 600) = 1080
    assert p1["mtta_s"] == {"median": 600.0, "p90": 1080.0, "count": 3}
    # time to resolve: 3900 s, 3000 s (inc-5 is open): median 3450; p90 3000 + 0.9 * 900 = 3810
    assert p1["mttr_s"] == {"median": 3450.0, "p90": 3810.0, "count": 2}
    assert (p1["incidents"], p1["acknowledged"], p1["resolved"]) == (3, 3, 2)
    assert (p1["ack_target_s"], p1["target_met"], p1["target_missed"]) == (900.0, 2, 1)
    p3 = next(s for s in data["by_severity"] if s["severity"] == "P3")
    assert p3["incidents"] == 0 and p3["mtta_s"] == {"median": None, "p90": None, "count": 0}
    services = {s["service"]: s for s in data["by_service"]}
    assert list(services) == ["checkout", "payments", "postgres"]  # by count, then name; job when no service
    assert services["postgres"]["mttr_s"]["median"] == 1200.0


def test_percentile_by_hand() -> None:
    assert percentile([], 0.5) is None
    assert percentile([7.0], 0.9) == 7.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    assert percentile([10.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0], 0.9) == pytest.approx(9.1)


def test_pages_per_person_and_out_of_hours() -> None:
    data = the_report()
    assert data["out_of_hours"] == {"calendar": "office", "rule": "outside calendar office (Europe/Berlin)"}
    people = {p["person"]: p for p in data["pages_per_person"]}
    # alice: paged at level 1 of every incident (inc-2 at 03:00 Berlin, inc-4 on a Saturday)
    assert people["alice"] == {"person": "alice", "pages": 5, "out_of_hours": 2, "incidents": 5}
    # bob and carol: team:sre at level 2 of inc-2 only, at night; bob once, though by email and Slack
    assert people["bob"] == {"person": "bob", "pages": 1, "out_of_hours": 1, "incidents": 1}
    assert people["carol"] == {"person": "carol", "pages": 1, "out_of_hours": 1, "incidents": 1}


def test_without_a_business_hours_calendar_office_hours_are_weekdays_9_to_5_utc() -> None:
    plain = POLICIES.model_copy(
        update={
            "severities": {
                k: v.model_copy(update={"business_hours_only": None}) for k, v in POLICIES.severities.items()
            }
        }
    )
    data = report([(h.inc, h.timeline) for h in history()], plain, NOW - 7 * DAY, NOW)
    assert data["out_of_hours"] == {"calendar": None, "rule": "outside Mon-Fri 09:00-17:00 UTC"}
    alice = next(p for p in data["pages_per_person"] if p["person"] == "alice")
    assert alice["out_of_hours"] == 2  # Tuesday 02:00 UTC and Saturday 12:00 UTC
    assert "outside Mon-Fri 09:00-17:00 UTC" in report_markdown(data)


def test_noisiest_alerts_count_incidents_and_alerts() -> None:
    noisy = the_report()["noisiest_alerts"]
    assert noisy[0] == {"alertname": "CheckoutDown", "service": "checkout", "incidents": 3, "alerts": 3}
    assert {"alertname": "DatabaseDown", "service": "postgres", "incidents": 1, "alerts": 2} in noisy
    assert len(noisy) == 3


def test_the_report_markdown_escapes_names_from_labels() -> None:
    evil = history()[2]
    for a in evil.inc.alerts.values():
        a.labels["service"] = "pay|ments<script>"
    text = report_markdown(report([(evil.inc, evil.timeline)], POLICIES, NOW - 7 * DAY, NOW))
    assert "<script>" not in text and "| pay\\|ments&lt;script&gt; | 1 |" in text
