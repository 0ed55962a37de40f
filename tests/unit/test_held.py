"""The duplicate fast path's hint: occurrences applied to an open incident, the oldest forgotten
first once the limit is reached."""

from engine.events import RoutedAlert
from engine.repeats import Held
from tests.unit.escalation_helpers import CRIT, T0, alert, received, run


def test_past_the_limit_the_oldest_occurrences_are_forgotten_first() -> None:
    held = Held(limit=3)
    fps = [f"aaaaaaaaaaaaaa{i:02x}" for i in range(6)]
    d = run(None, received(*(alert(fp) for fp in fps)), T0)
    occurrences = []
    for fp in fps:  # one webhook per alert, oldest first
        routed = [RoutedAlert(alert(fp), CRIT)]
        occ = Held.occurrences("k", routed)
        held.saw(occ, routed, d.incident)
        occurrences.append(occ)
    assert [held.all_held(o) for o in occurrences] == [False, False, False, True, True, True]
    held.forget(occurrences[4])
    assert [held.all_held(o) for o in occurrences[3:]] == [True, False, True]


def test_an_alert_the_incident_holds_with_another_status_is_not_held() -> None:
    held = Held()
    d = run(None, received(alert()), T0)
    routed = [RoutedAlert(alert(status="resolved"), CRIT)]
    occ = Held.occurrences("k", routed)
    held.saw(occ, routed, d.incident)
    assert not held.all_held(occ)
