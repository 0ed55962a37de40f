"""On-call schedules: rotations, layers, overrides, restrictions and their fairness, DST hand-offs."""

from collections import Counter
from datetime import UTC, date, datetime, timedelta
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from engine.policy.schedules import Schedule, handoffs, oncall, parse_local

MIN = timedelta(minutes=1)
DAY_NAMES = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
BERLIN = "Europe/Berlin"


def layer(
    people: list[str], shift: str, handoff: str = "09:00", start: str = "2027-01-04", **more: Any
) -> Any:
    return {"participants": people, "shift": shift, "handoff": handoff, "start": start, **more}


def sched(*layers: Any, zone: str = BERLIN, overrides: Any = (), **more: Any) -> Schedule:
    return Schedule.model_validate(
        {"time_zone": zone, "layers": list(layers), "overrides": list(overrides), **more}
    )


def local(text: str, zone: str = BERLIN) -> datetime:
    return parse_local(text, zone)


def who(s: Schedule, text: str, zone: str = BERLIN) -> list[str]:
    return oncall(s, local(text, zone))


def utc(t: datetime) -> datetime:
    # arithmetic on aware datetimes in a zone with DST is wall-clock arithmetic: do it in UTC
    return t.astimezone(UTC)


# --- rotations, layers, overrides, empty slots


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        ("2027-01-04 08:59", []),  # before the first hand-off: nobody
        ("2027-01-04 09:00", ["a"]),
        ("2027-01-05 08:59", ["a"]),
        ("2027-01-05 09:00", ["b"]),
        ("2027-01-06 23:00", ["c"]),
        ("2027-01-07 09:00", ["a"]),
        ("2027-02-01 10:00", ["b"]),  # 28 days on
    ],
)
def test_daily_rotation(when: str, expected: list[str]) -> None:
    assert who(sched(layer(["a", "b", "c"], "1d")), when) == expected


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        ("2027-01-06 09:00", ["a"]),  # a Wednesday: weekly hand-offs are on Wednesdays
        ("2027-01-13 08:59", ["a"]),
        ("2027-01-13 09:00", ["b"]),
        ("2027-01-20 09:00", ["a"]),
    ],
)
def test_weekly_rotation(when: str, expected: list[str]) -> None:
    assert who(sched(layer(["a", "b"], "1w", start="2027-01-06")), when) == expected


def test_weekly_handoffs_and_epoch_ms() -> None:
    s = sched(layer(["a", "b"], "1w", start="2027-01-06"))
    hs = handoffs(s, local("2027-01-06 09:00"), 3)
    assert [(h.isoformat(), p) for h, p in hs] == [
        ("2027-01-13T09:00:00+01:00", ["b"]),
        ("2027-01-20T09:00:00+01:00", ["a"]),
        ("2027-01-27T09:00:00+01:00", ["b"]),
    ]
    ms = int(local("2027-01-13 09:00").timestamp() * 1000)
    assert oncall(s, ms) == ["b"] and oncall(s, ms - 1) == ["a"]


def test_a_higher_layer_wins_where_it_has_someone() -> None:
    weekdays = layer(["a", "b", "c"], "1w")  # Mondays 09:00
    weekend = layer(["d", "e"], "1d", start="2027-01-08", restrictions=[{"days": ["sat", "sun"]}])
    s = sched(weekdays, weekend)
    assert who(s, "2027-01-08 23:59") == ["a"]  # the weekend layer's Friday shift, outside its window
    assert who(s, "2027-01-09 00:00") == ["d"]  # ... inside it: whole days, from midnight
    assert who(s, "2027-01-09 09:00") == ["e"]
    assert who(s, "2027-01-10 09:00") == ["d"]
    assert who(s, "2027-01-11 00:00") == ["a"]
    assert who(s, "2027-01-11 09:00") == ["b"]
    assert who(s, "2027-01-16 00:00") == ["e"]  # Mon-Thu shifts consumed no turn


