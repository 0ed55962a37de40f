"""Validated policy models. Unknown keys are errors: a typo must fail at `check`, not at 3 a.m."""

import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    PrivateAttr,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from engine.policy.base import Model
from engine.policy.calendars import Calendar
from engine.policy.channels import CHANNEL_KINDS, Channels
from engine.policy.durations import format_duration_ms, parse_duration_ms
from engine.policy.maintenance import Maintenance
from engine.policy.matchers import Matcher, parse_matcher
from engine.policy.schedules import Schedule
from engine.policy.templates import TemplateSet


def _duration(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError("expected a duration such as 30s, 15m or 1h30m")
    if isinstance(value, int):
        if value != 0:
            raise ValueError("a bare number is ambiguous; give a unit, e.g. 30s or 15m")
        return 0
    return parse_duration_ms(value)


DURATION_SCHEMA = {
    "type": ["string", "integer"],
    "pattern": "^([0-9]+(ms|y|w|d|h|m|s))+$|^0$",
    "description": "a Go/Prometheus duration such as 30s, 15m, 1h30m, 1d (0 alone may be a number)",
}
DurationMs = Annotated[int, BeforeValidator(_duration), WithJsonSchema(DURATION_SCHEMA)]

PEOPLE_KINDS = ("user", "schedule", "team")  # targets that name people; the rest name a channel
TARGET_KINDS = (*PEOPLE_KINDS, *(kind.name for kind in CHANNEL_KINDS))
_TARGET = re.compile(rf"^({'|'.join(TARGET_KINDS)}):(\S+)$")


def _check_target(target: str) -> str:
    if not _TARGET.match(target):
        kind, sep, _ = target.partition(":")
        if sep and kind not in TARGET_KINDS:
            raise ValueError(
                f"unknown target kind {kind!r} in {target!r}; use one of {', '.join(TARGET_KINDS)}"
            )
        raise ValueError(f"target {target!r} is not KIND:NAME with KIND one of {', '.join(TARGET_KINDS)}")
    return target


def _check_matcher(text: str) -> str:
    parse_matcher(text)
    return text


# Validated one item at a time, so that an error points at the list item (and its line).
MatcherText = Annotated[str, AfterValidator(_check_matcher)]
TargetText = Annotated[str, AfterValidator(_check_target)]


def _private(model: Model, name: str) -> Any:
    """A private attribute, read without pydantic's __getattr__ (1.5 µs, against 0.05 µs
    here): the state machine reads these for every decision (timer storm profile: 7 %)."""
    return model.__pydantic_private__[name]  # type: ignore[index]


class Severity(Model):
    description: str = ""
    ack_within: DurationMs | None = None
    # the runbooks' "P3: during business hours": outside the calendar, paging starts when it opens
    business_hours_only: str | None = None
    # the runbooks' "communicate status updates every 30 minutes": remind the incident commander
    update_every: DurationMs | None = None
    _calendar: Calendar | None = PrivateAttr(default=None)

    @property
    def calendar(self) -> Calendar | None:
        return _private(self, "_calendar")  # type: ignore[no-any-return]


class Rule(Model):
    name: str
    matchers: list[MatcherText] = Field(min_length=1)
    severity: str
    policy: str
    group_by: Literal["alertmanager", "alert"] | list[str] = "alertmanager"
    continue_: bool = Field(default=False, alias="continue")
    # the alert this rule matches is the pipeline's heartbeat (Watchdog): it opens no incident;
    # silent this long, an "alerting pipeline silent" incident opens under this rule
    heartbeat: DurationMs | None = None
    templates: str | None = None  # a set of `templates:` for this rule's incidents (over the policy's)
    parsed: tuple[Matcher, ...] = Field(default=(), exclude=True)

    @field_validator("group_by", mode="before")
    @classmethod
    def _check_group_by(cls, value: object) -> object:
        # Before the union: one clear message instead of one error per union member.
        if value in ("alertmanager", "alert"):
            return value
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise ValueError("group_by is 'alertmanager', 'alert' or a list of label names")
        if not value:
            raise ValueError("group_by needs at least one label (or 'alertmanager' / 'alert')")
        return value

    @model_validator(mode="after")
    def _parse(self) -> "Rule":
        if self.heartbeat is not None and (self.heartbeat <= 0 or self.continue_):
            raise ValueError("a heartbeat rule needs a heartbeat interval above 0s and no `continue`")
        object.__setattr__(self, "parsed", tuple(parse_matcher(m) for m in self.matchers))
        return self

    def matches(self, labels: dict[str, str]) -> bool:
        return all(m.matches(labels) for m in self.parsed)


class Team(Model):
    """team:NAME pages whoever its schedule has on call, or else all its members."""

    schedule: str | None = None
    members: list[str] = []

    @model_validator(mode="after")
    def _someone(self) -> "Team":
        if self.schedule is None and not self.members:
            raise ValueError("a team needs a schedule or members")
        return self


class Heartbeat(Model):
    """The `heartbeat:` section: a rule with `heartbeat:`, named "heartbeat", matched first."""

    matchers: list[MatcherText] = Field(min_length=1)
    interval: DurationMs
    severity: str
    policy: str

    def as_rule(self) -> "Rule":
        return Rule(
            name="heartbeat",
            matchers=self.matchers,
            severity=self.severity,
            policy=self.policy,
            heartbeat=format_duration_ms(self.interval),
        )


class Default(Model):
    severity: str
    policy: str


class Level(Model):
    after: DurationMs
    notify: list[TargetText] = Field(min_length=1)
    during: str | None = None  # a calendar: outside it, this level's pages wait until it opens
    _calendar: Calendar | None = PrivateAttr(default=None)

    @property
    def calendar(self) -> Calendar | None:
        """The `during` calendar, resolved when the policy set is validated."""
        return _private(self, "_calendar")  # type: ignore[no-any-return]


class EscalationPolicy(Model):
    until: Literal["acknowledged", "resolved"] = "acknowledged"
    ack_timeout: DurationMs | None = None
    repeat: int = Field(default=0, ge=0, le=100)
    repeat_after: DurationMs = 0
    levels: list[Level] = Field(min_length=1)
    on_empty: Literal["wait", "skip"] = "wait"  # skip: a level that reaches nobody moves on at once
    templates: str | None = None  # a set of `templates:` by name; the set named "default" otherwise

    @model_validator(mode="after")
    def _check_order(self) -> "EscalationPolicy":
        afters = [lvl.after for lvl in self.levels]
        if afters != sorted(afters):
            raise ValueError("levels must be in order of `after` (offsets from the trigger time)")
        if self.repeat and self.cycle_ms() == 0:
            raise ValueError("repeat needs repeat_after or a level with a later `after`")
        return self

    _empty: frozenset[int] = PrivateAttr(default=frozenset())

    def reaches_nobody(self, level: int) -> bool:
        """Set by the state machine for the instant it decides at (see escalation.ladder_of)."""
        return level in _private(self, "_empty")

    def cycle_ms(self) -> int:
        """Length of one pass of the ladder: last level's offset plus the pause before repeating."""
        return self.levels[-1].after + self.repeat_after

    def step_count(self) -> int:
        return len(self.levels) * (self.repeat + 1)

    def step_offset_ms(self, step: int) -> int:
        """Offset of flattened step `step` (cycle * levels + level) from the ladder's anchor."""
        cycle, level = divmod(step, len(self.levels))
        return cycle * self.cycle_ms() + self.levels[level].after


class NotifyRule(Model):
    """One step of a person's own notification rules, while the incident is unacknowledged."""

    after: DurationMs  # from the page that reached this person
    via: str  # a channel kind (their own address there: email, slack) or a target such as pagerduty:platform

    @field_validator("via")
    @classmethod
    def _check_via(cls, value: str) -> str:
        kind, sep, name = value.partition(":")
        channels = [k.name for k in CHANNEL_KINDS]
        if kind not in channels or (sep and not name):
            raise ValueError(
                f"via {value!r}: use a channel ({', '.join(channels)}) or a target such as pagerduty:NAME"
            )
        return value


class User(Model):
    name: str = ""
    email: str | None = None
    slack: str | None = None  # a Slack member id (U...): paged by DM
    telegram: str | None = None  # a Telegram chat id
    phone: str | None = None
    pagerduty: str | None = None  # a pagerduty service name to page for this user
    notify: list[NotifyRule] = []  # none: every contact method at once


class PolicySet(Model):
    """Every policy file merged into one validated whole."""

    severities: dict[str, Severity]
    rules: list[Rule] = []
    default: Default
    escalation_policies: dict[str, EscalationPolicy]
    users: dict[str, User] = {}
    schedules: dict[str, Schedule] = {}
    calendars: dict[str, Calendar] = {}
    templates: dict[str, TemplateSet] = {}  # named sets; "default" words every policy without one
    heartbeat: Heartbeat | None = None
    maintenance: list[Maintenance] = []  # incidents opened inside a window are recorded, not paged
    teams: dict[str, Team] = {}
    channels: Channels = Channels()
    # the label names some rule's matchers read, and (their values) -> the routes (routing.route),
    # for the rules and default they were made with
    _routes: tuple[Any, Any, tuple[str, ...], dict[Any, Any]] | None = PrivateAttr(default=None)

    def route_cache(self) -> tuple[tuple[str, ...], dict[Any, Any]]:
        # by identity: a model_copy shares private attributes, and one with other rules must not
        # see routes of the original's. Read from the private dict itself: every alert routed
        # comes here, and BaseModel.__getattr__ made this 1.5 % of a webhook's CPU
        private = self.__pydantic_private__
        held = None if private is None else private["_routes"]
        if held is None or held[0] is not self.rules or held[1] is not self.default:
            names = tuple(sorted({m.name for rule in self.rules for m in rule.parsed}))
            held = self._routes = (self.rules, self.default, names, {})
        return held[2], held[3]

    @model_validator(mode="after")
    def _heartbeat_first(self) -> "PolicySet":
        if self.heartbeat is not None:  # frozen: set once, here, while validating
            object.__setattr__(self, "rules", [self.heartbeat.as_rule(), *self.rules])
        return self

    @model_validator(mode="after")
    def _resolve_calendars(self) -> "PolicySet":
        """Levels and severities hold their calendar, so the state machine needs no lookups.
        A name that is not defined is reported (file:line) by the cross-references check."""
        for severity in self.severities.values():
            if severity.business_hours_only is not None:
                severity._calendar = self.calendars.get(severity.business_hours_only)
        for policy in self.escalation_policies.values():
            for level in policy.levels:
                if level.during is not None:
                    level._calendar = self.calendars.get(level.during)
        return self

    def summary(self) -> str:
        return (
            f"{len(self.severities)} severities, {len(self.rules)} rules, "
            f"{len(self.escalation_policies)} escalation policies, {len(self.users)} users, "
            f"{len(self.schedules)} schedules"
        )

    def severity_rank(self, name: str) -> int:
        """0 for the highest severity (listed first); a name no longer defined ranks below all."""
        names = list(self.severities)
        return names.index(name) if name in names else len(names)
