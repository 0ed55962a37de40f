"""Maintenance windows: incidents opened inside one are recorded, not paged. Pure.

Dated (`from`/`to`, RFC 3339 or with an offset) or weekly (`days`, local `from`/`to` in a
time zone; a `to` at or before `from` runs past midnight).
"""

from datetime import datetime, time
from functools import cached_property
from zoneinfo import ZoneInfo

from pydantic import AliasChoices, Field, field_validator, model_validator

from engine.policy.base import Model, TimeZoneName
from engine.policy.calendars import WEEKDAYS, days_of
from engine.policy.matchers import Matcher, parse_matcher
from engine.times import utc


def _hhmm(text: str) -> time:
    try:
        return time.fromisoformat(text)
    except ValueError:
        raise ValueError(f"expected a local time HH:MM, got {text!r}") from None


class Weekly(Model):
    days: list[str] = Field(min_length=1)  # mon..sun or ranges such as mon-fri
    from_: str = Field(validation_alias=AliasChoices("from", "from_"))
    to: str
    time_zone: TimeZoneName

    @field_validator("days")
    @classmethod
    def _check_days(cls, value: list[str]) -> list[str]:
        for key in value:
            days_of(key)
        return value

    @field_validator("from_", "to")
    @classmethod
    def _check_time(cls, value: str) -> str:
        _hhmm(value)
        return value

    def covers(self, at: datetime) -> bool:
        local = at.astimezone(ZoneInfo(self.time_zone))
        days = {d for key in self.days for d in days_of(key)}
        start, end, now = _hhmm(self.from_), _hhmm(self.to), local.time()
        today = WEEKDAYS[local.weekday()]
        yesterday = WEEKDAYS[(local.weekday() - 1) % 7]
        if start < end:
            return today in days and start <= now < end
        # past midnight: the evening of a listed day, or the early hours after it
        return (today in days and now >= start) or (yesterday in days and now < end)


class Maintenance(Model):
    name: str
    matchers: list[str] = Field(min_length=1)
    from_: datetime | None = Field(default=None, validation_alias=AliasChoices("from", "from_"))
    to: datetime | None = None
    weekly: Weekly | None = None

    @field_validator("matchers")
    @classmethod
    def _check_matchers(cls, value: list[str]) -> list[str]:
        for text in value:
            parse_matcher(text)
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> "Maintenance":
        dated = self.from_ is not None or self.to is not None
        if dated == (self.weekly is not None):
            raise ValueError("give either from and to (a dated window) or weekly, not both or neither")
        if dated:
            if self.from_ is None or self.to is None:
                raise ValueError("a dated window needs both from and to")
            if self.from_.tzinfo is None or self.to.tzinfo is None:
                raise ValueError("from and to need an offset, e.g. 2026-12-05T22:00:00Z")
            if self.to <= self.from_:
                raise ValueError("to must be after from")
        return self

    @cached_property
    def parsed(self) -> tuple[Matcher, ...]:
        return tuple(parse_matcher(m) for m in self.matchers)

    def covers(self, labels: dict[str, str], at_ms: int) -> bool:
        if not all(m.matches(labels) for m in self.parsed):
            return False
        at = utc(at_ms)
        if self.weekly is not None:
            return self.weekly.covers(at)
        return self.from_ is not None and self.to is not None and self.from_ <= at < self.to


def window_for(windows: list[Maintenance], labels: dict[str, str], at_ms: int) -> Maintenance | None:
    """The first window that covers an incident with these labels opening at `at_ms`."""
    return next((w for w in windows if w.covers(labels, at_ms)), None)
