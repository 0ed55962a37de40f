"""On-call calendar feeds: the .ics read back with icalendar agrees with schedules.oncall."""

import re
from datetime import UTC, date, datetime, timedelta
from itertools import pairwise
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from icalendar import Calendar

from engine.feeds import (
    MAX_EVENTS,
    feed_path,
    feed_token,
    feed_users,
    feed_window,
    oncall_overview,
    schedule_calendar,
    user_calendar,
)
from engine.policy.models import PolicySet
from engine.policy.schedules import oncall, parse_local

BERLIN = "Europe/Berlin"
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
_SUMMARY = re.compile(r"On call: (.+) \((.+)\)")


def layer(
    people: list[str], shift: str, handoff: str = "09:00", start: str = "2027-01-04", **more: Any
) -> Any:
    return {"participants": people, "shift": shift, "handoff": handoff, "start": start, **more}


def policies(schedules: dict[str, Any], users: tuple[str, ...] = ()) -> PolicySet:
    return PolicySet.model_validate(
        {
            "severities": {"P1": {}},
            "default": {"severity": "P1", "policy": "p"},
            "escalation_policies": {"p": {"levels": [{"after": "0s", "notify": ["user:alice"]}]}},
            "users": {u: {} for u in users},
            "schedules": {
                name: {"time_zone": BERLIN, **s} if "time_zone" not in s else s
                for name, s in schedules.items()
            },
        }
    )


def ms(text: str, zone: str = BERLIN) -> int:
    """Epoch ms of RFC 3339 or local `YYYY-MM-DD HH:MM` in `zone`."""
    return int(parse_local(text, zone).timestamp() * 1000)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def parse(ics: bytes) -> Calendar:
    return Calendar.from_ical(ics)


def events(ics: bytes) -> list[tuple[str, str, datetime, datetime]]:
    """(people, schedule, start, end) per VEVENT, in feed order."""
    out = []
    for ev in parse(ics).walk("VEVENT"):
        m = _SUMMARY.fullmatch(str(ev["SUMMARY"]))
        assert m, ev["SUMMARY"]
        out.append((m[1], m[2], ev.decoded("DTSTART"), ev.decoded("DTEND")))
    return out


def uids(ics: bytes) -> dict[datetime, str]:
    return {ev.decoded("DTSTART"): str(ev["UID"]) for ev in parse(ics).walk("VEVENT")}


DAILY = {"layers": [layer(["alice", "bob", "carol"], "1d")]}
NOW = ms("2027-01-06 12:00")


# --- the calendar and its events


def test_calendar_properties() -> None:
    ics = schedule_calendar(policies({"sre-primary": DAILY}), "sre-primary", *feed_window(NOW), NOW)
    cal = parse(ics)
    assert cal["VERSION"] == "2.0"
    assert str(cal["PRODID"]).startswith("-//escalation-engine//")
    assert cal["X-WR-CALNAME"] == "On call: sre-primary"
    assert b"REFRESH-INTERVAL;VALUE=DURATION:PT1H\r\n" in ics
    assert b"X-PUBLISHED-TTL:PT1H\r\n" in ics
    for ev in cal.walk("VEVENT"):
        assert ev.decoded("DTSTAMP") == datetime(2027, 1, 6, 11, tzinfo=UTC)
        assert str(ev["UID"]).endswith("@escalation-engine")
        assert b"DTSTART:2027" in ev.to_ical()  # UTC, written with Z and no TZID
    assert re.search(rb"\nDTSTART:\d{8}T\d{6}Z\r\n", ics)


def test_a_known_week_of_a_daily_rotation() -> None:
    p = policies({"sre-primary": DAILY})
    got = events(schedule_calendar(p, "sre-primary", ms("2027-01-04T00:00Z"), ms("2027-01-11T00:00Z"), NOW))
    # nobody before the first hand-off; the last shift keeps its real end after the window
    days = [f"2027-01-{d:02d}T08:00" for d in range(4, 12)]
    expected = [
        (who, "sre-primary", utc(a), utc(b)) for who, (a, b) in zip("abcabca", pairwise(days), strict=True)
    ]
    assert [(w[0], s, a, b) for w, s, a, b in got] == expected
    assert [w for w, *_ in got] == ["alice", "bob", "carol", "alice", "bob", "carol", "alice"]


def test_shifts_keep_their_real_start_before_the_window() -> None:
    p = policies({"s": {"layers": [layer(["alice", "bob"], "1w", start="2027-01-06")]}})
    got = events(schedule_calendar(p, "s", ms("2027-01-15 00:00"), ms("2027-01-16 00:00"), NOW))
    assert got == [("bob", "s", utc("2027-01-13T08:00"), utc("2027-01-20T08:00"))]