def test_overrides_beat_layers_across_a_handoff() -> None:
    overrides = [
        {"user": "x", "from": "2027-01-05 20:00", "to": "2027-01-06 12:00"},  # spans 01-06 09:00
        {"user": "y", "from": "2027-01-07T08:00:00Z", "to": "2027-01-07T10:00:00+01:00"},  # touches, ok
        {"user": "z", "from": "2027-01-07 10:00", "to": "2027-01-07 11:00"},
    ]
    s = sched(layer(["a", "b"], "1d"), overrides=overrides)
    assert who(s, "2027-01-05 19:59") == ["b"]
    assert who(s, "2027-01-06 09:00") == ["x"]
    hs = handoffs(s, local("2027-01-05 12:00"), 6)
    assert [(h.strftime("%m-%d %H:%M"), p) for h, p in hs] == [
        ("01-05 20:00", ["x"]),
        ("01-06 12:00", ["a"]),  # the 09:00 hand-off happened under the override
        ("01-07 09:00", ["y"]),
        ("01-07 10:00", ["z"]),
        ("01-07 11:00", ["b"]),
        ("01-08 09:00", ["a"]),
    ]


def test_empty_slots() -> None:
    assert oncall(sched(), local("2027-01-04 12:00")) == []
    assert handoffs(sched(), local("2027-01-04 12:00"), 3) == []
    office = layer(["a"], "1d", restrictions=[{"days": ["mon-fri"], "from": "09:00", "to": "17:00"}])
    s = sched(office, fallback="user:lead")
    assert who(s, "2027-01-04 12:00") == ["a"]
    assert who(s, "2027-01-04 17:00") == []  # the caller pages s.fallback
    assert who(s, "2027-01-09 12:00") == []
    assert s.fallback == "user:lead"


def test_restriction_window_past_midnight() -> None:
    nights = layer(["a", "b"], "1d", restrictions=[{"days": ["fri"], "from": "22:00", "to": "06:00"}])
    s = sched(nights)
    assert who(s, "2027-01-08 21:59") == []
    assert who(s, "2027-01-08 22:00") == ["a"]
    assert who(s, "2027-01-09 05:59") == ["a"]  # still Friday's shift
    assert who(s, "2027-01-09 06:00") == []
    assert who(s, "2027-01-15 23:00") == ["b"]  # the next active shift is a week later


# --- fairness with restrictions (GoAlert issue #55)


def _weekday_noon_counts(people: list[str], weeks: int) -> Counter[str]:
    office = [{"days": ["mon-fri"], "from": "09:00", "to": "17:00"}]
    s = sched(layer(people, "1d", restrictions=office))
    days = (date(2027, 1, 4) + timedelta(days=d) for d in range(7 * weeks))
    return Counter(p for d in days for p in who(s, f"{d} 12:00"))


def test_two_people_weekdays_share_evenly() -> None:
    counts = _weekday_noon_counts(["a", "b"], weeks=5)
    assert sum(counts.values()) == 25
    assert abs(counts["a"] - counts["b"]) <= 1


def test_weekend_turns_are_not_skipped_for_ever() -> None:
    # counting every shift, f and g (turns 6 and 7 of a 7-day week) would only ever get weekends
    counts = _weekday_noon_counts(list("abcdefg"), weeks=7)
    assert sorted(counts.values()) == [5] * 7


def test_a_day_range_may_wrap_the_week() -> None:
    s = sched(layer(["a", "b"], "1d", restrictions=[{"days": "fri-mon"}]))
    # Thursday's shift (09:00 to Friday 09:00) is active: it holds Friday's first hours
    assert [who(s, f"2027-01-{d:02d} 12:00") for d in range(4, 12)] == [
        ["a"], [], [], [], ["a"], ["b"], ["a"], ["b"],  # Mon 4th .. Mon 11th
    ]  # fmt: skip
    assert who(s, "2027-01-08 08:59") == ["b"]


@settings(max_examples=60, deadline=None)
@given(
    people=st.lists(st.sampled_from("abcdefg"), min_size=1, max_size=7, unique=True),
    days=st.sets(st.sampled_from(DAY_NAMES), min_size=1),
    weeks=st.integers(1, 6),
)
def test_fair_turns_over_restricted_days(people: list[str], days: set[str], weeks: int) -> None:
    window = [{"days": sorted(days), "from": "09:00", "to": "17:00"}]
    s = sched(layer(people, "1d", restrictions=window))
    counts = Counter[str]()
    for d in range(7 * weeks):
        counts.update(who(s, f"{date(2027, 1, 4) + timedelta(days=d)} 12:00"))
    total = len(days) * weeks
    assert sum(counts.values()) == total
    assert all(abs(counts[p] - total / len(people)) <= 1 for p in people)


