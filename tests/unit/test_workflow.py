"""Status updates, update_every reminders and reassignment in the state machine (pure)."""

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.escalation import decide
from engine.events import (
    Acknowledge,
    Action,
    AlertsReceived,
    Event,
    Notify,
    Reassign,
    Resolve,
    StatusUpdate,
    TimerFired,
)
from engine.incident import Incident, Status
from engine.manual import ManualIncident, routed_alert, target_problem
from engine.manual import problems as manual_problems
from engine.policy.models import PolicySet, Rule
from engine.timeline import EntryKind
from tests.unit.escalation_helpers import (
    CRIT,
    MIN,
    POLICIES,
    STD,
    T0,
    alert,
    mirrors,
    opened,
    pages,
    received,
    run,
)

EVERY = POLICIES.model_copy(
    update={
        "severities": {
            **POLICIES.severities,
            "P0": POLICIES.severities["P0"].model_copy(update={"update_every": 30 * MIN}),
        }
    }
)


def notes(d: object, kind: EntryKind) -> list[str]:
    return [e.text for e in d.effects if getattr(e, "kind", None) is kind]  # type: ignore[attr-defined]


def test_a_status_update_is_numbered_recorded_and_sent_to_everyone_paged() -> None:
    inc = opened()
    d = run(inc, StatusUpdate("alice", "identified", "Bad deploy rolled back"), T0 + 5 * MIN)
    assert d.incident is not None and d.incident.updates == [
        {
            "n": 1,
            "status": "identified",
            "text": "Bad deploy rolled back",
            "by": "alice",
            "at_ms": T0 + 5 * MIN,
        }
    ]
    assert notes(d, EntryKind.STATUS_UPDATE) == ["UPDATE #1 (identified): Bad deploy rolled back"]
    assert mirrors(d, Action.UPDATE) == [("user:a", "pagerduty:p")]
    again = run(d.incident, StatusUpdate("alice", "monitoring", "Error rate back to normal"), T0 + 9 * MIN)
    assert again.incident is not None and [u["n"] for u in again.incident.updates] == [1, 2]
    assert again.incident.status is Status.TRIGGERED  # an update is not an acknowledgement


def test_a_resolved_update_resolves_and_the_resolution_is_what_is_sent() -> None:
    d = run(opened(), StatusUpdate("alice", "resolved", "Fixed"), T0 + 20 * MIN)
    assert d.incident is not None and d.incident.status is Status.RESOLVED
    assert d.incident.resolved_by == "alice"
    assert mirrors(d, Action.UPDATE) == [] and mirrors(d, Action.RESOLVE) == [("user:a", "pagerduty:p")]
    assert notes(d, EntryKind.RESOLVED) == ["Resolved with UPDATE #1"]


def test_update_every_reminds_whoever_acknowledged_and_an_update_resets_the_clock() -> None:
    d = decide(None, _received(), T0, EVERY)
    inc = d.incident
    assert inc is not None and inc.update_due_ms == T0 + 30 * MIN
    inc = _step(decide(inc, Acknowledge("a"), T0 + 2 * MIN, EVERY))
    # the commander gets update_every from the acknowledgement; the ack timeout falls there too
    assert inc.update_due_ms == inc.timer_ms == T0 + 32 * MIN
    fired = decide(inc, TimerFired(T0 + 32 * MIN), T0 + 32 * MIN, EVERY)
    reminders = [e for e in fired.effects if isinstance(e, Notify) and e.action is Action.UPDATE]
    assert [(r.targets, r.note) for r in reminders] == [(("user:a",), "Status update due: opened 32m ago")]
    inc = _step(fired)
    assert inc.update_due_ms == T0 + 62 * MIN
    inc = _step(decide(inc, StatusUpdate("a", "identified", "found it"), T0 + 45 * MIN, EVERY))
    assert inc.update_due_ms == T0 + 75 * MIN
    assert _step(decide(inc, Resolve("a"), T0 + 50 * MIN, EVERY)).timer_ms is None


def test_without_update_every_no_reminder_is_due() -> None:
    inc = opened()
    assert inc.update_due_ms is None
    assert _step(run(inc, StatusUpdate("a", "identified", "x"), T0 + MIN)).update_due_ms is None


def test_reassign_pages_the_new_target_triggers_again_and_tells_the_old() -> None:
    inc = _step(run(opened(), Acknowledge("a"), T0 + 2 * MIN))
    d = run(inc, Reassign("a", "user:c", "handing over to the DB team"), T0 + 60 * MIN)
    got = _step(d)
    assert got.status is Status.TRIGGERED and got.acked_by is None and got.assignee == "user:c"
    assert pages(d) == [("user:c",)]
    told = [e for e in d.effects if isinstance(e, Notify) and e.action is Action.UPDATE]
    assert [(e.targets, e.note) for e in told] == [(("user:a", "pagerduty:p"), "Reassigned to user:c by a")]
    assert notes(d, EntryKind.REASSIGNED) == [
        "Reassigned to user:c (was user:a, pagerduty:p): handing over to the DB team"
    ]
    # the ladder resumes with its usual spacing from now: level 2 is 15m away, not overdue
    assert got.timer_ms == T0 + 75 * MIN
    again = run(got, Reassign("c", "user:b"), T0 + 61 * MIN)
    assert [e.targets for e in again.effects if isinstance(e, Notify) and e.action is Action.UPDATE] == [
        ("user:c",)
    ]


