"""The dry run: the real decide() on a virtual clock, pages resolved to people at their instant."""

import json
from datetime import datetime
from pathlib import Path

import pytest

from engine.alerts import Alert, AlertStatus, fingerprint
from engine.escalation import decide
from engine.events import Action, AlertsReceived, Notify
from engine.ingest.alertmanager import parse_payload
from engine.policy.loader import load_policies
from engine.policy.models import PolicySet
from engine.simulate import Page, incidents_of, reach, simulate

ROOT = Path(__file__).parent.parent.parent
MIN = 60_000
FRIDAY_NOON_UTC = int(datetime.fromisoformat("2027-03-26T12:00:00Z").timestamp() * 1000)
LEVEL_1 = {"user:sre-oncall", "user:senior-sre", "pagerduty:platform", "webhook:audit", "slack:#incidents"}


@pytest.fixture(scope="module")
def shipped() -> PolicySet:
    return load_policies(ROOT / "policies")


def critical_alerts() -> list[Alert]:
    raw = json.loads((ROOT / "tests" / "fixtures" / "01-firing-single.json").read_text())
    return parse_payload(raw)[1]


def labelled(**labels: str) -> list[Alert]:
    return [Alert(fingerprint(labels), AlertStatus.FIRING, labels, FRIDAY_NOON_UTC)]


