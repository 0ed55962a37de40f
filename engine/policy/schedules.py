"""On-call schedules: who is on call at an instant, and when that changes (GoAlert/PagerDuty semantics).

A schedule has one IANA time zone, layers (rotations; the first is the lowest), dated overrides and an
optional fallback target. An override beats every layer; otherwise the highest layer with someone on
call answers; otherwise nobody is on call and the caller pages `fallback`.

- Hand-offs follow the local wall clock. Shift k of a layer starts at the local time
  `start + handoff + k * shift`, counted on the local calendar: whole days for 1d, 2d, 1w...; for
  shifts under a day (which must divide 24h) the times `handoff + j * shift` of each local day. So a
  daily 09:00 rotation hands off at 09:00 on both sides of a DST switch, and that shift lasts 23h or 25h.
- A local time that happens twice (autumn) means its first occurrence (fold=0). A local time that does
  not exist (spring gap: 02:30 on 2027-03-28 in Europe/Berlin) means the moment the clocks jump
  (03:00 CEST). Both are "the first instant at which the wall clock reads that time or later", which
  keeps hand-offs in order; Python's own fold=0 reading of a gap (03:30) would not.
- A layer has nobody on call before its first hand-off, nor outside its restriction windows. A window
  runs `from` to `to` local time on each listed day; `to` at or before `from` runs past midnight,
  and equal times (the default) mean the whole day.
- Fairness with restrictions (GoAlert issue #55): the turn passes only over *active* shifts, those
  whose local span overlaps a restriction window. A shift entirely outside the windows consumes nobody's
  turn, so a weekday-only layer does not skip for ever the participant whose turn falls on weekends.
  Activeness is decided on the local calendar, so it repeats every week and counting turns is O(1).

Pure: time is always a parameter (a timezone-aware datetime or epoch milliseconds).
"""

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import cache, cached_property
from itertools import pairwise
from typing import Annotated, Literal
from zoneinfo import ZoneInfo

from pydantic import (
    AfterValidator,
    AliasChoices,
    BeforeValidator,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from engine.policy.base import Model, TimeZoneName
from engine.policy.durations import parse_duration_ms

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
DAY_MIN = 24 * 60
WEEK_MIN = 7 * DAY_MIN
HORIZON = timedelta(days=731)  # how far handoffs() looks: two years, leap day included
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]

_HHMM = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])")
_WHEN = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)?(Z|[+-][0-9]{2}:[0-9]{2})?"
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@cache
def _minutes(text: str) -> int:
    """Minutes after local midnight of an `HH:MM` time of day."""
    m = _HHMM.fullmatch(text)
    if not m:
        raise ValueError(f"time of day {text!r} is not HH:MM (00:00 to 23:59)")
    return int(m[1]) * 60 + int(m[2])


def _check_hhmm(text: str) -> str:
    _minutes(text)
    return text