def test_targets_people_name_are_checked_against_the_policies() -> None:
    assert target_problem("user:a", POLICIES) is None
    assert target_problem("pagerduty:p", POLICIES) is None
    assert target_problem("user:nobody", POLICIES) == "no user 'nobody' in the policies"
    assert target_problem("bob", POLICIES) is not None and target_problem("sms:1", POLICIES) is not None


def test_a_manual_incident_is_routed_like_an_alert_unless_told_otherwise() -> None:
    report = ManualIncident(title="EU checkout fails", reporter="support", labels={"service": "checkout"})
    routed = routed_alert(report, POLICIES, "f" * 16, T0)
    assert (routed.route.severity, routed.route.policy, routed.route.rule) == ("P3", "std", "default")
    assert routed.alert.annotations == {"summary": "EU checkout fails", "reporter": "support"}
    told = ManualIncident(title="x", reporter="support", severity="P0", policy="crit")
    assert (routed_alert(told, POLICIES, "f" * 16, T0).route.policy, "manual") == ("crit", "manual")
    rule = Rule.model_validate(
        {"name": "pages", "matchers": ['severity="critical"'], "severity": "P0", "policy": "crit"}
    )
    ruled = POLICIES.model_copy(update={"rules": [rule]})
    p0 = routed_alert(ManualIncident(title="x", reporter="s", severity="P0"), ruled, "f" * 16, T0)
    assert (p0.route.severity, p0.route.policy) == ("P0", "crit")  # the ladder the rules use for P0
    bad = ManualIncident(title="x", reporter="s", severity="P9", policy="nope")
    assert [p.split(":")[0] for p in manual_problems(bad, POLICIES)] == ["severity", "policy"]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(1, 120),
            st.sampled_from(["update", "ack", "timer", "reassign"]),
        ),
        max_size=12,
    )
)
def test_a_due_reminder_is_always_on_the_timer_and_never_on_a_resolved_incident(
    steps: list[tuple[int, str]],
) -> None:
    inc: Incident | None = decide(None, _received(), T0, EVERY).incident
    now = T0
    for minutes, what in steps:
        assert inc is not None
        now += minutes * MIN
        if what == "timer" and inc.timer_ms is not None:
            now = max(now, inc.timer_ms)
            event: Event = TimerFired(inc.timer_ms)
        elif what == "ack":
            event = Acknowledge("a")
        elif what == "reassign":
            event = Reassign("a", "user:b")
        else:
            event = StatusUpdate("a", "monitoring", "still looking")
        d = decide(inc, event, now, EVERY)
        inc = d.incident or inc
        if inc.update_due_ms is not None and inc.status is Status.ACKNOWLEDGED:
            # the incident's one timer never sleeps past a due reminder
            assert inc.timer_ms is not None and inc.timer_ms <= inc.update_due_ms
    assert inc is not None
    assert _step(decide(inc, Resolve("a"), now + 1, EVERY)).update_due_ms is None


def _received() -> AlertsReceived:
    return received(alert(), route=CRIT)


def _step(d: object) -> Incident:
    inc = getattr(d, "incident", None)
    assert isinstance(inc, Incident)
    return inc


__all__ = ["STD", "PolicySet"]


def test_reassigning_a_triggered_incident_gives_the_new_target_the_levels_spacing() -> None:
    inc = opened()  # level 1 paged at T0, level 2 due at 15m
    got = _step(run(inc, Reassign("a", "user:c"), T0 + 14 * MIN + 50_000))
    assert got.timer_ms == T0 + 29 * MIN + 50_000  # not 10 s later, paging b over c's head


def test_a_late_update_notification_still_says_what_its_own_update_said() -> None:
    from engine.messages import build_message

    inc = _step(run(opened(), StatusUpdate("a", "investigating", "looking"), T0 + MIN))
    first = next(
        e
        for e in run(opened(), StatusUpdate("a", "investigating", "looking"), T0 + MIN).effects
        if isinstance(e, Notify) and e.action is Action.UPDATE
    )
    inc = _step(run(inc, StatusUpdate("a", "identified", "found it"), T0 + 2 * MIN))
    late = build_message(
        inc, Action.UPDATE, level=0, target="user:a", address="a@x", policies=POLICIES, update=first.update
    )
    assert first.update == 1 and late.status_update is not None and late.status_update["text"] == "looking"
    assert "UPDATE #1" in late.title and "looking" in late.body and "found it" not in late.body
