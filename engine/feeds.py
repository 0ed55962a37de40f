"""On-call calendar feeds: who is on call when, as iCalendar, behind a per-feed secret. Pure.

A feed's token is an HMAC of its kind and name under the server's link secret: a URL that can
be pasted into a calendar app, revealing one schedule's (or one person's) shifts and nothing else.

A feed holds one VEVENT per shift: a stretch of time during which the same people are on call on
one schedule (a person's feed: during which that person is on call there, whoever else is too).
Shifts are found by walking the schedule's hand-offs (schedules.handoffs), never by sampling, so
they start and end exactly at the wall-clock hand-offs, DST included. A feed shows every shift that
overlaps its window with the shift's real start and end, looked for up to four weeks outside the
window; a shift longer than that is cut at a whole-week boundary (from the epoch), so that its
start, and with it the event's UID, stays put between refreshes instead of moving with "now".
"""

import base64
import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypedDict
from urllib.parse import quote

from icalendar import Calendar, Event, vDuration

from engine.policy.models import PolicySet
from engine.policy.schedules import HORIZON, Schedule, handoffs, oncall

KINDS = {"schedule": "schedules", "user": "users"}  # feed kind -> path segment

MINUTE_MS = 60_000
DAY_MS = 86_400_000
WEEK_MS = 7 * DAY_MS
PAST_MS = 7 * DAY_MS  # the window a feed shows: a week back ...
FUTURE_MS = 60 * DAY_MS  # ... and two months ahead
LOOK_MS = 4 * WEEK_MS  # how far outside the window a shift's real start or end is looked for
MAX_EVENTS = 2000  # per feed
REFRESH = timedelta(hours=1)  # how often calendar apps should fetch the feed again
PRODID = "-//escalation-engine//on-call feeds//EN"
UID_DOMAIN = "escalation-engine"
_BATCH = 64  # hand-offs asked of schedules.handoffs at a time
_HORIZON_MS = HORIZON // timedelta(milliseconds=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def feed_token(secret: bytes, kind: str, name: str) -> str:
    raw = hmac.new(secret, f"feed|{kind}|{name}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")[:32]


def feed_path(secret: bytes, kind: str, name: str) -> str:
    """The feed's path with its token: /api/v1/schedules/NAME.ics?token=... (or users/NAME.ics)."""
    return f"/api/v1/{KINDS[kind]}/{quote(name, safe='')}.ics?token={feed_token(secret, kind, name)}"


def feed_window(now_ms: int) -> tuple[int, int]:
    """The [start, end) in epoch ms that a feed fetched at `now_ms` shows."""
    return now_ms - PAST_MS, now_ms + FUTURE_MS


@dataclass(frozen=True, slots=True)
class Shift:
    """`people` on call on `schedule` from `start_ms` to `end_ms` (epoch ms, end excluded)."""

    schedule: str
    start_ms: int
    end_ms: int
    people: tuple[str, ...]


def _ms(t: datetime) -> int:
    return (t.astimezone(UTC) - _EPOCH) // timedelta(milliseconds=1)


def _utc(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)


def _segments(schedule: Schedule, lo: int, hi: int, limit: int) -> list[tuple[int, int, tuple[str, ...]]]:
    """[lo, hi) cut at every change of who is on call: (start, end, people), people () if nobody.
    Neighbours always differ (handoffs reports changes only). At most `limit` segments."""
    out: list[tuple[int, int, tuple[str, ...]]] = []
    start, who, cursor = lo, tuple(oncall(schedule, lo)), lo
    while cursor < hi and len(out) < limit:
        after = cursor
        batch = handoffs(schedule, after, _BATCH)
        for when, people in batch:
            at = _ms(when)
            if at >= hi:
                cursor = hi
                break
            out.append((start, at, who))
            start, who, cursor = at, tuple(people), at
        else:
            if len(batch) < _BATCH:  # handoffs found no further change within its horizon
                cursor = after + _HORIZON_MS
    if len(out) < limit:
        out.append((start, hi, who))
    return out[:limit]


def _bounds(start_ms: int, end_ms: int) -> tuple[int, int]:
    """How far to walk: the window widened by LOOK_MS, out to whole weeks from the epoch."""
    return (start_ms - LOOK_MS) // WEEK_MS * WEEK_MS, -((-end_ms - LOOK_MS) // WEEK_MS) * WEEK_MS


def schedule_shifts(policies: PolicySet, name: str, start_ms: int, end_ms: int) -> list[Shift]:
    """The shifts of schedule `name` that overlap [start_ms, end_ms), in order; KeyError if unknown."""
    schedule = policies.schedules[name]
    lo, hi = _bounds(start_ms, end_ms)
    return [
        Shift(name, a, b, who)
        for a, b, who in _segments(schedule, lo, hi, 2 * MAX_EVENTS + 1)
        if who and a < end_ms and b > start_ms
    ][:MAX_EVENTS]


