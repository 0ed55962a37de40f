from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import holidays
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from engine.policy.calendars import Calendar, is_open, next_close, next_open

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
WEEKDAYS_9_17 = {day: ["09:00-17:00"] for day in ("mon", "tue", "wed", "thu", "fri")}
US = {"country": "US"}
EVERY_DAY_9_17 = {**WEEKDAYS_9_17, "sat": ["09:00-17:00"], "sun": ["09:00-17:00"]}


def office(**extra: object) -> Calendar:
    return Calendar.model_validate({"time_zone": "Europe/Berlin", "hours": WEEKDAYS_9_17, **extra})


def at(zone: ZoneInfo, year: int, month: int, day: int, hour: int, minute: int) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=zone)


def test_open_inside_hours_closed_outside() -> None:
    cal = office()
    assert is_open(cal, at(BERLIN, 2027, 6, 9, 9, 0))  # a Wednesday, opening minute included
    assert is_open(cal, at(BERLIN, 2027, 6, 9, 16, 59))
    assert not is_open(cal, at(BERLIN, 2027, 6, 9, 17, 0))  # the end is exclusive
    assert not is_open(cal, at(BERLIN, 2027, 6, 9, 8, 59))
    assert not is_open(cal, at(BERLIN, 2027, 6, 12, 12, 0))  # Saturday
    assert is_open(cal, datetime(2027, 6, 9, 7, 0, tzinfo=UTC))  # 09:00 CEST, any zone for `at`


def test_friday_evening_opens_monday_morning_and_closes_at_five() -> None:
    cal = office()
    friday = at(BERLIN, 2027, 6, 11, 18, 0)
    assert next_open(cal, friday) == at(BERLIN, 2027, 6, 14, 9, 0)
    assert next_close(cal, friday) == friday  # closed already
    wednesday = at(BERLIN, 2027, 6, 9, 10, 0)
    assert next_open(cal, wednesday) == wednesday
    assert next_close(cal, wednesday) == at(BERLIN, 2027, 6, 9, 17, 0)


def test_explicit_holiday_is_closed_all_day() -> None:
    cal = office(holidays={"dates": ["2027-06-14"]})
    assert not is_open(cal, at(BERLIN, 2027, 6, 14, 10, 0))
    assert next_open(cal, at(BERLIN, 2027, 6, 11, 18, 0)) == at(BERLIN, 2027, 6, 15, 9, 0)


def test_touching_windows_and_midnight_are_one_stretch() -> None:
    cal = Calendar(time_zone="UTC", hours={"mon": ["09:00-12:00", "12:00-24:00"], "tue": ["00:00-06:00"]})
    assert next_close(cal, datetime(2027, 6, 14, 10, tzinfo=UTC)) == datetime(2027, 6, 15, 6, tzinfo=UTC)
    always = Calendar(time_zone="UTC", hours={day: ["00:00-24:00"] for day in EVERY_DAY_9_17})
    assert next_close(always, datetime(2027, 6, 14, tzinfo=UTC)) is None  # never closes in the horizon


def test_country_and_subdivision_holidays() -> None:
    bavaria = office(holidays={"country": "DE", "subdivision": "BY"})
    assert not is_open(bavaria, at(BERLIN, 2027, 1, 6, 10, 0))  # Epiphany, a Wednesday
    assert next_open(bavaria, at(BERLIN, 2027, 1, 6, 10, 0)) == at(BERLIN, 2027, 1, 7, 9, 0)
    assert is_open(
        office(holidays={"country": "DE", "subdivision": "BE"}), at(BERLIN, 2027, 1, 6, 10, 0)
    )  # not in Berlin
    us = Calendar.model_validate(
        {"time_zone": "America/New_York", "hours": WEEKDAYS_9_17, "holidays": {"country": "US"}}
    )
    observed = date(2027, 7, 5) in holidays.country_holidays("US", years=2027)
    assert is_open(us, at(NEW_YORK, 2027, 7, 5, 10, 0)) is not observed


@pytest.mark.parametrize(
    ("zone", "days"),
    [(BERLIN, [(2027, 3, 28), (2027, 10, 31)]), (NEW_YORK, [(2027, 3, 14), (2027, 11, 7), (2027, 3, 28)])],
)
def test_wall_clock_hours_on_dst_switch_days(zone: ZoneInfo, days: list[tuple[int, int, int]]) -> None:
    cal = Calendar(time_zone=str(zone), hours=EVERY_DAY_9_17)
    for y, m, d in days:
        assert not is_open(cal, at(zone, y, m, d, 8, 59))
        assert is_open(cal, at(zone, y, m, d, 9, 0))
        assert next_open(cal, at(zone, y, m, d, 3, 0)) == at(zone, y, m, d, 9, 0)
        assert next_close(cal, at(zone, y, m, d, 9, 0)) == at(zone, y, m, d, 17, 0)
        assert not is_open(cal, at(zone, y, m, d, 17, 0))


