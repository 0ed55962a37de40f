"""Failover order: a person's next contact method after the one that failed, never one the same
page already reached, only on configured channels whose breaker is not open; a chain ends."""

from hypothesis import given
from hypothesis import strategies as st

from engine.delivery.breaker import Breaker, State
from engine.delivery.failover import next_contact
from engine.delivery.ratelimit import RateLimits
from engine.policy.models import PolicySet
from engine.policy.targets import Address
from tests.unit.escalation_helpers import POLICIES

ALL = ("slack", "telegram", "email", "pagerduty")


def policies_with(**alice: object) -> PolicySet:
    users = {**POLICIES.users, "alice": POLICIES.users["a"].model_validate(alice)}
    return POLICIES.model_copy(update={"users": users})


def test_slack_fails_over_to_telegram_then_email_then_pagerduty() -> None:
    rules = [{"after": "0s", "via": "slack"}]
    p = policies_with(slack="U1", telegram="42", email="a@x", pagerduty="platform", notify=rules)
    slack = Address("slack", "U1", "alice")
    assert next_contact(slack, p, ALL) == Address("telegram", "42", "alice")
    assert next_contact(Address("telegram", "42", "alice"), p, ALL) == Address("email", "a@x", "alice")
    assert next_contact(Address("email", "a@x", "alice"), p, ALL) == Address("pagerduty", "platform", "alice")
    assert next_contact(Address("pagerduty", "platform", "alice"), p, ALL) is None
    # only configured channels, and not one whose breaker is open
    assert next_contact(slack, p, ("slack", "email")) == Address("email", "a@x", "alice")

    def not_telegram(a: Address) -> bool:
        return a.channel != "telegram"

    assert next_contact(slack, p, ALL, not_telegram) == Address("email", "a@x", "alice")


def test_no_failover_to_a_method_the_page_already_reached_or_for_a_channel_target() -> None:
    p = policies_with(slack="U1", email="a@x")  # no rules: every contact at once
    assert next_contact(Address("slack", "U1", "alice"), p, ALL) is None
    assert next_contact(Address("slack", "#ops", ""), p, ALL) is None
    assert next_contact(Address("slack", "U1", "nobody"), p, ALL) is None


def state(b: Breaker) -> State:
    return b.state  # read through a call: each step changes it, which mypy cannot follow


def test_the_breaker_opens_after_failures_probes_once_and_closes_on_success() -> None:
    b = Breaker(failures_to_open=3, open_s=30)
    for t in range(3):
        assert b.allow(t)
        b.record(False, t)
    assert state(b) is State.OPEN and not b.allow(10) and b.retry_in_s(10) == 22
    assert b.allow(32) and state(b) is State.HALF_OPEN  # one probe
    assert not b.allow(32.5)  # while it is out, nothing else
    assert b.record(False, 33) and state(b) is State.OPEN  # the probe failed: open again
    assert b.allow(63) and b.record(True, 63.5) and state(b) is State.CLOSED
    assert b.allow(64)


def test_a_success_resets_the_count_of_failures() -> None:
    b = Breaker(failures_to_open=2, open_s=30)
    b.record(False, 0)
    b.record(True, 1)
    b.record(False, 2)
    assert state(b) is State.CLOSED


def test_rate_limits_reserve_turns_and_a_retry_after_pauses_the_endpoint() -> None:
    limits = RateLimits({"slack": (1.0, 2.0)})
    assert limits.wait_s("slack", "#ops", 0) == 0 and limits.wait_s("slack", "#ops", 0) == 0
    assert limits.wait_s("slack", "#ops", 0) == 1.0  # the burst is spent: its turn is in 1 s
    assert limits.wait_s("slack", "#ops", 0) == 2.0  # and the next one's after it
    assert limits.wait_s("slack", "#ops", 0, max_wait_s=1.5) == 3.0  # too far: nothing reserved
    assert limits.wait_s("slack", "#ops", 2, max_wait_s=1.5) == 1.0  # the two reserved went by
    assert limits.wait_s("slack", "#dev", 1) == 0  # per channel
    limits.pause("slack", "#dev", 30, now=1)
    assert limits.wait_s("slack", "#dev", 2) == 29
    assert limits.wait_s("email", "smtp", 2) == 0  # no documented rate: never held
    limits.pause("email", "smtp", 5, now=2)
    assert limits.wait_s("email", "smtp", 3) == 4


def test_an_urgent_send_takes_the_next_turn_ahead_of_a_reserved_backlog() -> None:
    limits = RateLimits({"slack": (1.0, 2.0)})
    waits = [limits.wait_s("slack", "#ops", 0) for _ in range(30)]  # a storm's posts to #ops
    assert waits[-1] == 28.0  # the last of them goes in 28 s
    assert limits.wait_s("slack", "#ops", 0, urgent=True) == 1.0  # a P0's: the next turn, not 29 s
    assert limits.wait_s("slack", "#ops", 0) == 30.0  # the backlog's next ask moved back by one
    assert limits.wait_s("slack", "#ops", 0, urgent=True) == 2.0  # urgent ones a turn apart
    limits.pause("slack", "#ops", 60, now=0)
    assert limits.wait_s("slack", "#ops", 1, urgent=True) == 59  # a provider's pause holds it too
    fresh = RateLimits({"slack": (1.0, 2.0)})
    assert fresh.wait_s("slack", "#ops", 0, urgent=True) == 0  # the burst still there: at once


@given(st.integers(0, 80), st.integers(1, 12), st.floats(0.5, 10), st.floats(1, 5))
def test_k_urgent_sends_wait_k_turns_at_most_whatever_the_backlog(
    backlog: int, k: int, rate: float, burst: float
) -> None:
    limits = RateLimits({"slack": (rate, burst)})
    for _ in range(backlog):
        limits.wait_s("slack", "#ops", 0)
    waits = [limits.wait_s("slack", "#ops", 0, urgent=True) for _ in range(k)]
    for i, wait in enumerate(waits):
        assert wait <= (i + 1) / rate + 1e-9  # never behind the backlog
        if i and waits[i - 1] > 0:
            assert wait - waits[i - 1] >= 1 / rate - 1e-9  # and spaced at the rate: no 429


def test_a_probe_that_never_reports_is_replaced_after_the_open_time() -> None:
    b = Breaker(failures_to_open=1, open_s=30)
    b.record(False, 0)
    assert b.allow(30)  # the probe goes out, and is parked or crashes: no outcome recorded
    assert not b.allow(40) and b.retry_in_s(40) == 20
    assert b.allow(60)  # a new probe: the breaker is not stuck half-open


def test_a_send_parked_for_its_reserved_turn_keeps_that_only_until_it_goes_on() -> None:
    from engine.events import Action
    from engine.outbox import OutboxMessage
    from engine.policy.targets import Address

    msg = OutboxMessage("0-x", Action.TRIGGER, "slack:#ops", 0, 1, Address("slack", "#ops")).in_turn()
    assert OutboxMessage.from_json(msg.to_json()).paced  # it survives the parked set
    assert not msg.retry(Address("slack", "#ops")).paced and not msg.again().paced  # a retry asks again
    assert not OutboxMessage.from_json(msg.again().to_json()).paced
    limits = RateLimits({"slack": (1.0, 1.0)})
    limits.pause("slack", "#ops", 30, now=0)
    assert limits.paused("slack", "#ops", 1) and not limits.paused("slack", "#ops", 31)