def user_shifts(policies: PolicySet, user: str, start_ms: int, end_ms: int) -> list[Shift]:
    """The stretches during which `user` is on call on each schedule, overlapping the window."""
    lo, hi = _bounds(start_ms, end_ms)
    shifts: list[Shift] = []
    for name, schedule in policies.schedules.items():
        mine: list[tuple[int, int]] = []
        for a, b, who in _segments(schedule, lo, hi, 2 * MAX_EVENTS + 1):
            if user not in who:
                continue
            if mine and mine[-1][1] == a:  # still on call, with someone else beside or instead
                mine[-1] = (mine[-1][0], b)
            else:
                mine.append((a, b))
        shifts += [Shift(name, a, b, (user,)) for a, b in mine if a < end_ms and b > start_ms]
    shifts.sort(key=lambda s: (s.start_ms, s.schedule))
    return shifts[:MAX_EVENTS]


def feed_users(policies: PolicySet) -> list[str]:
    """Everyone who has a personal feed: the users, then anyone else a schedule names."""
    names = dict.fromkeys(policies.users)
    for schedule in policies.schedules.values():
        for layer in schedule.layers:
            names.update(dict.fromkeys(layer.participants))
        names.update(dict.fromkeys(o.user for o in schedule.overrides))
    return list(names)


def event_uid(kind: str, shift: Shift) -> str:
    """Stable across fetches: the same shift keeps its UID, so calendar apps update, not duplicate."""
    key = f"{kind}|{shift.schedule}|{shift.start_ms}|{','.join(shift.people)}"
    return f"oncall-{hashlib.sha256(key.encode()).hexdigest()[:24]}@{UID_DOMAIN}"


def _local(policies: PolicySet, shift: Shift, ms: int) -> str:
    zone = policies.schedules[shift.schedule].zone
    return _utc(ms).astimezone(zone).strftime("%a %Y-%m-%d %H:%M %Z")


def _event(policies: PolicySet, kind: str, shift: Shift, stamp: datetime) -> Event:
    people = ", ".join(shift.people)
    schedule = policies.schedules[shift.schedule]
    event = Event()
    event.add("uid", event_uid(kind, shift))
    event.add("dtstamp", stamp)
    event.add("dtstart", _utc(shift.start_ms))
    event.add("dtend", _utc(shift.end_ms))
    event.add("summary", f"On call: {people} ({shift.schedule})")
    event.add(
        "description",
        f"{people} on call on schedule {shift.schedule} ({schedule.time_zone}),"
        f" {_local(policies, shift, shift.start_ms)} to {_local(policies, shift, shift.end_ms)}.",
    )
    event.add("transp", "TRANSPARENT")  # being on call does not make anyone busy
    return event


def _calendar(policies: PolicySet, kind: str, title: str, shifts: Iterable[Shift], now_ms: int) -> bytes:
    cal = Calendar()
    cal.add("prodid", PRODID)
    cal.add("version", "2.0")
    cal.add("calscale", "GREGORIAN")
    cal.add("method", "PUBLISH")
    cal.add("x-wr-calname", title)
    cal.add("name", title)
    cal.add("refresh-interval", REFRESH, parameters={"VALUE": "DURATION"})
    cal.add("x-published-ttl", vDuration(REFRESH))
    stamp = _utc(now_ms // 1000 * 1000)  # DTSTAMP has whole seconds
    for shift in shifts:
        cal.add_component(_event(policies, kind, shift, stamp))
    return bytes(cal.to_ical())


def schedule_calendar(policies: PolicySet, name: str, start_ms: int, end_ms: int, now_ms: int) -> bytes:
    """Schedule `name`'s shifts overlapping [start_ms, end_ms) as iCalendar; KeyError if unknown."""
    shifts = schedule_shifts(policies, name, start_ms, end_ms)
    return _calendar(policies, "schedule", f"On call: {name}", shifts, now_ms)


def user_calendar(policies: PolicySet, user: str, start_ms: int, end_ms: int, now_ms: int) -> bytes:
    """`user`'s shifts on every schedule overlapping [start_ms, end_ms) as iCalendar."""
    shifts = user_shifts(policies, user, start_ms, end_ms)
    return _calendar(policies, "user", f"On call: {user}", shifts, now_ms)


class Upcoming(TypedDict):
    at: str  # RFC 3339, in the schedule's time zone
    oncall: list[str]


class Overview(TypedDict):
    name: str
    time_zone: str
    oncall: list[str]
    next: list[Upcoming]


def oncall_overview(policies: PolicySet, now_ms: int, next_n: int) -> list[Overview]:
    """Each schedule: who is on call at `now_ms` and the next `next_n` hand-offs (for API and console)."""
    out: list[Overview] = []
    for name, schedule in policies.schedules.items():
        upcoming = handoffs(schedule, now_ms, max(next_n, 0))
        out.append(
            {
                "name": name,
                "time_zone": schedule.time_zone,
                "oncall": oncall(schedule, now_ms),
                "next": [{"at": when.isoformat(), "oncall": who} for when, who in upcoming],
            }
        )
    return out