def test_windows_in_the_spring_forward_gap() -> None:
    sunday_night = {"sun": ["02:30-04:00"], "mon": ["02:00-03:00"]}
    cal = Calendar(time_zone="Europe/Berlin", hours=sunday_night)
    jump = datetime(2027, 3, 28, 1, 0, tzinfo=UTC)  # 02:00 CET -> 03:00 CEST
    assert next_open(cal, at(BERLIN, 2027, 3, 28, 1, 0)) == jump  # opens at the jump
    assert not is_open(cal, jump - timedelta(seconds=1))
    assert next_close(cal, jump) == at(BERLIN, 2027, 3, 28, 4, 0)
    gap_only = Calendar(time_zone="Europe/Berlin", hours={"sun": ["02:00-03:00"]})
    assert next_open(gap_only, at(BERLIN, 2027, 3, 28, 0, 0)) == at(BERLIN, 2027, 4, 4, 2, 0)  # skipped


def test_no_hours_never_opens() -> None:
    assert next_open(Calendar(time_zone="UTC"), datetime(2027, 1, 1, tzinfo=UTC)) is None


def test_naive_datetime_is_refused() -> None:
    with pytest.raises(ValueError, match="no time zone"):
        is_open(office(), datetime(2027, 1, 1, 10, 0))


def test_the_spec_shape_day_ranges_and_one_window_per_day() -> None:
    cal = Calendar.model_validate(
        {"time_zone": "Europe/Berlin", "hours": {"mon-fri": "09:00-17:30", "sat": []}}
    )
    assert cal.week == {d: ["09:00-17:30"] for d in ("mon", "tue", "wed", "thu", "fri")} | {"sat": []}
    assert is_open(cal, at(BERLIN, 2027, 6, 18, 17, 0)) and not is_open(cal, at(BERLIN, 2027, 6, 19, 10, 0))
    wrap = Calendar.model_validate({"time_zone": "UTC", "hours": {"fri-mon": "00:00-24:00"}})
    assert sorted(wrap.week) == ["fri", "mon", "sat", "sun"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"time_zone": "Mars/Olympus"}, "unknown time zone 'Mars/Olympus'"),
        ({"time_zone": "UTC", "hours": {"mon": ["17:00-09:00"]}}, "'17:00-09:00' ends before it starts"),
        ({"time_zone": "UTC", "hours": {"mon": ["9-17"]}}, "'9-17' is not HH:MM-HH:MM"),
        ({"time_zone": "UTC", "hours": {"mon": ["24:00-24:00"]}}, "is not HH:MM-HH:MM"),
        ({"time_zone": "UTC", "hours": {"mon": ["09:00-12:00", "11:00-13:00"]}}, "overlap"),
        ({"time_zone": "UTC", "hours": {"monday": ["09:00-12:00"]}}, "unknown day 'monday'"),
        ({"time_zone": "UTC", "holidays": {"country": "XX"}}, "unknown holiday country 'XX'"),
        (
            {"time_zone": "UTC", "holidays": {"country": "DE", "subdivision": "ZZ"}},
            "unknown subdivision 'ZZ' of DE",
        ),
        ({"time_zone": "UTC", "holidays": {"subdivision": "BY"}}, "subdivision needs a country"),
        ({"time_zone": "UTC", "timezone": "UTC"}, "Extra inputs are not permitted"),
    ],
)
def test_validation_errors(data: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Calendar.model_validate(data)


CALENDARS = [
    office(holidays={"country": "DE", "subdivision": "BY", "dates": ["2027-06-14"]}),
    Calendar.model_validate(
        {"time_zone": "America/New_York", "hours": WEEKDAYS_9_17, "holidays": {"country": "US"}}
    ),
    Calendar(
        time_zone="Europe/Berlin", hours={"sun": ["01:30-02:30", "02:45-03:30"], "wed": ["22:00-24:00"]}
    ),
    Calendar(time_zone="Australia/Lord_Howe", hours={"sun": ["01:45-02:15"], "sat": ["00:00-24:00"]}),
]


@settings(max_examples=150, deadline=None)
# around the DST switches, which random instants seldom hit
@example(cal=CALENDARS[2], instant=datetime(2027, 3, 28, 0, 0, tzinfo=UTC))
@example(cal=CALENDARS[2], instant=datetime(2027, 10, 31, 0, 45, tzinfo=UTC))
@example(cal=CALENDARS[3], instant=datetime(2027, 10, 2, 14, 0, tzinfo=UTC))
@example(cal=CALENDARS[3], instant=datetime(2027, 4, 3, 14, 0, tzinfo=UTC))
@given(
    cal=st.sampled_from(CALENDARS),
    instant=st.datetimes(datetime(2026, 1, 1), datetime(2028, 12, 31), timezones=st.just(UTC)),
)
def test_next_open_is_the_first_open_instant(cal: Calendar, instant: datetime) -> None:
    opens = next_open(cal, instant)
    assert opens is not None and opens >= instant
    assert is_open(cal, opens)
    if opens > instant:  # closed from `instant` up to `opens`: probe a few points in between
        gap = opens - instant
        for probe in [instant + gap * k / 7 for k in range(7)] + [opens - timedelta(microseconds=1)]:
            assert not is_open(cal, probe), probe
    closes = next_close(cal, opens)
    assert closes is not None and closes > opens and not is_open(cal, closes)
    assert is_open(cal, closes - timedelta(microseconds=1))