def _expand_days(value: object) -> object:
    """`mon-fri` (or wrapping, `fri-mon`) stands for the days it spans."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list):
        return value  # pydantic reports the type
    days: list[object] = []
    for item in items:
        if isinstance(item, str) and "-" in item:
            first, _, last = item.partition("-")
            if first not in DAYS or last not in DAYS:
                raise ValueError(f"day range {item!r} is not DAY-DAY with days among {', '.join(DAYS)}")
            i, j = DAYS.index(first), DAYS.index(last)
            days.extend(DAYS[(i + d) % 7] for d in range((j - i) % 7 + 1))
        else:
            days.append(item)
    return days


SHIFT_SCHEMA = {
    "type": "string",
    "pattern": "^([0-9]+(w|d|h))+$",
    "description": "hours that divide 24h (8h, 12h) or whole days (1d, 1w)",
}


def _shift(value: object) -> int:
    if not isinstance(value, str):
        raise ValueError("expected a shift length such as 8h, 12h, 1d or 1w")
    ms = parse_duration_ms(value)
    # whole hours that divide the day, or whole days: hand-offs then land on the same local times
    if ms <= 0 or ms % HOUR_MS or (ms < DAY_MS and DAY_MS % ms) or (ms > DAY_MS and ms % DAY_MS):
        raise ValueError(f"shift {value!r} must divide 24h (1h, 2h, 3h, 4h, 6h, 8h, 12h) or be whole days")
    return ms


def _check_when(value: str | datetime) -> str | datetime:
    if isinstance(value, str) and not _WHEN.fullmatch(value):
        raise ValueError(f"{value!r} is neither RFC 3339 nor a local `YYYY-MM-DD HH:MM`")
    return value


HHMM = Annotated[str, AfterValidator(_check_hhmm)]
When = Annotated[str | datetime, AfterValidator(_check_when)]


class Restriction(Model):
    days: Annotated[list[Day], BeforeValidator(_expand_days), Field(min_length=1)]
    from_: HHMM = Field(default="00:00", alias="from")
    to: HHMM = "00:00"

    def length_min(self) -> int:
        return (_minutes(self.to) - _minutes(self.from_)) % DAY_MIN or DAY_MIN


@dataclass(frozen=True, slots=True)
class _Rota:
    """A layer compiled for the lookups oncall() and handoffs() repeat."""

    origin: datetime  # the local (naive) start of shift 0
    step: timedelta
    people: tuple[str, ...]
    turns: tuple[int, ...]  # turns[j]: active shifts among the first j of one period (len - 1 shifts)
    windows: tuple[tuple[tuple[int, int], ...], ...]  # per weekday: (from, length) in minutes

    def shift_start(self, k: int) -> datetime:
        """The local (naive) wall-clock time at which shift k starts."""
        return self.origin + k * self.step

    def turns_before(self, k: int) -> int:
        """How many of shifts 0..k-1 were active, i.e. whose turn shift k is."""
        period = len(self.turns) - 1
        return (k // period) * self.turns[period] + self.turns[k % period]

    def windows_on(self, day: date) -> Iterator[tuple[datetime, datetime]]:
        """The restriction windows (naive local) that open on local date `day`."""
        for opens, length in self.windows[day.weekday()]:
            start = datetime.combine(day, time()) + timedelta(minutes=opens)
            yield start, start + timedelta(minutes=length)


class Layer(Model):
    name: str = ""
    participants: list[Annotated[str, Field(min_length=1)]] = Field(min_length=1)
    shift: Annotated[int, BeforeValidator(_shift), WithJsonSchema(SHIFT_SCHEMA)]
    handoff: HHMM
    start: date
    restrictions: list[Restriction] = Field(default=[], validation_alias=AliasChoices("only", "restrictions"))

    @cached_property  # frozen, so computed once; a private attribute would be much slower to read
    def rota(self) -> _Rota:
        by_day = tuple(
            tuple((_minutes(r.from_), r.length_min()) for r in self.restrictions if day in r.days)
            for day in DAYS
        )
        return _Rota(
            origin=datetime.combine(self.start, time()) + timedelta(minutes=_minutes(self.handoff)),
            step=timedelta(milliseconds=self.shift),
            people=tuple(self.participants),
            turns=tuple(_active_prefix(self)),
            windows=by_day if self.restrictions else (),
        )


class Override(Model):
    user: str = Field(min_length=1)
    from_: When = Field(alias="from")
    to: When


class Schedule(Model):
    time_zone: TimeZoneName
    layers: list[Layer] = Field(default=[], validation_alias=AliasChoices("rotations", "layers"))
    overrides: list[Override] = []
    fallback: str | None = None

    @field_validator("fallback")
    @classmethod
    def _check_fallback(cls, value: str | None) -> str | None:
        # imported here: models will import this module to hold schedules
        from engine.policy.models import _check_target

        return None if value is None else _check_target(value)

    @model_validator(mode="after")
    def _check_overrides(self) -> "Schedule":
        _ = self.override_spans  # computing them checks them
        return self

    @cached_property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.time_zone)

    @cached_property
    def override_spans(self) -> tuple[tuple[datetime, datetime, str], ...]:
        """(from, to, user) in UTC, sorted, not overlapping."""
        spans = []
        for o in self.overrides:
            start, end = _when(o.from_, self.zone), _when(o.to, self.zone)
            if end <= start:
                raise ValueError(f"override for {o.user} from {o.from_} to {o.to}: `to` must be after `from`")
            spans.append((start, end, o.user))
        spans.sort()
        for (s1, e1, u1), (s2, e2, u2) in pairwise(spans):
            if s2 < e1:
                raise ValueError(
                    f"overrides overlap: {u1} {self._local(s1)} to {self._local(e1)}"
                    f" and {u2} {self._local(s2)} to {self._local(e2)}"
                )
        return tuple(spans)

    def _local(self, t: datetime) -> str:
        return t.astimezone(self.zone).isoformat(sep=" ", timespec="minutes")


def _wall(t: datetime, zone: ZoneInfo) -> datetime:
    return t.astimezone(zone).replace(tzinfo=None)


def _offset(local: datetime, zone: ZoneInfo, fold: int) -> timedelta:
    offset = zone.utcoffset(local if local.fold == fold else local.replace(fold=fold))
    assert offset is not None  # a ZoneInfo always has one
    return offset


def _instant(local: datetime, zone: ZoneInfo) -> datetime:
    """The first instant (UTC) at which the wall clock in `zone` reads `local` or later."""
    # PEP 495: fold=0 reads `local` with the offset in force before a transition, fold=1 after it
    before, after = _offset(local, zone, 0), _offset(local, zone, 1)
    early = (local - before).replace(tzinfo=UTC)
    if before >= after:
        return early  # exists; in an autumn overlap fold=0 is the first of the two readings
    # In a spring gap the clock jumps over `local`: find the jump, to the second (tzdb transitions
    # are whole seconds). Read with the later offset, `local` is an instant before the jump.
    lo = math.floor((local - after).replace(tzinfo=UTC).timestamp())
    hi = math.ceil(early.timestamp())
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _wall(datetime.fromtimestamp(mid, UTC), zone) >= local:
            hi = mid
        else:
            lo = mid
    return datetime.fromtimestamp(hi, UTC)


def parse_local(text: str, zone: ZoneInfo | str) -> datetime:
    """RFC 3339 with an offset (or Z) as given; `YYYY-MM-DD HH:MM[:SS]` as local time in `zone`.

    The result is aware, in `zone`. Local times in a DST gap or overlap resolve as the module says.
    """
    tz = zone if isinstance(zone, ZoneInfo) else ZoneInfo(zone)
    if not _WHEN.fullmatch(text):
        raise ValueError(f"{text!r} is neither RFC 3339 nor a local `YYYY-MM-DD HH:MM`")
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        value = _instant(value, tz)
    return value.astimezone(tz)


def _when(value: str | datetime, zone: ZoneInfo) -> datetime:
    if isinstance(value, str):
        return parse_local(value, zone).astimezone(UTC)
    return (_instant(value, zone) if value.tzinfo is None else value).astimezone(UTC)


def _utc(at: datetime | int) -> datetime:
    if isinstance(at, int):
        return _EPOCH + timedelta(milliseconds=at)
    if at.utcoffset() is None:
        raise ValueError(f"{at.isoformat()} has no time zone; pass an aware datetime or epoch ms")
    return at.astimezone(UTC)


def _active_prefix(layer: Layer) -> list[int]:
    if not layer.restrictions:
        return [0, 1]  # every shift is active: a period of one shift
    s = layer.shift // 60_000
    period = math.lcm(s, WEEK_MIN) // s  # shifts until the pattern of weekdays repeats
    windows = []  # minutes of the week, with copies a week either side so that wrapping needs no care
    for r in layer.restrictions:
        for day in r.days:
            a = DAYS.index(day) * DAY_MIN + _minutes(r.from_)
            windows += [(a + w, a + r.length_min() + w) for w in (-WEEK_MIN, 0, WEEK_MIN)]
    o = layer.start.weekday() * DAY_MIN + _minutes(layer.handoff)
    turns = [0]
    for j in range(period):
        a = (o + j * s) % WEEK_MIN
        active = s >= WEEK_MIN or any(ws < a + s and a < we for ws, we in windows)
        turns.append(turns[-1] + active)
    return turns


def _shift_at(rota: _Rota, zone: ZoneInfo, t: datetime) -> int:
    """The index of the shift holding `t`; -1 before the first hand-off."""
    k = max(-1, (_wall(t, zone) - rota.origin) // rota.step)
    # the wall-clock estimate is off by one at most, around a DST switch
    while _instant(rota.shift_start(k + 1), zone) <= t:
        k += 1
    while k >= 0 and _instant(rota.shift_start(k), zone) > t:
        k -= 1
    return k


def _in_window(rota: _Rota, zone: ZoneInfo, t: datetime) -> bool:
    day = _wall(t, zone).date()
    return any(
        _instant(a, zone) <= t < _instant(b, zone)
        for d in (day - timedelta(days=1), day)
        for a, b in rota.windows_on(d)
    )


def _rota_user(rota: _Rota, zone: ZoneInfo, t: datetime) -> str | None:
    k = _shift_at(rota, zone, t)
    if k < 0 or (rota.windows and not _in_window(rota, zone, t)):
        return None
    return rota.people[rota.turns_before(k) % len(rota.people)]


def _next_edge(rota: _Rota, zone: ZoneInfo, t: datetime) -> datetime | None:
    """The first instant after `t` at which this layer's answer may change."""
    k = _shift_at(rota, zone, t)
    # with one participant only the first hand-off changes anything
    edges = [_instant(rota.shift_start(k + 1), zone)] if k < 0 or len(rota.people) > 1 else []
    if rota.windows:
        day = _wall(t, zone).date()
        for d in range(-1, 8):  # every window opens within a week
            for a, b in rota.windows_on(day + timedelta(days=d)):
                edges += [x for x in (_instant(a, zone), _instant(b, zone)) if x > t]
    return min(edges, default=None)


