"""Calendars in the state machine: a level `during` a calendar holds its pages until the calendar
opens; a severity `business_hours_only` starts its whole ladder then. Pure, on a virtual clock."""

from datetime import datetime
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.escalation import decide
from engine.events import Acknowledge, Action, Decision, Note, Notify, Resolve, TimerFired
from engine.incident import Incident
from engine.policy.calendars import is_open
from engine.policy.models import PolicySet
from engine.policy.routing import Route
from engine.times import utc
from tests.unit.escalation_helpers import alert, received

BERLIN = ZoneInfo("Europe/Berlin")
MIN = 60_000
POLICIES = PolicySet.model_validate(
    {
        "severities": {"P1": {}, "P3": {"business_hours_only": "office"}},
        "default": {"severity": "P1", "policy": "day"},
        "calendars": {
            "office": {
                "time_zone": "Europe/Berlin",
                "hours": {"mon-fri": "09:00-17:00"},
                "holidays": {"dates": ["2027-06-14"]},
            }
        },
        "escalation_policies": {
            "day": {
                "levels": [
                    {"after": "0s", "notify": ["user:a"]},
                    {"after": "15m", "notify": ["user:b"], "during": "office"},
                    {"after": "30m", "notify": ["user:c"]},
                ]
            },
            "low": {"levels": [{"after": "0s", "notify": ["user:a"]}, {"after": "2h", "notify": ["user:b"]}]},
        },
        "users": {"a": {"email": "a@x"}, "b": {"email": "b@x"}, "c": {"email": "c@x"}},
    }
)
OFFICE = POLICIES.calendars["office"]
P1 = Route(rule="r", severity="P1", policy="day", group_by="alertmanager", lane="")
P3 = Route(rule="r3", severity="P3", policy="low", group_by="alertmanager", lane="")


def berlin(y: int, mo: int, d: int, h: int, mi: int = 0) -> int:
    return int(datetime(y, mo, d, h, mi, tzinfo=BERLIN).timestamp() * 1000)


def run_until_quiet(inc: Incident, now: int, stop_ms: int) -> list[tuple[int, Decision]]:
    """Fire the incident's timer until it has none (or `stop_ms`): [(when, decision)]."""
    out = []
    while inc.timer_ms is not None and inc.timer_ms <= stop_ms:
        now = inc.timer_ms
        d = decide(inc, TimerFired(now), now, POLICIES)
        assert d.incident is not None
        inc = d.incident
        out.append((now, d))
    return out


def paged(d: Decision) -> list[tuple[str, ...]]:
    return [e.targets for e in d.effects if isinstance(e, Notify) and e.action is Action.TRIGGER]


def notes(d: Decision, kind: str) -> list[str]:
    return [e.text for e in d.effects if isinstance(e, Note) and e.kind == kind]


def test_a_level_outside_its_calendar_is_held_until_it_opens_and_the_ladder_goes_on() -> None:
    friday = berlin(2027, 6, 11, 16, 50)
    d = decide(None, received(alert(starts=friday), route=P1), friday, POLICIES)
    assert d.incident is not None and paged(d) == [("user:a",)]
    steps = run_until_quiet(d.incident, friday, berlin(2027, 6, 16, 0))
    at_1705, held = steps[0]
    assert at_1705 == friday + 15 * MIN and paged(held) == []
    assert notes(held, "held") == [
        "Held level 2 until 2027-06-15T07:00:00.000Z: outside calendar office"  # Monday is a holiday
    ]
    at_1720, level3 = steps[1]
    assert at_1720 == friday + 30 * MIN and paged(level3) == [("user:c",)]  # deadlines do not move
    tuesday, released = steps[2]
    assert tuesday == berlin(2027, 6, 15, 9) and paged(released) == [("user:b",)]
    assert len(steps) == 3


def test_an_acknowledgement_drops_held_pages() -> None:
    friday = berlin(2027, 6, 11, 16, 50)
    d = decide(None, received(alert(starts=friday), route=P1), friday, POLICIES)
    assert d.incident is not None
    [(_, held)] = run_until_quiet(d.incident, friday, friday + 16 * MIN)
    assert held.incident is not None and held.incident.held
    acked = decide(held.incident, Acknowledge("alice"), friday + 20 * MIN, POLICIES)
    assert acked.incident is not None and acked.incident.held == [] and acked.incident.timer_ms is None


def test_a_business_hours_severity_starts_its_ladder_when_the_office_opens() -> None:
    saturday = berlin(2027, 6, 12, 3)
    d = decide(None, received(alert(starts=saturday), route=P3), saturday, POLICIES)
    assert d.incident is not None and paged(d) == []
    assert notes(d, "held") == [
        "P3 is handled during business hours (office): paging held until 2027-06-15T07:00:00.000Z"
    ]
    steps = run_until_quiet(d.incident, saturday, berlin(2027, 6, 16, 0))
    assert [(when, paged(step)) for when, step in steps] == [
        (berlin(2027, 6, 15, 9), [("user:a",)]),
        (berlin(2027, 6, 15, 11), [("user:b",)]),  # the ladder's spacing from the opening
    ]
    inside = berlin(2027, 6, 16, 10)
    d = decide(None, received(alert(starts=inside), route=P3), inside, POLICIES)
    assert paged(d) == [("user:a",)]  # inside business hours it pages at once


def test_resolving_clears_what_was_held() -> None:
    friday = berlin(2027, 6, 11, 16, 50)
    d = decide(None, received(alert(starts=friday), route=P1), friday, POLICIES)
    assert d.incident is not None
    [(_, held)] = run_until_quiet(d.incident, friday, friday + 16 * MIN)
    assert held.incident is not None
    done = decide(held.incident, Resolve("bob"), friday + 17 * MIN, POLICIES)
    assert done.incident is not None and done.incident.held == [] and done.incident.timer_ms is None


@settings(max_examples=150, deadline=None)
@given(
    opened_at=st.integers(berlin(2027, 3, 20, 0), berlin(2027, 4, 10, 0)),
    ack_after_min=st.none() | st.integers(1, 4 * 24 * 60),
    severity=st.sampled_from([P1, P3]),
)
def test_held_pages_only_ever_go_out_while_their_calendar_is_open(
    opened_at: int, ack_after_min: int | None, severity: Route
) -> None:
    d = decide(None, received(alert(starts=opened_at), route=severity), opened_at, POLICIES)
    assert d.incident is not None
    inc, now = d.incident, opened_at
    decisions = [(opened_at, d)]
    ack_at = None if ack_after_min is None else opened_at + ack_after_min * MIN
    for _ in range(50):
        if inc.timer_ms is None:
            break
        if ack_at is not None and ack_at < inc.timer_ms:
            d = decide(inc, Acknowledge("alice"), ack_at, POLICIES)
            ack_at = None
            now = d.incident.timer_ms if d.incident and d.incident.timer_ms else now
        else:
            now = inc.timer_ms
            d = decide(inc, TimerFired(now), now, POLICIES)
        assert d.incident is not None
        inc = d.incident
        decisions.append((now, d))
        assert inc.timer_ms is None or inc.timer_ms > now or not inc.is_open
    for when, dec in decisions:
        for targets in paged(dec):
            restricted = (targets == ("user:b",) and severity is P1) or severity is P3
            if restricted:
                assert is_open(OFFICE, utc(when)), (when, targets)
