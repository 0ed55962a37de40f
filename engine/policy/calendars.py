"""Business-hours calendars: weekly opening hours in a time zone, minus holidays.

Pure: every function takes the instant to judge as a timezone-aware datetime; nothing here reads a clock.

Hours are wall-clock: "09:00-17:00" is 09:00 to 17:00 local time on that date, also on DST switch days
(so the window is 7 or 9 real hours long then). Each wall time maps to one instant:
- a wall time that occurs twice (autumn fall-back) means its first occurrence;
- a wall time that does not exist (spring-forward gap) means the instant of the jump, the first instant
  at which the local clock reads later than it. So a window starting in the gap opens at the jump
  ("02:30-04:00" in Europe/Berlin on 2027-03-28 opens at 03:00 CEST), one ending in it closes at the jump,
  and one wholly inside the gap is closed that day. The mapping never goes backwards, so windows keep
  their order and never overlap.
Holidays (explicit dates, and a country's public holidays from the `holidays` package) close the whole
local date in the calendar's zone. Results come in the time zone of the `at` given: pass UTC to get UTC,
where adding a timedelta is exact (on a local zone Python adds wall time).
"""

import re
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from functools import cached_property, lru_cache
from itertools import pairwise
from typing import Annotated, Literal
from zoneinfo import ZoneInfo

import holidays as holidays_lib
from pydantic import AfterValidator, BeforeValidator, WithJsonSchema, field_validator, model_validator

from engine.policy.base import Model, TimeZoneName

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
HORIZON_DAYS = 400  # next_open/next_close look this far ahead, then give up (None)

_WINDOW = re.compile(r"^(?:([01]\d|2[0-3]):([0-5]\d))-(?:([01]\d|2[0-3]):([0-5]\d)|(24:00))$")
_Span = tuple[int, int]  # minutes after local midnight, [start, end), end <= 1440


@lru_cache(maxsize=1024)
def _span(text: str) -> _Span:
    match = _WINDOW.match(text)
    if not match:
        raise ValueError(
            f"opening window {text!r} is not HH:MM-HH:MM, e.g. 09:00-17:00 (24:00 may end a day)"
        )
    start = int(match[1]) * 60 + int(match[2])
    end = 1440 if match[5] else int(match[3]) * 60 + int(match[4])
    if start >= end:
        raise ValueError(f"opening window {text!r} ends before it starts; split a night across two days")
    return start, end


def _check_window(text: str) -> str:
    _span(text)
    return text


WindowText = Annotated[str, AfterValidator(_check_window)]
# one window ("09:00-17:30") or a list of them; validated as a list, so an error is said once
Windows = Annotated[
    list[WindowText],
    BeforeValidator(lambda value: [value] if isinstance(value, str) else value),
    WithJsonSchema(
        {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}, mode="validation"
    ),
]


@lru_cache(maxsize=1)
def _supported() -> dict[str, list[str]]:
    return holidays_lib.list_supported_countries()


@lru_cache(maxsize=256)
def _country_holidays(country: str, subdivision: str | None, year: int) -> frozenset[date]:
    return frozenset(holidays_lib.country_holidays(country, subdiv=subdivision, years=year).keys())


def days_of(key: str) -> list[Weekday]:
    """`mon`, or a range such as `mon-fri` (wrapping ranges such as `fri-mon` allowed)."""
    first, _, last = key.partition("-")
    if first not in WEEKDAYS or (last and last not in WEEKDAYS):
        raise ValueError(f"unknown day {key!r}; use mon..sun or a range such as mon-fri")
    i, j = WEEKDAYS.index(first), WEEKDAYS.index(last or first)
    return [WEEKDAYS[(i + k) % 7] for k in range((j - i) % 7 + 1)]


class Holidays(Model):
    """Closed all day: explicit dates, and a country's (and subdivision's) public holidays."""

    country: str | None = None  # ISO 3166-1 alpha-2, e.g. DE, US
    subdivision: str | None = None  # a state or province of it, e.g. BY, CA
    dates: list[date] = []

    @model_validator(mode="after")
    def _check_country(self) -> "Holidays":
        if self.subdivision is not None and self.country is None:
            raise ValueError("subdivision needs a country")
        if self.country is None:
            return self
        supported = _supported()
        if self.country not in supported:
            raise ValueError(f"unknown holiday country {self.country!r}; use an ISO code such as DE or US")
        known = supported[self.country]
        if self.subdivision is not None and self.subdivision not in known:
            listed = ", ".join(known) or "none"
            raise ValueError(f"unknown subdivision {self.subdivision!r} of {self.country}; known: {listed}")
        return self


