"""A webhook's alerts on the timeline: named one by one up to ALERT_NOTES per kind, one entry
that counts them past it; nothing else in the decision moves."""

import re

from hypothesis import given
from hypothesis import strategies as st

from engine.events import (
    ALERT_NOTES,
    CancelTimer,
    Effect,
    Note,
    SetTimer,
    alert_note,
    coalesce_alert_notes,
)
from engine.timeline import EntryKind as K
from tests.unit.escalation_helpers import T0, alert, received, run

PER_ALERT = [K.ALERT_JOINED, K.ALERT_RESOLVED, K.ALERT_REFIRED]
other = st.sampled_from([SetTimer(5), CancelTimer(), Note(K.PAGED, "Paged user:a (level 1)")])
per_alert = st.builds(
    lambda kind, n: alert_note(kind, "HostDown", f"{n:04x}", "alertmanager"),
    st.sampled_from(PER_ALERT),
    st.integers(0, 9999),
)


@given(st.lists(st.one_of(other, per_alert), max_size=40))
def test_past_the_limit_a_kind_is_one_entry_that_counts_them_and_nothing_else_moves(
    effects: list[Effect],
) -> None:
    out = coalesce_alert_notes(list(effects))

    def notes(xs: list[Effect], kind: K) -> list[Note]:
        return [e for e in xs if isinstance(e, Note) and e.kind == kind]

    collapsed = {kind for kind in PER_ALERT if len(notes(effects, kind)) > ALERT_NOTES}
    expected: list[object] = []  # in order: the rest as they were, one summary where its kind began
    for e in effects:
        if not (isinstance(e, Note) and e.kind in collapsed):
            expected.append(e)
        elif ("summary", e.kind) not in expected:
            expected.append(("summary", e.kind))
    shape = [("summary", e.kind) if isinstance(e, Note) and e.kind in collapsed else e for e in out]
    assert shape == expected
    for kind in collapsed:
        [one] = notes(out, kind)
        counted = re.match(r"(\d+) alerts ", one.text)
        assert counted is not None and int(counted[1]) == len(notes(effects, kind))
        assert one.text.endswith(f" and {len(notes(effects, kind)) - 3} more")


def test_a_fleet_joining_is_one_timeline_entry() -> None:
    first = run(None, received(alert("f000")), T0)
    assert first.incident is not None
    fleet = [alert(f"f{n:03d}") for n in range(1, 201)]

    d = run(first.incident, received(*fleet), T0 + 60_000)

    joined = [e for e in d.effects if isinstance(e, Note) and e.kind is K.ALERT_JOINED]
    assert [n.text for n in joined] == [
        "200 alerts joined, firing: Down (f001), Down (f002), Down (f003) and 197 more"
    ]
    few = run(d.incident, received(*[alert(f"g{n:03d}") for n in range(ALERT_NOTES)]), T0 + 120_000)
    assert [n.text for n in few.effects if isinstance(n, Note) and n.kind is K.ALERT_JOINED] == [
        f"Down (g{n:03d}) joined, firing" for n in range(ALERT_NOTES)
    ]
