"""Table tests of the state machine, one per rule of PRODUCT.md "Incident semantics"."""

from dataclasses import replace

from engine.events import (
    Acknowledge,
    Action,
    CancelTimer,
    Escalate,
    Resolve,
    SetTimer,
    Snooze,
    TimerFired,
    Unacknowledge,
)
from engine.incident import Incident, Status
from tests.unit.escalation_helpers import (
    MIN,
    STD,
    T0,
    alert,
    mirrors,
    opened,
    pages,
    received,
    run,
)


def test_firing_opens_an_incident_and_pages_level_one_at_once() -> None:
    d = run(None, received(alert()), T0)
    assert d.opened and d.changed
    inc = d.incident
    assert inc is not None
    assert (inc.id, inc.status, inc.severity, inc.policy) == ("0-new", Status.TRIGGERED, "P0", "crit")
    assert pages(d) == [("user:a", "pagerduty:p")]
    assert inc.timer_ms == T0 + 15 * MIN
    assert SetTimer(T0 + 15 * MIN) in d.effects
    assert inc.title == "Down checkout: it broke"


def test_duplicate_firing_changes_nothing_but_a_counter() -> None:
    inc = opened()
    d = run(inc, received(alert()), T0 + MIN)
    assert pages(d) == []
    assert d.duplicates == 1
    assert d.incident is not None and d.incident.duplicates == 1
    assert d.incident.timer_ms == inc.timer_ms and d.incident.status is Status.TRIGGERED


def test_an_alert_joining_an_open_incident_does_not_repage() -> None:
    inc = opened()
    d = run(inc, received(alert("bbbbbbbbbbbbbbb2")), T0 + MIN)
    assert pages(d) == [] and d.changed
    assert d.incident is not None and set(d.incident.alerts) == {"aaaaaaaaaaaaaaa1", "bbbbbbbbbbbbbbb2"}


def test_level_two_fires_at_its_deadline() -> None:
    inc = opened()
    d = run(inc, TimerFired(T0 + 15 * MIN), T0 + 15 * MIN)
    assert pages(d) == [("user:b",)]
    assert d.incident is not None and d.incident.timer_ms == T0 + 30 * MIN


def test_deadlines_are_absolute_so_lateness_does_not_accumulate() -> None:
    inc = opened()
    d = run(inc, TimerFired(T0 + 15 * MIN), T0 + 20 * MIN)  # five minutes late
    assert d.incident is not None and d.incident.timer_ms == T0 + 30 * MIN


def test_after_downtime_every_overdue_level_fires_once() -> None:
    inc = opened()
    d = run(inc, TimerFired(T0 + 15 * MIN), T0 + 31 * MIN)
    assert pages(d) == [("user:b",), ("user:c",)]
    # then the repeat: last level at 30m + repeat_after 15m = 45m for level 1 again
    assert d.incident is not None and d.incident.timer_ms == T0 + 45 * MIN


def test_repeat_runs_the_ladder_again_then_stops() -> None:
    inc: Incident | None = opened()
    seen = []
    for due_min in (15, 30, 45, 60, 75):
        assert inc is not None and inc.timer_ms == T0 + due_min * MIN
        d = run(inc, TimerFired(inc.timer_ms), inc.timer_ms)
        seen += pages(d)
        inc = d.incident
    assert seen == [("user:b",), ("user:c",), ("user:a", "pagerduty:p"), ("user:b",), ("user:c",)]
    assert inc is not None
    assert inc.timer_ms is None
    assert CancelTimer() in d.effects


def test_catching_up_pages_each_overdue_level_once_not_once_per_missed_repeat() -> None:
    d = run(opened(), TimerFired(T0 + 15 * MIN), T0 + 100 * MIN)
    assert pages(d) == [("user:a", "pagerduty:p"), ("user:b",), ("user:c",)]
    assert d.incident is not None and d.incident.timer_ms is None


def test_a_stale_or_early_timer_changes_nothing() -> None:
    inc = opened()
    assert not run(inc, TimerFired(T0), T0 + 15 * MIN).changed
    assert not run(inc, TimerFired(T0 + 15 * MIN), T0 + 14 * MIN).changed


def test_ack_under_until_acknowledged_cancels_the_ladder_and_sets_the_ack_timeout() -> None:
    inc = opened()
    d = run(inc, Acknowledge("alice"), T0 + 5 * MIN)
    assert d.incident is not None
    assert d.incident.status is Status.ACKNOWLEDGED and d.incident.acked_by == "alice"
    assert d.incident.timer_ms == T0 + 35 * MIN  # ack + 30m, not the 15m level
    assert mirrors(d, Action.ACKNOWLEDGE) == [("user:a", "pagerduty:p")]
    assert pages(d) == []


