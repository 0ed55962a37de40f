"""The pure delivery plan: what an outbox message becomes against the incident as it is at send time."""

import dataclasses

import pytest

from engine.delivery.plan import Plan, plan
from engine.events import Acknowledge, Action, Resolve, Snooze
from engine.incident import Incident
from engine.outbox import OutboxMessage
from engine.policy.targets import Address
from tests.unit.escalation_helpers import MIN, POLICIES, STD, T0, opened, run

CHANNELS = ("email", "pagerduty")


def page(target: str, action: Action = Action.TRIGGER) -> OutboxMessage:
    return OutboxMessage("0-new", action, target, 0, T0)


def after(inc: Incident, event: Acknowledge | Resolve | Snooze) -> Incident:
    d = run(inc, event, T0 + MIN)
    assert d.incident is not None
    return d.incident


def test_a_page_reaches_every_address_of_its_target() -> None:
    inc = opened()
    assert plan(page("user:a"), inc, POLICIES, CHANNELS) == Plan(sends=(Address("email", "a@x"),))
    assert plan(page("pagerduty:p"), inc, POLICIES, CHANNELS).sends == (Address("pagerduty", "p"),)


def test_a_person_is_reached_only_on_channels_the_engine_has() -> None:
    p = POLICIES
    users = {**p.users, "a": p.users["a"].model_copy(update={"slack": "U1"})}
    policies = p.model_copy(update={"users": users})
    assert plan(page("user:a"), opened(), policies, CHANNELS).sends == (Address("email", "a@x"),)
    assert plan(page("user:a"), opened(), policies, ("slack",)).sends == (Address("slack", "U1"),)
    # a channel target is sent (and fails, naming the channel) even when the channel is missing
    assert plan(page("slack:#ops"), opened(), policies, CHANNELS).sends == (Address("slack", "#ops"),)


@pytest.mark.parametrize(
    ("target", "why"),
    [
        ("user:nobody", "user:nobody: no such user"),
        ("schedule:primary", "schedule:primary: schedule targets cannot be delivered by this release yet"),
    ],
)
def test_a_target_that_reaches_nobody_says_why(target: str, why: str) -> None:
    assert plan(page(target), opened(), POLICIES, CHANNELS) == Plan(unreachable=why)


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
    assert plan(page("user:a", action), after(opened(), event), POLICIES, CHANNELS) == Plan(skipped=why)


def test_under_until_resolved_an_ack_does_not_stop_a_page() -> None:
    inc = after(opened(STD), Acknowledge("bob"))
    assert plan(page("user:b"), inc, POLICIES, CHANNELS).sends == (Address("email", "b@x"),)


def test_a_retry_goes_to_the_one_address_that_failed() -> None:
    retry = dataclasses.replace(page("user:a"), address=Address("email", "old@x"), attempt=3)
    assert plan(retry, opened(), POLICIES, CHANNELS) == Plan(sends=(Address("email", "old@x"),))
