"""Maintenance windows (recorded, not paged) and team targets (the schedule's on-call, else members)."""

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from engine.escalation import decide
from engine.events import Action, Note, Notify
from engine.policy.maintenance import Maintenance
from engine.policy.models import PolicySet
from engine.policy.routing import Route
from engine.policy.targets import Address, resolve_target
from tests.unit.escalation_helpers import alert, received

BERLIN = ZoneInfo("Europe/Berlin")
DAYS = {
    "time_zone": "Europe/Berlin",
    "rotations": [
        {
            "participants": ["a"],
            "shift": "1d",
            "handoff": "09:00",
            "start": "2027-01-04",
            "only": [{"days": ["mon-fri"], "from": "09:00", "to": "17:00"}],
        }
    ],
}
POLICIES = PolicySet.model_validate(
    {
        "severities": {"P1": {}},
        "default": {"severity": "P1", "policy": "p"},
        "escalation_policies": {"p": {"levels": [{"after": "0s", "notify": ["team:sre"]}]}},
        "users": {"a": {"email": "a@x"}, "b": {"email": "b@x"}, "c": {"email": "c@x"}},
        "schedules": {
            "days": {
                "time_zone": "Europe/Berlin",
                "rotations": [
                    {"participants": ["a"], "shift": "1d", "handoff": "09:00", "start": "2027-01-04",
                     "only": [{"days": ["mon-fri"], "from": "09:00", "to": "17:00"}]}
                ],
            }
        },
        "teams": {"sre": {"schedule": "days", "members": ["b", "c"]}, "db": {"members": ["c"]}},
        "maintenance": [
            {"name": "db-migration", "matchers": ['service="checkout"'],
             "from": "2027-01-05T22:00:00Z", "to": "2027-01-06T02:00:00Z"},
            {"name": "staging-deploys", "matchers": ['service="checkout"'],
             "weekly": {"days": ["tue"], "from": "14:00", "to": "15:00", "time_zone": "Europe/Berlin"}},
        ],
    }
)  # fmt: skip
ROUTE = Route(rule="r", severity="P1", policy="p", group_by="alertmanager", lane="")


def ms(y: int, mo: int, d: int, h: int, mi: int = 0) -> int:
    return int(datetime(y, mo, d, h, mi, tzinfo=BERLIN).timestamp() * 1000)


@pytest.mark.parametrize(
    ("at", "window"),
    [
        (ms(2027, 1, 5, 23, 30), "db-migration"),
        (ms(2027, 1, 12, 14, 30), "staging-deploys"),
        (ms(2027, 1, 12, 15, 0), None),
        (ms(2027, 1, 13, 14, 30), None),
    ],
)
def test_an_incident_opened_in_a_maintenance_window_is_recorded_not_paged(
    at: int, window: str | None
) -> None:
    d = decide(None, received(alert(starts=at), route=ROUTE), at, POLICIES)
    assert d.incident is not None and d.opened
    pages = [e for e in d.effects if isinstance(e, Notify) and e.action is Action.TRIGGER]
    notes = [e.text for e in d.effects if isinstance(e, Note) and e.kind == "maintenance"]
    if window is None:
        assert pages and not notes
    else:
        assert not pages and d.incident.timer_ms is None
        assert notes == [f"Opened during maintenance window {window}: not paging"]


def test_a_window_needs_a_kind_and_a_sane_span() -> None:
    with pytest.raises(ValidationError, match="either from and to"):
        Maintenance.model_validate({"name": "x", "matchers": ["a=b"]})
    with pytest.raises(ValidationError, match="to must be after from"):
        Maintenance.model_validate(
            {"name": "x", "matchers": ["a=b"], "from": "2027-01-02T00:00:00Z", "to": "2027-01-01T00:00:00Z"}
        )


def test_a_team_pages_its_schedules_on_call_or_else_every_member() -> None:
    office = resolve_target("team:sre", POLICIES, ms(2027, 1, 5, 10))
    assert office.addresses == [Address("email", "a@x", "a")] and office.note == ""
    night = resolve_target("team:sre", POLICIES, ms(2027, 1, 5, 20))
    assert night.addresses == [Address("email", "b@x", "b"), Address("email", "c@x", "c")]
    assert night.note == "team:sre: nobody on call on schedule days: paging every member"
    assert resolve_target("team:db", POLICIES, 0).people == ["c"]
    assert resolve_target("team:nope", POLICIES, 0).why_empty == "team:nope: no such team"


def on_empty(mode: str) -> PolicySet:
    return PolicySet.model_validate(
        {
            "users": {"a": {"email": "a@x"}, "b": {"email": "b@x"}, "c": {"email": "c@x"}},
            "severities": {"P1": {}},
            "default": {"severity": "P1", "policy": "p"},
            "schedules": {"days": DAYS},
            "escalation_policies": {
                "p": {
                    "on_empty": mode,
                    "levels": [
                        {"after": "0s", "notify": ["schedule:days"]},
                        {"after": "30m", "notify": ["user:b"]},
                        {"after": "1h", "notify": ["user:c"]},
                    ],
                }
            },
        }
    )


def test_on_empty_skip_moves_to_the_next_level_at_once_when_nobody_is_on_call() -> None:
    night = ms(2027, 1, 5, 20)  # the schedule only covers weekdays 09:00-17:00
    d = decide(None, received(alert(starts=night), route=ROUTE), night, on_empty("skip"))
    pages = [e.targets for e in d.effects if isinstance(e, Notify) and e.action is Action.TRIGGER]
    assert pages == [("schedule:days",), ("user:b",)]
    notes = [e.text for e in d.effects if isinstance(e, Note) and e.kind == "nobody_on_call"]
    assert notes == ["Level 1 reaches nobody now: moving on to level 2"]
    assert d.incident is not None and d.incident.timer_ms == night + 30 * 60_000  # level 3 keeps its spacing
    waited = decide(None, received(alert(starts=night), route=ROUTE), night, on_empty("wait"))
    assert [e.targets for e in waited.effects if isinstance(e, Notify)] == [("schedule:days",)]
    daytime = ms(2027, 1, 5, 10)
    d = decide(None, received(alert(starts=daytime), route=ROUTE), daytime, on_empty("skip"))
    assert [e.targets for e in d.effects if isinstance(e, Notify)] == [("schedule:days",)]  # someone's there