def test_a_second_ack_is_not_applied_twice() -> None:
    inc = run(opened(), Acknowledge("alice"), T0 + MIN).incident
    d = run(inc, Acknowledge("bob"), T0 + 2 * MIN)
    assert not d.changed and d.incident is not None and d.incident.acked_by == "alice"


def test_ack_timeout_triggers_again_and_pages_the_last_level_paged() -> None:
    inc = run(opened(), Acknowledge("alice"), T0 + 5 * MIN).incident
    d = run(inc, TimerFired(T0 + 35 * MIN), T0 + 35 * MIN)
    assert d.incident is not None and d.incident.status is Status.TRIGGERED
    assert pages(d) == [("user:a", "pagerduty:p")]
    assert d.incident.timer_ms == T0 + 50 * MIN  # level 2 is 15m after the re-trigger


def test_ack_under_until_resolved_keeps_climbing_without_repeats() -> None:
    inc = opened(route=STD)
    d = run(inc, Acknowledge("alice"), T0 + MIN)
    assert d.incident is not None and d.incident.timer_ms == T0 + 30 * MIN
    d = run(d.incident, TimerFired(T0 + 30 * MIN), T0 + 30 * MIN)
    assert pages(d) == [("user:b",)]
    assert d.incident is not None and d.incident.status is Status.ACKNOWLEDGED
    assert d.incident.timer_ms is None


def test_resolve_beats_ack_and_a_resolved_incident_ignores_everything() -> None:
    inc = opened()
    d = run(inc, Resolve("alice"), T0 + MIN)
    resolved = d.incident
    assert resolved is not None and resolved.status is Status.RESOLVED and resolved.timer_ms is None
    assert mirrors(d, Action.RESOLVE) == [("user:a", "pagerduty:p")]
    for event in (Acknowledge("bob"), Escalate("bob"), Unacknowledge("bob"), TimerFired(T0 + 15 * MIN)):
        after = run(resolved, event, T0 + 20 * MIN)
        assert not after.changed and pages(after) == []


def test_partial_resolution_keeps_the_incident_open_until_every_alert_resolves() -> None:
    inc = run(None, received(alert("aaaaaaaaaaaaaaa1"), alert("bbbbbbbbbbbbbbb2")), T0).incident
    d = run(inc, received(alert("aaaaaaaaaaaaaaa1", "resolved")), T0 + MIN)
    assert d.incident is not None and d.incident.status is Status.TRIGGERED
    assert d.incident.alerts["aaaaaaaaaaaaaaa1"].status == "resolved"
    d = run(d.incident, received(alert("bbbbbbbbbbbbbbb2", "resolved")), T0 + 2 * MIN)
    assert d.incident is not None and d.incident.status is Status.RESOLVED
    assert d.incident.resolved_by == "alertmanager"
    assert mirrors(d, Action.RESOLVE) == [("user:a", "pagerduty:p")]


def test_a_new_firing_after_resolution_opens_a_new_incident() -> None:
    resolved = run(opened(), received(alert(status="resolved")), T0 + MIN).incident
    d = run(resolved, received(alert(starts=T0 + 10 * MIN), new_id="0-second"), T0 + 10 * MIN)
    assert d.opened and d.incident is not None and d.incident.id == "0-second"
    assert pages(d) == [("user:a", "pagerduty:p")]


def test_a_resolve_with_an_earlier_merged_starts_at_still_resolves() -> None:
    # Alertmanager keeps the earliest startsAt when it merges duplicates (e.g. a Prometheus HA pair)
    inc = run(None, received(alert(starts=T0 + MIN)), T0 + MIN).incident
    assert run(inc, received(alert(starts=T0)), T0 + 2 * MIN).duplicates == 1
    resolved = alert(status="resolved", starts=T0)
    resolved = replace(resolved, ends_at_ms=T0 + 3 * MIN)
    d = run(inc, received(resolved), T0 + 3 * MIN)
    assert d.incident is not None and d.incident.status is Status.RESOLVED


def test_a_late_firing_copy_after_resolve_is_a_duplicate() -> None:
    two = run(None, received(alert("aaaaaaaaaaaaaaa1"), alert("bbbbbbbbbbbbbbb2")), T0).incident
    inc = run(two, received(alert("aaaaaaaaaaaaaaa1", "resolved")), T0 + MIN).incident
    d = run(inc, received(alert("aaaaaaaaaaaaaaa1")), T0 + 2 * MIN)  # the other HA replica, late
    assert d.duplicates == 1
    assert d.incident is not None and d.incident.alerts["aaaaaaaaaaaaaaa1"].status == "resolved"


