"""The pure delivery plan: what an outbox message becomes against the incident as it is at send time."""

import dataclasses
from datetime import datetime
from typing import Any

import pytest

from engine.delivery.plan import Plan, plan
from engine.events import Acknowledge, Action, Resolve, Snooze
from engine.incident import Incident
from engine.outbox import OutboxMessage
from engine.policy.models import PolicySet
from engine.policy.schedules import Schedule
from engine.policy.targets import Address
from tests.unit.escalation_helpers import MIN, POLICIES, STD, T0, opened, run

CHANNELS = ("email", "pagerduty")
NOW = T0 + 2 * MIN


def page(target: str, action: Action = Action.TRIGGER) -> OutboxMessage:
    return OutboxMessage("0-new", action, target, 0, T0)


def after(inc: Incident, event: Acknowledge | Resolve | Snooze) -> Incident:
    d = run(inc, event, T0 + MIN)
    assert d.incident is not None
    return d.incident


def test_a_page_reaches_every_address_of_its_target() -> None:
    inc = opened()
    assert plan(page("user:a"), inc, POLICIES, CHANNELS, NOW) == Plan(sends=(Address("email", "a@x", "a"),))
    assert plan(page("pagerduty:p"), inc, POLICIES, CHANNELS, NOW).sends == (Address("pagerduty", "p"),)


def test_a_person_is_reached_only_on_channels_the_engine_has() -> None:
    p = POLICIES
    users = {**p.users, "a": p.users["a"].model_copy(update={"slack": "U1"})}
    policies = p.model_copy(update={"users": users})
    assert plan(page("user:a"), opened(), policies, CHANNELS, NOW).sends == (Address("email", "a@x", "a"),)
    assert plan(page("user:a"), opened(), policies, ("slack",), NOW).sends == (Address("slack", "U1", "a"),)
    # a channel target is sent (and fails, naming the channel) even when the channel is missing
    assert plan(page("slack:#ops"), opened(), policies, CHANNELS, NOW).sends == (Address("slack", "#ops"),)


@pytest.mark.parametrize(
    ("target", "why"),
    [
        ("user:nobody", "user:nobody: no such user"),
        ("schedule:primary", "schedule:primary: no such schedule"),
        ("team:sre", "team:sre: no such team"),
    ],
)
def test_a_target_that_reaches_nobody_says_why(target: str, why: str) -> None:
    assert plan(page(target), opened(), POLICIES, CHANNELS, NOW) == Plan(unreachable=why)


@pytest.mark.parametrize(
    ("event", "action", "why"),
    [
        (Resolve("bob"), Action.TRIGGER, "already resolved"),
        (Snooze("bob", 30 * MIN), Action.TRIGGER, "snoozed"),
        (Acknowledge("bob"), Action.TRIGGER, "already acknowledged"),  # crit: until acknowledged
        (Resolve("bob"), Action.ACKNOWLEDGE, "incident is resolved now"),
    ],
)
def test_a_notification_that_no_longer_applies_is_skipped(
    event: Acknowledge | Resolve | Snooze, action: Action, why: str
) -> None:
    assert plan(page("user:a", action), after(opened(), event), POLICIES, CHANNELS, NOW) == Plan(skipped=why)


def test_under_until_resolved_an_ack_does_not_stop_a_page() -> None:
    inc = after(opened(STD), Acknowledge("bob"))
    assert plan(page("user:b"), inc, POLICIES, CHANNELS, NOW).sends == (Address("email", "b@x", "b"),)


def test_a_retry_goes_to_the_one_address_that_failed() -> None:
    retry = dataclasses.replace(page("user:a"), address=Address("email", "old@x"), attempt=3)
    assert plan(retry, opened(), POLICIES, CHANNELS, NOW) == Plan(sends=(Address("email", "old@x"),))


ROTA: dict[str, Any] = {
    "time_zone": "Europe/Berlin",
    "layers": [{"participants": ["a", "b"], "shift": "1d", "handoff": "09:00", "start": "2027-01-04"}],
}


def with_schedules(**schedules: dict[str, Any]) -> PolicySet:
    parsed = {name: Schedule.model_validate(body) for name, body in schedules.items()}
    return POLICIES.model_copy(update={"schedules": parsed})


def at(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def test_a_schedule_pages_whoever_is_on_call_when_the_page_is_sent() -> None:
    policies = with_schedules(primary=ROTA)
    msg = page("schedule:primary")
    monday, tuesday = at("2027-01-04T10:00:00+01:00"), at("2027-01-05T10:00:00+01:00")
    assert plan(msg, opened(), policies, CHANNELS, monday).sends == (Address("email", "a@x", "a"),)
    assert plan(msg, opened(), policies, CHANNELS, tuesday).sends == (Address("email", "b@x", "b"),)


def test_nobody_on_call_pages_the_fallback_and_says_so() -> None:
    weekdays = {
        **ROTA,
        "layers": [
            {**ROTA["layers"][0], "restrictions": [{"days": ["mon"], "from": "09:00", "to": "17:00"}]}
        ],
    }
    policies = with_schedules(primary={**weekdays, "fallback": "user:c"}, bare=weekdays)
    night = at("2027-01-04T20:00:00+01:00")
    got = plan(page("schedule:primary"), opened(), policies, CHANNELS, night)
    assert got.sends == (Address("email", "c@x", "c"),)
    assert (
        got.note == "schedule:primary: nobody on call at 2027-01-04T19:00:00.000Z: paging its fallback user:c"
    )
    bare = plan(page("schedule:bare"), opened(), policies, CHANNELS, night)
    assert bare == Plan(
        unreachable="schedule:bare: nobody on call at 2027-01-04T19:00:00.000Z, and no fallback"
    )


def test_a_persons_rules_say_whom_to_reach_now_and_later() -> None:
    from engine.policy.targets import resolve_target

    rules = [
        {"after": "0s", "via": "email"},
        {"after": "10m", "via": "pagerduty:p"},
        {"after": "5m", "via": "slack"},
    ]
    users = {**POLICIES.users, "a": POLICIES.users["a"].model_validate({"email": "a@x", "notify": rules})}
    policies = POLICIES.model_copy(update={"users": users})
    found = resolve_target("user:a", policies, NOW)
    assert found.addresses == [Address("email", "a@x", "a")]
    assert found.later == [
        (600_000, Address("pagerduty", "p", "a"))
    ]  # no Slack address: that step reaches nothing
    got = plan(page("user:a"), opened(), policies, CHANNELS, NOW)
    assert got.sends == (Address("email", "a@x", "a"),) and got.later == (
        (600_000, Address("pagerduty", "p", "a")),
    )
    followup = page("user:a").followup_to(Address("pagerduty", "p"))
    acked = after(opened(), Acknowledge("bob"))
    assert plan(followup, acked, policies, CHANNELS, NOW).skipped  # acknowledged: later steps stop