def triggers(pages: list[Page]) -> list[tuple[int, int]]:
    return sorted({(p.offset_s // 60, p.level) for p in pages if p.action == "trigger"})


def test_a_p0_climbs_the_critical_ladder_and_repeats_it(shipped: PolicySet) -> None:
    pages = simulate(shipped, critical_alerts(), FRIDAY_NOON_UTC)
    # levels at 0, 15m and 30m; the ladder again after repeat_after (cycle 45m), twice
    assert triggers(pages) == [
        (0, 1),
        (15, 2),
        (30, 3),
        (45, 1),
        (60, 2),
        (75, 3),
        (90, 1),
        (105, 2),
        (120, 3),
    ]
    assert {p.target for p in pages if p.offset_s == 0} == LEVEL_1
    first = [p for p in pages if p.offset_s == 0]
    # a user without notification rules is reached on every contact method at once
    assert {(p.user, p.channel, p.address) for p in first} == {
        ("sre-oncall", "email", "sre-oncall@example.com"),
        ("sre-oncall", "slack", "U01SREONC"),
        ("senior-sre", "email", "senior-sre@example.com"),
        ("senior-sre", "slack", "U01SENIOR"),
        ("", "pagerduty", "platform"),
        ("", "webhook", "audit"),
        ("", "slack", "#incidents"),
    }
    assert all(p.at_ms == FRIDAY_NOON_UTC + p.offset_s * 1000 for p in pages)
    assert {p.incident_key for p in pages} == {'|am:{}:{alertname="HighErrorRate", service="checkout"}'}
    assert all(p.held_until_ms is None for p in pages)


def test_first_page_is_what_decide_itself_pages(shipped: PolicySet) -> None:
    alerts = critical_alerts()
    [(key, routed)] = incidents_of(shipped, alerts).items()
    d = decide(None, AlertsReceived(tuple(routed), key, "direct"), FRIDAY_NOON_UTC, shipped)
    notify = next(e for e in d.effects if isinstance(e, Notify))
    first = simulate(shipped, alerts, FRIDAY_NOON_UTC)[0]
    assert (first.target, first.level, first.action) == (notify.targets[0], notify.level + 1, notify.action)
    assert first.at_ms == FRIDAY_NOON_UTC


def test_an_ack_stops_the_climb_until_the_ack_timeout(shipped: PolicySet) -> None:
    pages = simulate(shipped, critical_alerts(), FRIDAY_NOON_UTC, ack_at_ms=FRIDAY_NOON_UTC + 4 * MIN)
    acks = [p for p in pages if p.action == Action.ACKNOWLEDGE]
    assert {p.target for p in acks} == LEVEL_1 and {p.offset_s for p in acks} == {240}
    # until: acknowledged: nothing pages between the ack and critical's ack_timeout (30m)
    assert [minute for minute, _ in triggers(pages)][:2] == [0, 34]
    again = [p for p in pages if p.action == "trigger" and p.offset_s == 34 * 60]
    assert {p.level for p in again} == {1}
    assert all("Acknowledged but not resolved in time" in p.note for p in again)


def test_a_resolve_ends_every_page(shipped: PolicySet) -> None:
    start = FRIDAY_NOON_UTC
    pages = simulate(
        shipped, critical_alerts(), start, ack_at_ms=start + 4 * MIN, resolve_at_ms=start + 10 * MIN
    )
    assert triggers(pages) == [(0, 1)]
    assert {p.target for p in pages if p.action == "resolve" and p.offset_s == 600} == LEVEL_1


def test_a_p1_pages_whoever_is_on_call_then_l2(shipped: PolicySet) -> None:
    pages = simulate(shipped, labelled(alertname="X", severity="error", service="checkout"), FRIDAY_NOON_UTC)
    assert triggers(pages) == [(0, 1), (30, 2)]  # standard: until resolved, no repeat
    oncall = [p for p in pages if p.target == "schedule:sre-primary"]
    assert [(p.user, p.channel, p.address) for p in oncall] == [
        ("alice", "email", "alice@example.com"),
        ("alice", "slack", "U01ALICE"),
    ]
    assert [(p.user, p.channel) for p in pages if p.level == 2] == [
        ("senior-sre", "email"),
        ("senior-sre", "slack"),
    ]


def test_the_horizon_bounds_the_run(shipped: PolicySet) -> None:
    pages = simulate(shipped, critical_alerts(), FRIDAY_NOON_UTC, horizon_ms=20 * MIN)
    assert triggers(pages) == [(0, 1), (15, 2)]


def test_heartbeats_and_resolved_alerts_page_nobody(shipped: PolicySet) -> None:
    assert simulate(shipped, labelled(alertname="Watchdog"), FRIDAY_NOON_UTC) == []
    raw = json.loads((ROOT / "tests" / "fixtures" / "03-resolved.json").read_text())
    assert simulate(shipped, parse_payload(raw)[1], FRIDAY_NOON_UTC) == []


def test_an_empty_slot_pages_the_fallback_and_says_so() -> None:
    rotation = {"participants": ["sat"], "shift": "1d", "handoff": "00:00", "start": "2027-01-02"}
    policies = PolicySet.model_validate(
        {
            "severities": {"P1": {}},
            "default": {"severity": "P1", "policy": "p"},
            "escalation_policies": {"p": {"levels": [{"after": "0s", "notify": ["schedule:weekends"]}]}},
            "users": {"sat": {"email": "sat@x"}, "backup": {"email": "backup@x"}, "chat": {"slack": "U1"}},
            "schedules": {
                "weekends": {
                    "time_zone": "UTC",
                    "rotations": [{**rotation, "only": [{"days": ["sat", "sun"]}]}],
                    "fallback": "user:backup",
                }
            },
            "channels": {"email": {"smtp_host": "localhost", "from": "e@x"}},
        }
    )
    (page,) = simulate(policies, labelled(alertname="X"), FRIDAY_NOON_UTC)  # a Friday: nobody on
    assert (page.target, page.user, page.address) == ("schedule:weekends", "backup", "backup@x")
    assert "nobody on call" in page.note and "fallback user:backup" in page.note
    (saturday,) = simulate(policies, labelled(alertname="X"), FRIDAY_NOON_UTC + 86_400_000)
    assert saturday.user == "sat"
    # a user with only Slack (no notifier in this release) reaches nobody, and the page says why
    (nobody,) = reach("user:chat", policies, FRIDAY_NOON_UTC)
    assert (nobody.user, nobody.channel) == ("chat", "") and "no contact method" in nobody.note


def test_a_level_outside_its_calendar_is_a_held_page_then_pages_when_it_opens() -> None:
    policies = PolicySet.model_validate(
        {
            "severities": {"P1": {}, "P3": {"business_hours_only": "office"}},
            "rules": [{"name": "low", "matchers": ['severity="info"'], "severity": "P3", "policy": "day"}],
            "default": {"severity": "P1", "policy": "day"},
            "calendars": {"office": {"time_zone": "Europe/Berlin", "hours": {"mon-fri": "09:00-17:00"}}},
            "escalation_policies": {
                "day": {
                    "levels": [
                        {"after": "0s", "notify": ["user:a"]},
                        {"after": "15m", "notify": ["user:b"], "during": "office"},
                        {"after": "30m", "notify": ["user:c"]},
                    ]
                }
            },
            "users": {"a": {"email": "a@x"}, "b": {"email": "b@x"}, "c": {"email": "c@x"}},
            "channels": {"email": {"smtp_host": "localhost", "from": "e@x"}},
        }
    )
    friday = int(datetime.fromisoformat("2027-06-11T16:50:00+02:00").timestamp() * 1000)
    monday_nine = int(datetime.fromisoformat("2027-06-14T09:00:00+02:00").timestamp() * 1000)
    pages = simulate(policies, labelled(alertname="X"), friday)
    (held,) = [p for p in pages if p.action == "held"]
    assert (held.offset_s, held.level, held.held_until_ms) == (15 * 60, 2, monday_nine)
    assert [(p.at_ms, p.user) for p in pages if p.action == "trigger"] == [
        (friday, "a"),
        (friday + 30 * MIN, "c"),  # the ladder's own deadlines do not wait for the held level
        (monday_nine, "b"),
    ]
    # a business-hours severity holds its whole ladder (level 0) until the calendar opens
    quiet = simulate(policies, labelled(alertname="Y", severity="info"), friday + 40 * MIN)
    first, *_ = quiet
    assert (first.action, first.level, first.held_until_ms) == ("held", 0, monday_nine)
    assert next((p.at_ms, p.user) for p in quiet if p.action == "trigger") == (monday_nine, "a")