def test_a_stale_resolve_of_an_older_occurrence_is_ignored() -> None:
    inc = run(None, received(alert(starts=T0 + 60 * MIN)), T0 + 60 * MIN).incident
    old = replace(alert(status="resolved", starts=T0), ends_at_ms=T0 + 5 * MIN)
    d = run(inc, received(old), T0 + 61 * MIN)
    assert d.duplicates == 1 and d.incident is not None and d.incident.status is Status.TRIGGERED


def test_a_severity_no_longer_defined_ranks_lowest_instead_of_crashing() -> None:
    inc = opened()
    inc.severity = "renamed-away"
    d = run(inc, received(alert("bbbbbbbbbbbbbbb2")), T0 + MIN)  # P0 is higher than an unknown name
    assert d.incident is not None and d.incident.severity == "P0"


def test_a_repeat_of_the_resolved_occurrence_does_not_reopen() -> None:
    resolved = run(opened(), Resolve("alice"), T0 + MIN).incident  # by hand; the alert still fires
    d = run(resolved, received(alert()), T0 + 5 * MIN)
    assert not d.opened and not d.changed and d.duplicates == 1


def test_severity_rise_repages_under_the_higher_policy() -> None:
    inc = opened(route=STD)
    d = run(inc, received(alert("bbbbbbbbbbbbbbb2")), T0 + 10 * MIN)  # CRIT route: P0
    assert d.incident is not None
    assert (d.incident.severity, d.incident.policy) == ("P0", "crit")
    assert pages(d) == [("user:a", "pagerduty:p")]
    assert d.incident.timer_ms == T0 + 25 * MIN
    assert any(getattr(e, "kind", "") == "severity_raised" for e in d.effects)


def test_severity_fall_never_deescalates() -> None:
    inc = opened()
    d = run(inc, received(alert("bbbbbbbbbbbbbbb2"), route=STD), T0 + MIN)
    assert d.incident is not None and d.incident.severity == "P0" and pages(d) == []


def test_snooze_pauses_then_pages_again_when_over() -> None:
    inc = opened()
    d = run(inc, Snooze("alice", 60 * MIN), T0 + MIN)
    assert d.incident is not None and d.incident.status is Status.SNOOZED
    assert d.incident.timer_ms == T0 + 61 * MIN  # not the 15m level
    d = run(d.incident, TimerFired(T0 + 61 * MIN), T0 + 61 * MIN)
    assert d.incident is not None and d.incident.status is Status.TRIGGERED
    assert pages(d) == [("user:a", "pagerduty:p")]


def test_escalate_now_pages_the_next_level_and_keeps_the_spacing() -> None:
    inc = opened()
    d = run(inc, Escalate("alice"), T0 + 2 * MIN)
    assert pages(d) == [("user:b",)]
    assert d.incident is not None and d.incident.timer_ms == T0 + 17 * MIN


def test_unack_triggers_again() -> None:
    inc = run(opened(), Acknowledge("alice"), T0 + MIN).incident
    d = run(inc, Unacknowledge("alice"), T0 + 2 * MIN)
    assert d.incident is not None and d.incident.status is Status.TRIGGERED
    assert pages(d) == [("user:a", "pagerduty:p")]
    assert not run(opened(), Unacknowledge("x"), T0).changed  # nothing to withdraw


def test_incident_round_trips_through_json() -> None:
    """The record and each alert are stored apart: both halves read back to the same incident."""
    inc = run(opened(), Acknowledge("alice"), T0 + MIN).incident
    assert inc is not None
    from engine.incident import AlertState, Incident

    alerts = {fp: AlertState.from_json(fp, a.to_json()) for fp, a in inc.alerts.items()}
    back = Incident.from_json(inc.to_json(), alerts)
    assert back == inc
    assert back.firing_by == {("P0", "crit", "crit-rule"): 1} and back.alert_total == 1


def test_a_record_with_its_alerts_inline_reads_whole_and_is_marked_for_rewrite() -> None:
    """Records written before per-alert fields hold their alerts inside: read them all."""
    import json

    inc = run(opened(), Acknowledge("alice"), T0 + MIN).incident
    assert inc is not None
    from engine.incident import Incident

    old = json.loads(inc.to_json())
    del old["firing_by"], old["alert_total"]
    old["alerts"] = {fp: {**json.loads(a.to_json()), "fingerprint": fp} for fp, a in inc.alerts.items()}
    back = Incident.from_json(json.dumps(old))
    assert back.alerts == inc.alerts and back.alerts_inline
    assert back.firing_count() == 1 and back.alert_total == 1