# --- DST: hand-offs keep their local wall-clock time

SWITCHES = [  # zone, switch day (a Sunday), that day's length in hours
    (BERLIN, "2027-03-28", 23),
    (BERLIN, "2027-10-31", 25),
    ("America/New_York", "2027-03-14", 23),
    ("America/New_York", "2027-11-07", 25),
]


@pytest.mark.parametrize(("zone", "day", "day_hours"), SWITCHES)
@pytest.mark.parametrize(
    ("shift", "hours", "walls"),
    [("12h", 12, {"09:00", "21:00"}), ("1d", 24, {"09:00"}), ("1w", 168, {"09:00"})],
)
def test_handoffs_keep_local_time_across_dst(
    zone: str, day: str, day_hours: int, shift: str, hours: int, walls: set[str]
) -> None:
    start = date.fromisoformat(day) - timedelta(days=14)
    people = ["a", "b", "c"]
    s = sched(layer(people, shift, start=str(start)), zone=zone)
    first = local(f"{start} 09:00", zone)
    hs = handoffs(s, utc(first) - MIN, 28 * 24 // hours)
    assert hs[0][0] == first and len(hs) == 28 * 24 // hours
    for i, (h, p) in enumerate(hs):
        assert h.strftime("%H:%M") in walls
        assert p == [people[i % 3]]
        assert oncall(s, utc(h) - MIN) == ([people[(i - 1) % 3]] if i else [])
        assert oncall(s, utc(h) + MIN) == p
    switch = utc(local(f"{day} 04:00", zone))  # after the switch in both zones
    for (a, _), (b, _) in pairwise(hs):
        longer = (day_hours - 24) if utc(a) < switch < utc(b) else 0
        assert utc(b) - utc(a) == timedelta(hours=hours + longer)


@pytest.mark.parametrize(
    ("zone", "handoff", "day", "expected"),
    [
        (BERLIN, "02:30", "2027-03-28", "2027-03-28T01:00:00+00:00"),  # gap: when the clocks jump (03:00)
        (BERLIN, "02:30", "2027-10-31", "2027-10-31T00:30:00+00:00"),  # twice: the first, 02:30 CEST
        ("America/New_York", "02:30", "2027-03-14", "2027-03-14T07:00:00+00:00"),  # 03:00 EDT
        ("America/New_York", "01:30", "2027-11-07", "2027-11-07T05:30:00+00:00"),  # 01:30 EDT
    ],
)
def test_handoff_in_a_gap_or_an_overlap(zone: str, handoff: str, day: str, expected: str) -> None:
    switch = date.fromisoformat(day)
    s = sched(layer(["a", "b"], "1d", handoff=handoff, start=str(switch - timedelta(days=2))), zone=zone)
    hs = handoffs(s, local(f"{switch - timedelta(days=1)} 12:00", zone), 2)
    # compared in UTC: Python's == between zones is False for a time in the autumn overlap
    assert (utc(hs[0][0]), hs[0][1]) == (datetime.fromisoformat(expected), ["a"])
    assert hs[1][0].strftime("%H:%M") == handoff  # back to the wall time the next day
    assert oncall(s, utc(hs[0][0]) - MIN) == ["b"] and oncall(s, hs[0][0]) == ["a"]


def test_parse_local() -> None:
    assert local("2027-03-28 02:30").isoformat() == "2027-03-28T03:00:00+02:00"
    assert local("2027-10-31T02:30").isoformat() == "2027-10-31T02:30:00+02:00"
    assert local("2027-10-31T02:30:00+01:00").isoformat() == "2027-10-31T02:30:00+01:00"
    assert local("2027-01-04T08:00:00Z").isoformat() == "2027-01-04T09:00:00+01:00"
    assert parse_local("2027-01-04 09:00", "Asia/Kolkata").isoformat() == "2027-01-04T09:00:00+05:30"
    with pytest.raises(ValueError, match="neither RFC 3339"):
        local("04.01.2027 09:00")
    with pytest.raises(ValueError, match="no time zone"):
        oncall(sched(), datetime(2027, 1, 4, 9))


# --- validation


def _spec_example() -> dict[str, Any]:
    # the spelling of policy-example.yaml: rotations, name, only, a day range, local "T" times
    return {
        "time_zone": BERLIN,
        "rotations": [
            {"name": "weekly", "participants": ["alice", "bob"], "shift": "1w", "handoff": "09:00",
             "start": date(2026, 1, 5)},
            {"name": "weekend", "participants": ["dave"], "shift": "1d", "handoff": "09:00",
             "start": "2026-01-03", "only": [{"days": ["sat-sun"]}]},
        ],
        "overrides": [{"user": "carol", "from": "2026-12-24T18:00", "to": "2026-12-27T09:00"}],
        "fallback": "user:senior-sre",
    }  # fmt: skip


def test_the_spec_example_spelling() -> None:
    s = Schedule.model_validate(_spec_example())
    assert [lay.name for lay in s.layers] == ["weekly", "weekend"]
    assert s.layers[1].restrictions[0].days == ["sat", "sun"]
    assert who(s, "2026-12-25 12:00") == ["carol"]
    assert who(s, "2026-12-19 12:00") == ["dave"]


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("time_zone",), "Mars/Olympus_Mons", "unknown time zone 'Mars/Olympus_Mons'"),
        (("time_zone",), "", "unknown time zone ''"),
        (("rotations", 0, "shift"), "5h", "must divide 24h"),
        (("rotations", 0, "shift"), "36h", "must divide 24h"),
        (("rotations", 0, "shift"), "0s", "must divide 24h"),
        (("rotations", 0, "shift"), "1w2", "invalid duration"),
        (("rotations", 0, "handoff"), "9:00", "not HH:MM"),
        (("rotations", 0, "participants"), [], "at least 1"),
        (("rotations", 0, "start"), "someday", "date"),
        (("rotations", 1, "only", 0, "days"), ["sat-xyz"], "day range"),
        (("rotations", 1, "only", 0, "days"), [], "at least 1"),
        (("rotations", 1, "only", 0, "from"), "24:00", "not HH:MM"),
        (("rotations", 1, "rotation"), "oops", "Extra inputs"),
        (("overrides", 0, "to"), "2026-12-24 17:00", "must be after"),
        (("overrides", 0, "to"), "tomorrow", "neither RFC 3339"),
        (("overrides", 1), {"user": "x", "from": "2026-12-27T08:00", "to": "2026-12-28T00:00"}, "overlap"),
        (("fallback",), "usr:lead", "unknown target kind"),
    ],
)
def test_validation_errors(path: tuple[Any, ...], value: Any, message: str) -> None:
    doc = _spec_example()
    doc["overrides"].append({"user": "x", "from": "2027-01-01 00:00", "to": "2027-01-02 00:00"})
    node: Any = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(ValidationError, match=message):
        Schedule.model_validate(doc)