@pytest.mark.parametrize(
    ("before", "switch", "after"),
    [("2027-03-27", "2027-03-28", "2027-03-29"), ("2027-10-30", "2027-10-31", "2027-11-01")],
)
def test_a_dst_switch_keeps_the_wall_clock_handoff(before: str, switch: str, after: str) -> None:
    p = policies({"s": DAILY})
    got = events(schedule_calendar(p, "s", ms(f"{before} 12:00"), ms(f"{after} 12:00"), NOW))
    starts = [a.astimezone(p.schedules["s"].zone) for _, _, a, _ in got]
    assert [t.strftime("%H:%M") for t in starts] == ["09:00"] * 3
    assert [t.date().isoformat() for t in starts] == [before, switch, after]
    lengths = [(b - a) / timedelta(hours=1) for _, _, a, b in got]
    assert lengths[0] == (23 if before.endswith("03-27") else 25)  # the switch night's shift
    assert got[0][3] == got[1][2]  # back to back


def test_uids_are_stable_across_fetches_and_distinct() -> None:
    p = policies({"s": DAILY})
    first = uids(schedule_calendar(p, "s", *feed_window(NOW), NOW))
    later = NOW + 3 * DAY_MS + 7 * 60_000
    second = uids(schedule_calendar(p, "s", *feed_window(later), later))
    common = first.keys() & second.keys()
    assert len(common) > 50
    assert all(first[k] == second[k] for k in common)
    assert len(set(first.values())) == len(first)
    # a person's feed does not reuse the schedule feed's UIDs
    mine = uids(user_calendar(p, "alice", *feed_window(NOW), NOW))
    assert mine and not set(mine.values()) & set(first.values())


def test_adjacent_intervals_with_the_same_people_merge() -> None:
    p = policies(
        {
            "s": {
                "layers": [layer(["alice", "alice", "bob"], "1d")],
                # bob's override right after his own shift: one event
                "overrides": [{"user": "bob", "from": "2027-01-07 09:00", "to": "2027-01-07 18:00"}],
            }
        }
    )
    got = events(schedule_calendar(p, "s", ms("2027-01-04 00:00"), ms("2027-01-08 00:00"), NOW))
    assert got == [
        ("alice", "s", utc("2027-01-04T08:00"), utc("2027-01-06T08:00")),
        ("bob", "s", utc("2027-01-06T08:00"), utc("2027-01-07T17:00")),
        ("alice", "s", utc("2027-01-07T17:00"), utc("2027-01-09T08:00")),
    ]


def test_empty_slots_are_not_events() -> None:
    weekdays = {
        "layers": [layer(["alice"], "1d", only=[{"days": ["mon-fri"], "from": "09:00", "to": "17:00"}])]
    }
    got = events(
        schedule_calendar(policies({"s": weekdays}), "s", ms("2027-01-04 00:00"), ms("2027-01-11 00:00"), NOW)
    )
    assert len(got) == 5
    for _, _, a, b in got:
        assert a.astimezone(UTC).hour == 8 and b - a == timedelta(hours=8)


def test_a_users_feed_spans_schedules() -> None:
    p = policies(
        {
            "primary": DAILY,
            "leads": {"layers": [layer(["dave", "alice"], "1w", handoff="10:00", start="2027-01-04")]},
        },
        users=("alice", "bob", "carol", "dave", "zoe"),
    )
    got = events(user_calendar(p, "alice", ms("2027-01-04 00:00"), ms("2027-01-18 00:00"), NOW))
    assert {s for _, s, _, _ in got} == {"primary", "leads"}
    assert all(w == "alice" for w, *_ in got)
    assert ("alice", "leads", utc("2027-01-11T09:00"), utc("2027-01-18T09:00")) in got
    assert ("alice", "primary", utc("2027-01-07T08:00"), utc("2027-01-08T08:00")) in got
    assert [a for _, _, a, _ in got] == sorted(a for _, _, a, _ in got)
    assert parse(user_calendar(p, "alice", 0, 1, NOW))["X-WR-CALNAME"] == "On call: alice"
    assert events(user_calendar(p, "zoe", ms("2027-01-04 00:00"), ms("2027-01-18 00:00"), NOW)) == []


def test_events_are_capped() -> None:
    p = policies({"s": {"layers": [layer(["a", "b", "c"], "1h", start="2026-01-01")]}})
    got = events(schedule_calendar(p, "s", NOW, NOW + 100 * DAY_MS, NOW))
    assert len(got) == MAX_EVENTS  # the earliest ones
    assert got[0][2] == datetime.fromtimestamp(NOW / 1000, UTC)
    assert all(b - a == timedelta(hours=1) for _, _, a, b in got)