class Calendar(Model):
    time_zone: TimeZoneName
    # a day (mon) or a range (mon-fri) -> one window "09:00-17:30" or a list of them
    hours: dict[str, Windows] = {}
    holidays: Holidays = Holidays()

    @field_validator("hours")
    @classmethod
    def _check_overlap(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for day, windows in _week(value).items():
            ordered = sorted(windows, key=_span)
            for before, after in pairwise(ordered):
                if _span(after)[0] < _span(before)[1]:
                    raise ValueError(f"{day}: opening windows {before!r} and {after!r} overlap")
        return value

    @cached_property
    def week(self) -> dict[Weekday, list[str]]:
        """The opening windows of each weekday."""
        return _week(self.hours)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.time_zone)

    def is_holiday(self, day: date) -> bool:
        """Closed all day: an explicit holiday or one of the country's (and subdivision's)."""
        h = self.holidays
        if day in h.dates:
            return True
        return h.country is not None and day in _country_holidays(h.country, h.subdivision, day.year)


def _week(hours: dict[str, list[str]]) -> dict[Weekday, list[str]]:
    week: dict[Weekday, list[str]] = {}
    for key, windows in hours.items():
        for day in days_of(key):
            week.setdefault(day, []).extend(windows)
    return week


def _instant(zone: ZoneInfo, day: date, minute: int) -> datetime:
    """The instant (UTC) of wall time `minute` after local midnight of `day`; see the module doc."""
    wall = datetime.combine(day, time()) + timedelta(minutes=minute)
    first = wall.replace(tzinfo=zone).astimezone(UTC)  # fold=0: first occurrence, or after the jump
    if first.astimezone(zone).replace(tzinfo=None) == wall:
        return first
    # In a gap: the jump lies in (before, first]; find it to the second.
    before = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    offset_before = before.astimezone(zone).utcoffset()
    low, high = 0, int((first - before).total_seconds())  # offset changes in (low, high]
    while high - low > 1:
        mid = (low + high) // 2
        if (before + timedelta(seconds=mid)).astimezone(zone).utcoffset() == offset_before:
            low = mid
        else:
            high = mid
    return before + timedelta(seconds=high)


def _intervals(cal: Calendar, first_day: date, days: int) -> Iterator[tuple[datetime, datetime]]:
    """Open intervals [open, close) in UTC, in order, for `days` local dates from `first_day`."""
    zone = cal.zone
    for n in range(days):
        day = first_day + timedelta(days=n)
        windows = cal.week.get(WEEKDAYS[day.weekday()], [])
        if not windows or cal.is_holiday(day):
            continue
        for start, end in sorted(_span(w) for w in windows):
            opens, closes = _instant(zone, day, start), _instant(zone, day, end)
            if opens < closes:  # empty when wholly inside a spring-forward gap
                yield opens, closes


def _local_day(cal: Calendar, at: datetime) -> date:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"{at.isoformat()} has no time zone; calendars need a timezone-aware datetime")
    return at.astimezone(cal.zone).date()


def is_open(cal: Calendar, at: datetime) -> bool:
    """Whether `at` lies inside an opening window on a day that is not a holiday."""
    day = _local_day(cal, at)
    return any(opens <= at < closes for opens, closes in _intervals(cal, day - timedelta(days=1), 3))


def next_open(cal: Calendar, at: datetime) -> datetime | None:
    """`at` itself when open; else the next instant the calendar opens, in the time zone of `at`.

    None when it does not open within HORIZON_DAYS (no hours, say).
    """
    day = _local_day(cal, at)
    for opens, closes in _intervals(cal, day - timedelta(days=1), HORIZON_DAYS + 2):
        if closes > at:
            return at if opens <= at else opens.astimezone(at.tzinfo)
    return None


def next_close(cal: Calendar, at: datetime) -> datetime | None:
    """`at` itself when closed; else the instant the calendar next closes, in the time zone of `at`.

    Windows that touch (17:00 end, 17:00 start; a day ending at 24:00 and the next beginning at 00:00)
    count as one stretch. None when it stays open through HORIZON_DAYS (24/7 without holidays).
    """
    first_day = _local_day(cal, at) - timedelta(days=1)
    closing: datetime | None = None
    for opens, closes in _intervals(cal, first_day, HORIZON_DAYS + 2):
        if closing is None:
            if closes <= at:
                continue
            if opens > at:
                return at
            closing = closes
        elif opens > closing:
            return closing.astimezone(at.tzinfo)
        else:
            closing = max(closing, closes)
    if closing is None:
        return at
    horizon = _instant(cal.zone, first_day + timedelta(days=HORIZON_DAYS + 2), 0)
    return None if closing >= horizon else closing.astimezone(at.tzinfo)
