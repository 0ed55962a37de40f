"""Hypothesis: invariants of the state machine over random event sequences."""

from collections.abc import Callable

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.escalation import next_timer, policy_of
from engine.events import (
    Acknowledge,
    Action,
    Decision,
    Escalate,
    Event,
    Notify,
    Resolve,
    Snooze,
    TimerFired,
    Unacknowledge,
)
from engine.incident import Incident, Status
from tests.unit.escalation_helpers import CRIT, MIN, POLICIES, STD, T0, alert, received, run

FPS = ["aaaaaaaaaaaaaaa1", "bbbbbbbbbbbbbbb2", "ccccccccccccccc3"]

step = st.one_of(
    st.tuples(
        st.just("alert"),
        st.sampled_from(FPS),
        st.sampled_from(["firing", "resolved"]),
        st.integers(0, 3),  # which occurrence (startsAt)
        st.sampled_from([CRIT, STD]),
    ),
    st.tuples(st.just("ack")),
    st.tuples(st.just("unack")),
    st.tuples(st.just("resolve")),
    st.tuples(st.just("escalate")),
    st.tuples(st.just("snooze"), st.integers(1, 90)),
    st.tuples(st.just("timer"), st.integers(0, 20)),  # fire the pending timer, up to 20 minutes late
    st.tuples(st.just("wait"), st.integers(0, 40)),
)


def _event(s: tuple[object, ...], inc: Incident | None, now: int, n: int) -> tuple[Event, int] | None:
    kind = s[0]
    if kind == "alert":
        _, fp, status, occ, route = s
        a = alert(str(fp), str(status), starts=T0 + int(occ) * 60 * MIN)  # type: ignore[call-overload]
        return received(a, route=route, new_id=f"0-{n}"), now  # type: ignore[arg-type]
    if kind == "timer":
        if inc is None or inc.timer_ms is None:
            return None
        return TimerFired(inc.timer_ms), max(now, inc.timer_ms + int(s[1]) * MIN)  # type: ignore[call-overload]
    if kind == "wait":
        return None
    simple: dict[str, Callable[[str], Event]] = {
        "ack": Acknowledge,
        "unack": Unacknowledge,
        "resolve": Resolve,
        "escalate": Escalate,
    }
    if kind in simple:
        event: Event = simple[str(kind)]("someone")
        return event, now
    return Snooze("someone", int(s[1]) * MIN), now  # type: ignore[call-overload]


def _check(before: Incident | None, event: Event, d: Decision, now: int) -> None:
    inc = d.incident
    triggers = [e for e in d.effects if isinstance(e, Notify) and e.action is Action.TRIGGER]
    # no page for a resolved incident, unless the event opened a new one
    if before is not None and before.status is Status.RESOLVED and not d.opened:
        assert not d.changed and not triggers
    if inc is None:
        return
    if inc.status is Status.RESOLVED:
        assert inc.timer_ms is None
        assert not triggers or (d.opened is False and isinstance(event, type(event)))
        return
    policy = policy_of(inc, POLICIES)
    # the one pending timer is exactly the earliest pending deadline, and it lies in the future
    assert inc.timer_ms == next_timer(inc, policy)
    if inc.timer_ms is not None and (isinstance(event, TimerFired) or before is None or d.opened):
        assert inc.timer_ms > now  # a fired timer leaves nothing overdue behind it
    # every open, unacknowledged incident with ladder steps left has a timer
    if inc.status is Status.TRIGGERED and inc.step < policy.step_count():
        assert inc.timer_ms is not None
    # no level fires before its deadline: each step paged so far had its deadline passed
    if inc.step > 0:
        assert inc.anchor_ms + policy.step_offset_ms(inc.step - 1) <= now
    # an acknowledged incident under `until: acknowledged` never escalates on a timer before the ack timeout
    if (
        before is not None
        and before.status is Status.ACKNOWLEDGED
        and isinstance(event, TimerFired)
        and policy_of(before, POLICIES).until == "acknowledged"
    ):
        assert before.ack_deadline_ms is not None and now >= before.ack_deadline_ms


@settings(max_examples=400, deadline=None)
@given(st.lists(step, min_size=1, max_size=30))
def test_invariants_hold_over_any_event_sequence(steps: list[tuple[object, ...]]) -> None:
    inc: Incident | None = None
    now = T0
    for n, s in enumerate(steps):
        if s[0] == "wait":
            now += int(s[1]) * MIN  # type: ignore[call-overload]
            continue
        made = _event(s, inc, now, n)
        if made is None:
            continue
        event, now = made
        d = run(inc, event, now)
        _check(inc, event, d, now)
        if d.changed:
            assert d.incident is not None
            if inc is not None and not d.opened:
                assert d.incident.id == inc.id
            inc = d.incident
        now += MIN


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 200), st.integers(0, 30))
def test_a_late_timer_never_shifts_later_deadlines(late_min: int, ack_at: int) -> None:
    inc = run(None, received(alert()), T0).incident
    assert inc is not None
    d = run(inc, TimerFired(T0 + 15 * MIN), T0 + 15 * MIN + late_min * MIN)
    assert d.incident is not None
    policy = policy_of(d.incident, POLICIES)
    if d.incident.timer_ms is not None:
        # the next deadline is an absolute offset from the trigger time, whatever the lateness
        assert (d.incident.timer_ms - T0) in {policy.step_offset_ms(k) for k in range(policy.step_count())}