def test_unknown_schedule_is_a_key_error() -> None:
    with pytest.raises(KeyError):
        schedule_calendar(policies({"s": DAILY}), "nope", 0, DAY_MS, NOW)


# --- overview, names, paths


def test_oncall_overview() -> None:
    p = policies({"s": DAILY, "empty": {"layers": [layer(["bob"], "1d", start="2028-06-01")]}})
    s, empty = oncall_overview(p, ms("2027-01-05 12:00"), 2)
    assert s == {
        "name": "s",
        "time_zone": BERLIN,
        "oncall": ["bob"],
        "next": [
            {"at": "2027-01-06T09:00:00+01:00", "oncall": ["carol"]},
            {"at": "2027-01-07T09:00:00+01:00", "oncall": ["alice"]},
        ],
    }
    assert empty["oncall"] == [] and empty["next"] == [{"at": "2028-06-01T09:00:00+02:00", "oncall": ["bob"]}]


def test_feed_users_and_paths() -> None:
    p = policies(
        {
            "s": {
                "layers": [layer(["bob", "carl"], "1d")],
                "overrides": [{"user": "dan", "from": "2027-01-01 00:00", "to": "2027-01-02 00:00"}],
            }
        },
        users=("alice", "bob"),
    )
    assert feed_users(p) == ["alice", "bob", "carl", "dan"]
    path = feed_path(b"k", "schedule", "sre primary/x")
    assert (
        path
        == f"/api/v1/schedules/sre%20primary%2Fx.ics?token={feed_token(b'k', 'schedule', 'sre primary/x')}"
    )
    assert feed_token(b"k", "schedule", "a") != feed_token(b"k", "user", "a") != feed_token(b"j", "user", "a")


# --- property: a feed agrees with oncall() instant by instant

ZONES = [BERLIN, "America/New_York", "Australia/Lord_Howe", "UTC"]
times = st.integers(0, 95).map(lambda x: f"{x // 4:02d}:{x % 4 * 15:02d}")
layers = st.fixed_dictionaries(
    {
        "participants": st.lists(
            st.sampled_from(["ann", "ben", "cat", "dom"]), min_size=1, max_size=3, unique=True
        ),
        "shift": st.sampled_from(["4h", "8h", "12h", "1d", "2d", "1w"]),
        "handoff": times,
        "start": st.dates(date(2027, 1, 1), date(2027, 12, 31)).map(str),
    },
    optional={
        "only": st.lists(
            st.fixed_dictionaries(
                {
                    "days": st.sets(
                        st.sampled_from(["mon", "tue", "wed", "thu", "fri", "sat", "sun"]), min_size=1
                    ).map(sorted),
                    "from": times,
                    "to": times,
                }
            ),
            min_size=1,
            max_size=2,
        )
    },
)


@settings(max_examples=40, deadline=None)
@given(
    zone=st.sampled_from(ZONES),
    layer_list=st.lists(layers, min_size=1, max_size=3),
    override_at=st.none() | st.integers(0, 80 * 24),  # hours after the window starts
    now_hours=st.integers(0, 365 * 24),
    probes=st.lists(st.floats(0, 1), min_size=1, max_size=4),
)
def test_events_never_overlap_and_match_oncall(
    zone: str,
    layer_list: list[Any],
    override_at: int | None,
    now_hours: int,
    probes: list[float],
) -> None:
    now = ms("2027-01-01T00:00Z") + now_hours * HOUR_MS
    start, end = feed_window(now)
    overrides = []
    if override_at is not None:
        at = datetime.fromtimestamp((start + override_at * HOUR_MS) / 1000, UTC)
        overrides = [{"user": "eve", "from": at.isoformat(), "to": (at + timedelta(hours=30)).isoformat()}]
    p = policies({"s": {"time_zone": zone, "layers": layer_list, "overrides": overrides}})
    schedule = p.schedules["s"]
    got = events(schedule_calendar(p, "s", start, end, now))
    for first, second in pairwise(got):
        assert first[3] <= second[2]  # in order, never overlapping
    for who, name, a, b in got:
        assert name == "s" and a < b
        people = who.split(", ")
        a_ms, b_ms = int(a.timestamp() * 1000), int(b.timestamp() * 1000)
        assert b_ms > start and a_ms < end  # overlaps the window
        for x in [0.0, *probes]:
            t = min(a_ms + int(x * (b_ms - a_ms)), b_ms - 1)
            assert oncall(schedule, t) == people
    # and the feed misses nobody: inside the window, whoever is on call is in an event
    for x in probes:
        t = start + int(x * (end - 1 - start))
        inside = [w for w, _, a, b in got if a.timestamp() * 1000 <= t < b.timestamp() * 1000]
        on = oncall(schedule, t)
        assert inside == ([", ".join(on)] if on else [])