def oncall(schedule: Schedule, at: datetime | int) -> list[str]:
    """Who is on call at `at` (aware datetime or epoch ms); [] for an empty slot (page `fallback`)."""
    t = _utc(at)
    for start, end, user in schedule.override_spans:
        if start <= t < end:
            return [user]
    zone = schedule.zone
    for layer in reversed(schedule.layers):
        who = _rota_user(layer.rota, zone, t)
        if who is not None:
            return [who]
    return []


def handoffs(schedule: Schedule, after: datetime | int, n: int) -> list[tuple[datetime, list[str]]]:
    """The next `n` instants strictly after `after` at which oncall() changes, with who is on call from
    then. Looks two years ahead at most, so it may return fewer.

    The times are aware, in the schedule's zone, for display; compare or subtract them in UTC: Python
    does both on the wall clock within one zone, and == across zones is False in an autumn overlap.
    """
    zone = schedule.zone
    t = _utc(after)
    limit = t + HORIZON
    current = oncall(schedule, t)
    rotas = [layer.rota for layer in schedule.layers]
    out: list[tuple[datetime, list[str]]] = []
    while len(out) < n:
        edges = [x for rota in rotas if (x := _next_edge(rota, zone, t)) is not None]
        for start, end, _ in schedule.override_spans:
            edges += [x for x in (start, end) if x > t]
        if not edges or min(edges) > limit:
            break
        t = min(edges)
        who = oncall(schedule, t)
        if who != current:
            out.append((t.astimezone(zone), who))
            current = who
    return out