# --- properties

ZONES = [BERLIN, "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe", "UTC"]  # Lord Howe: 30-min DST
SHIFTS = {"8h": 8, "12h": 12, "1d": 24, "2d": 48, "1w": 168}

rotations = st.fixed_dictionaries(
    {
        "people": st.lists(st.sampled_from("abcde"), min_size=1, max_size=5, unique=True),
        "shift": st.sampled_from(sorted(SHIFTS)),
        "zone": st.sampled_from(ZONES),
        "handoff": st.tuples(st.integers(0, 23), st.integers(0, 59)).map(
            lambda hm: f"{hm[0]:02d}:{hm[1]:02d}"
        ),
        "start": st.dates(date(2020, 1, 1), date(2030, 12, 31)),
        "offset": st.integers(0, 3 * 365 * 86_400),  # seconds after the first hand-off
    }
)


def _rotation(r: dict[str, Any]) -> tuple[Schedule, datetime, datetime, timedelta]:
    s = sched(layer(r["people"], r["shift"], r["handoff"], str(r["start"])), zone=r["zone"])
    origin = datetime.fromisoformat(f"{r['start']} {r['handoff']}")  # naive local
    first = parse_local(f"{r['start']} {r['handoff']}", r["zone"])
    return s, origin, utc(first) + timedelta(seconds=r["offset"]), timedelta(hours=SHIFTS[r["shift"]])


