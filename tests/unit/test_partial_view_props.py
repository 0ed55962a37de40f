"""Hypothesis: deciding on the view the store reads for a webhook (the record, its aggregate and
only the alerts the webhook names) gives the same decisions as deciding on the whole incident,
and the fields written back rebuild the whole incident exactly."""

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.alerts import AlertStatus
from engine.events import Acknowledge, AlertsReceived, Decision, Event, Resolve, TimerFired
from engine.incident import AlertState, Incident
from engine.store.redis import ALERT, changed_alerts
from tests.unit.escalation_helpers import CRIT, MIN, POLICIES, STD, T0, alert, received, run

FPS = [f"{c * 15}{n}" for n, c in enumerate("abcdef")]

one_alert = st.tuples(
    st.sampled_from(FPS),
    st.sampled_from(["firing", "resolved"]),
    st.integers(0, 3),  # which occurrence (startsAt)
    st.sampled_from([CRIT, STD]),
)
step = st.one_of(
    st.tuples(st.just("alerts"), st.lists(one_alert, min_size=1, max_size=4)),
    st.tuples(st.just("ack")),
    st.tuples(st.just("resolve")),
    st.tuples(st.just("timer")),
)

Stored = dict[str, bytes]


def store(stored: Stored, previous: Incident | None, d: Decision) -> None:
    """What commit.lua does with the hash: the record, and the changed alerts' fields."""
    assert d.incident is not None
    if d.opened:
        stored.clear()  # a new incident gets a hash of its own
    stored["d"] = d.incident.to_json()
    pairs = changed_alerts(previous, d)
    for name, value in zip(pairs[0::2], pairs[1::2], strict=True):
        assert isinstance(name, str) and isinstance(value, bytes)
        stored[name] = value


def read(stored: Stored, fingerprints: list[str] | None) -> Incident | None:
    """load_by_key (the named alerts) or load (fingerprints None: all of them), as read.lua does."""
    if "d" not in stored:
        return None
    names = [n for n in stored if n.startswith(ALERT)]
    wanted = names if fingerprints is None else [ALERT + fp for fp in fingerprints if ALERT + fp in stored]
    if len(names) == 1:  # read.lua: an incident of one alert comes with it, named or not
        wanted = names
    alerts = {n[len(ALERT) :]: AlertState.from_json(n[len(ALERT) :], stored[n]) for n in wanted}
    return Incident.from_json(stored["d"], alerts)


def recount(inc: Incident) -> dict[tuple[str, str, str], int]:
    counts: dict[tuple[str, str, str], int] = {}
    for a in inc.alerts.values():
        if a.status is AlertStatus.FIRING:
            counts[a.firing_key] = counts.get(a.firing_key, 0) + 1
    return counts


def labels_of(fp: str) -> dict[str, str]:
    """Labels that differ between alerts: what all of them share depends on which joined."""
    n = FPS.index(fp)
    return {
        "alertname": "Down",
        "service": "checkout" if n % 2 else "payments",
        "zone": "a" * (n // 3),
        "fp": fp,
    }


def event_of(s: tuple[object, ...], whole: Incident | None, n: int) -> tuple[Event, list[str]] | None:
    if s[0] == "alerts":
        batch = [
            replace(alert(str(fp), str(status), starts=T0 + int(occ) * 60 * MIN), labels=labels_of(str(fp)))
            for fp, status, occ, _ in s[1]  # type: ignore[attr-defined]
        ]
        route = s[1][0][3]  # type: ignore[index]
        ev: AlertsReceived = received(*batch, route=route, new_id=f"0-{n}")
        return ev, [a.fingerprint for a in batch]
    if whole is None:
        return None
    if s[0] == "timer":
        return (TimerFired(whole.timer_ms), []) if whole.timer_ms is not None else None
    return (Acknowledge("someone") if s[0] == "ack" else Resolve("someone")), []


@settings(max_examples=300, deadline=None)
@given(st.lists(step, min_size=1, max_size=25))
def test_the_partial_view_decides_as_the_whole_incident(steps: list[tuple[object, ...]]) -> None:
    stored: Stored = {}
    now = T0
    for n, s in enumerate(steps):
        whole = read(stored, None)
        made = event_of(s, whole, n)
        if made is None:
            continue
        event, fps = made
        if isinstance(event, TimerFired):
            now = max(now, event.due_ms)
        partial = read(stored, fps)
        d_whole = run(whole, event, now)
        d_part = run(partial, event, now)
        assert (d_part.changed, d_part.opened, d_part.duplicates) == (
            d_whole.changed,
            d_whole.opened,
            d_whole.duplicates,
        )
        assert d_part.effects == d_whole.effects
        if d_whole.incident is not None:
            assert d_part.incident is not None
            assert d_part.incident.to_json() == d_whole.incident.to_json()  # record and aggregate
        if d_part.changed:
            store(stored, partial, d_part)
            after = read(stored, None)
            assert after is not None and d_whole.incident is not None
            assert after.alerts == d_whole.incident.alerts  # only changed fields were written
            assert after.counts() == recount(after)  # the aggregate is the alerts' own count
            assert after.alert_total == len(after.alerts)
            # the labels every alert shares, kept as they joined: what a message names
            labels = [a.labels for a in after.alerts.values()]
            shared = {k: v for k, v in labels[0].items() if all(m.get(k) == v for m in labels)}
            assert after.common == (shared if len(labels) > 1 else None)  # one: its own, not stored
            if after.firing_by:  # the incident's severity is its highest firing alert's
                top = min(POLICIES.severity_rank(k[0]) for k in after.firing_by)
                assert POLICIES.severity_rank(after.severity) <= top
        now += MIN