@settings(max_examples=150, deadline=None)
@given(rotations)
def test_exactly_one_participant_on_call(r: dict[str, Any]) -> None:
    s, _, t, _ = _rotation(r)
    on = oncall(s, t)
    assert len(on) == 1 and on[0] in r["people"]


@settings(max_examples=150, deadline=None)
@given(rotations)
def test_handoffs_are_ordered_real_changes_at_local_shift_times(r: dict[str, Any]) -> None:
    s, origin, t, step = _rotation(r)
    hs = handoffs(s, t, 6)
    assert len(hs) == (6 if len(r["people"]) > 1 else 0)
    times = [t] + [utc(h) for h, _ in hs]
    assert all(a < b for a, b in pairwise(times))
    for h, p in hs:
        assert oncall(s, h) == p != oncall(s, utc(h) - timedelta(seconds=1))
        # at the shift's local start, or where the clocks jumped over it
        wall = h.replace(tzinfo=None)
        lattice = origin + (wall - origin) // step * step
        assert parse_local(str(lattice), r["zone"]) == h


@settings(max_examples=100, deadline=None)
@given(rotations, st.integers(1, 60))
def test_every_participant_gets_a_fair_share_of_shifts(r: dict[str, Any], n: int) -> None:
    s, origin, t, step = _rotation(r)
    k0 = (t.astimezone(ZoneInfo(r["zone"])).replace(tzinfo=None) - origin) // step
    starts = [utc(parse_local(str(origin + (k0 + k) * step), r["zone"])) for k in range(n + 1)]
    counts = Counter(p for a, b in pairwise(starts) for p in oncall(s, a + (b - a) / 2))
    assert sum(counts.values()) == n
    assert all(abs(counts[p] - n / len(r["people"])) <= 1 for p in r["people"])


NEAR_SWITCHES = [  # the day before a switch, and a day with none
    (BERLIN, "2027-03-27"),
    (BERLIN, "2027-10-30"),
    ("America/New_York", "2027-03-13"),
    ("America/New_York", "2027-11-06"),
    ("Australia/Lord_Howe", "2027-04-03"),
    ("Australia/Lord_Howe", "2027-10-02"),
    ("Asia/Kolkata", "2027-06-10"),
]
quarter_hours = st.integers(0, 95).map(lambda x: f"{x // 4:02d}:{x % 4 * 15:02d}")


@settings(max_examples=40, deadline=None)
@given(
    zone_day=st.sampled_from(NEAR_SWITCHES),
    shift=st.sampled_from(sorted(SHIFTS)),
    handoff=quarter_hours,
    windows=st.lists(
        st.fixed_dictionaries(
            {
                "days": st.sets(st.sampled_from(DAY_NAMES), min_size=1).map(sorted),
                "from": quarter_hours,
                "to": quarter_hours,
            }
        ),
        min_size=1,
        max_size=2,
    ),
    over=st.lists(st.tuples(st.integers(0, 4 * 96), st.integers(1, 40)), max_size=3),
)
def test_handoffs_match_a_scan_every_quarter_hour(
    zone_day: tuple[str, str], shift: str, handoff: str, windows: list[Any], over: list[tuple[int, int]]
) -> None:
    zone, day = zone_day
    near = utc(local(f"{day} 00:00", zone))
    q = timedelta(minutes=15)
    base = layer(["a", "b", "c"], "1w", start="2027-01-01")
    restricted = layer(["d", "e"], shift, handoff, "2027-01-02", restrictions=windows)
    spans, end = [], near
    for gap, length in over:  # back to back or apart, never overlapping
        start = end + gap * q
        end = start + length * q
        spans.append({"user": "x", "from": start.isoformat(), "to": end.isoformat()})
    s = sched(base, restricted, zone=zone, overrides=spans)
    scan = [near + i * q for i in range(4 * 96)]
    on = [oncall(s, x) for x in scan]
    changes = [(scan[i], on[i]) for i in range(1, len(scan)) if on[i] != on[i - 1]]
    found = [(utc(h), p) for h, p in handoffs(s, near, len(changes) + 1) if utc(h) <= scan[-1]]
    assert found == changes
