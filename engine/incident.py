"""The incident record and its (de)serialisation; the rules that change it live in escalation.py."""

from dataclasses import dataclass, field, fields
from enum import StrEnum
from operator import attrgetter
from typing import Any

import orjson

from engine.alerts import AlertStatus

# (severity, policy, rule) of firing alerts -> how many: the incident's aggregate, kept beside
# the alerts so a webhook that touches k of N alerts decides without reading the other N - k
FiringKey = tuple[str, str, str]


class Status(StrEnum):
    TRIGGERED = "triggered"
    ACKNOWLEDGED = "acknowledged"
    SNOOZED = "snoozed"
    RESOLVED = "resolved"


@dataclass(slots=True)
class AlertState:
    """One alert's own state inside its incident (partial resolution stays visible)."""

    fingerprint: str
    status: AlertStatus
    starts_at_ms: int
    labels: dict[str, str]
    annotations: dict[str, str] = field(default_factory=dict)
    ends_at_ms: int | None = None
    generator_url: str = ""
    severity: str = ""  # what the rules gave this alert
    policy: str = ""
    rule: str = ""

    @property
    def firing_key(self) -> FiringKey:
        return (self.severity, self.policy, self.rule)

    def to_json(self) -> bytes:
        """Stored in its own hash field named after the fingerprint (so not repeated inside)."""
        return orjson.dumps({n: getattr(self, n) for n in _ALERT_FIELDS})

    @classmethod
    def from_json(cls, fingerprint: str, text: str | bytes) -> "AlertState":
        raw: dict[str, Any] = orjson.loads(text)
        raw["status"] = AlertStatus(raw["status"])
        raw["fingerprint"] = fingerprint
        return cls(**raw)


@dataclass(slots=True)
class Incident:
    id: str
    key: str  # the identity the rules chose (group key, fingerprint or label values)
    title: str
    severity: str
    policy: str
    rule: str
    status: Status
    created_ms: int  # trigger time
    anchor_ms: int  # ladder deadlines are anchor + step offset: absolute, so lateness never accumulates
    step: int = 0  # next ladder step to page (flattened over repeats); steps below it were paged
    step_limit: int | None = None  # set after an ack under `until: resolved`: no repeat pages
    timer_ms: int | None = None  # the one pending wake-up, mirrored in the timers sorted set
    acked_by: str | None = None
    acked_ms: int | None = None
    ack_deadline_ms: int | None = None
    snoozed_until_ms: int | None = None
    resolved_by: str | None = None
    resolved_ms: int | None = None
    group_key: str = ""
    # the alerts read with it: all of them (store.load), or only those a webhook names
    # (store.load_by_key); decide() reads the others' state from `firing_by` and `alert_total`
    alerts: dict[str, AlertState] = field(default_factory=dict)
    firing_by: dict[FiringKey, int] | None = None  # None: not kept yet, counted from `alerts`
    alert_total: int | None = None  # every alert it ever held (None: len(alerts))
    # the labels every alert shares, kept as alerts join (labels never change, alerts never leave):
    # a message shows a few alerts, not all, and still names what they have in common. None with
    # one alert: that alert's labels (not stored twice; the store reads the alert with the record).
    # None with more: a record from before it was kept; then only a read of every alert knows.
    common: dict[str, str] | None = None
    paged: list[str] = field(default_factory=list)  # targets paged so far, for ack/resolve mirroring
    held: list[list[int]] = field(default_factory=list)  # [release_ms, step]: pages waiting for a calendar
    # status updates, in order: {"n": 1, "status": "investigating", "text": ..., "by": ..., "at_ms": ...}
    updates: list[dict[str, Any]] = field(default_factory=list)
    update_due_ms: int | None = None  # when the next status update is due (severity's update_every)
    assignee: str | None = None  # the target it was last reassigned to (a user, schedule, team...)
    opened_by: str = ""  # who opened it by hand ("" when an alert opened it)
    first_acked_ms: int | None = None  # the first acknowledgement (an unack or reassign clears acked_ms)
    first_acked_by: str | None = None

    @property
    def answered_ms(self) -> int | None:
        """When it was first acknowledged (for records from before first_acked_ms: the last)."""
        return self.first_acked_ms if self.first_acked_ms is not None else self.acked_ms

    duplicates: int = 0  # repeats seen; kept by the store as a counter beside the record, not in it
    version: int = 0  # compare-and-set guard, bumped by the store on each commit
    alerts_inline: bool = False  # read from a record of before per-alert fields: rewrite them all

    @property
    def is_open(self) -> bool:
        return self.status is not Status.RESOLVED

    def firing(self) -> list[AlertState]:
        """The firing alerts among those read (all of them after store.load)."""
        return [a for a in self.alerts.values() if a.status is AlertStatus.FIRING]

    def counts(self) -> dict[FiringKey, int]:
        """The firing aggregate, counted from the alerts when it is not kept yet."""
        if self.firing_by is None:
            self.firing_by = {}
            for a in self.firing():
                self.firing_by[a.firing_key] = self.firing_by.get(a.firing_key, 0) + 1
        if self.alert_total is None:
            self.alert_total = len(self.alerts)
        return self.firing_by

    def firing_count(self) -> int:
        return sum(self.counts().values())

    def shown(self, limit: int) -> list[AlertState]:
        """At most `limit` of the alerts read, the firing ones first, each kind oldest first: what a
        page, the console and the API list (a large incident's are read in no particular order)."""

        def rank(a: AlertState) -> tuple[bool, int]:
            return a.status is not AlertStatus.FIRING, a.starts_at_ms

        return sorted(self.alerts.values(), key=rank)[:limit]

    def set_alert(self, state: AlertState) -> None:
        """Add or replace one alert's state, keeping the aggregate in step."""
        counts = self.counts()
        old = self.alerts.get(state.fingerprint)
        if old is not None and old.status is AlertStatus.FIRING:
            left = counts[old.firing_key] - 1
            if left > 0:
                counts[old.firing_key] = left
            else:
                del counts[old.firing_key]
        elif old is None:
            if self.common is not None:  # a new dict: a clone shares the old one
                self.common = {k: v for k, v in self.common.items() if state.labels.get(k) == v}
            elif self.alert_total == 1 and len(self.alerts) == 1:  # the second: kept from now on
                (first,) = self.alerts.values()
                self.common = {k: v for k, v in first.labels.items() if state.labels.get(k) == v}
            self.alert_total = (self.alert_total or 0) + 1
        if state.status is AlertStatus.FIRING:
            counts[state.firing_key] = counts.get(state.firing_key, 0) + 1
        self.alerts[state.fingerprint] = state

    def clone(self) -> "Incident":
        """A copy decide() may change: alert states are replaced, never edited, so shallow is enough."""
        other = Incident(*_ALL(self))  # by the generated __init__: copy.copy was 12x slower
        other.alerts = dict(self.alerts)
        other.firing_by = dict(self.counts())
        other.paged = list(self.paged)
        other.held = [list(h) for h in self.held]
        other.updates = list(self.updates)
        return other

    def to_json(self) -> bytes:
        """The record without its alerts (each is stored apart, see AlertState.to_json)."""
        # by hand: dataclasses.asdict deep-copies everything and was half the cost of a commit
        raw = dict(zip(_STORED_FIELDS, _STORED(self), strict=True))
        raw["firing_by"] = [[*k, n] for k, n in self.counts().items()]
        if raw["common"] is None:  # one alert (or a record from before): nothing to store
            del raw["common"]
        return orjson.dumps(raw)

    @classmethod
    def from_json(cls, text: str | bytes, alerts: dict[str, AlertState] | None = None) -> "Incident":
        """A record and the alerts read beside it; a record of before per-alert fields holds its
        alerts inline (all of them): those are taken, and marked to be rewritten apart."""
        raw: dict[str, Any] = orjson.loads(text)
        if not _KNOWN.issuperset(raw):  # a later release's field: this one reads what it knows
            raw = {k: v for k, v in raw.items() if k in _KNOWN}
        raw.pop("version", None)  # written by the first release; the store's own field is the truth
        raw["status"] = Status(raw["status"])
        inline = raw.pop("alerts", None)
        if inline is not None:
            raw["alerts"] = {
                fp: AlertState(**{**a, "fingerprint": fp, "status": AlertStatus(a["status"])})
                for fp, a in inline.items()
            }
            raw["alerts_inline"] = True
            raw.pop("firing_by", None)
            raw.pop("alert_total", None)
        else:
            raw["alerts"] = alerts or {}
            counted = raw.pop("firing_by", None)
            if counted is not None:
                raw["firing_by"] = {(s, p, r): n for s, p, r, n in counted}
        return cls(**raw)


# the store keeps `version` and `duplicates` beside the record (a repeat bumps a counter, no
# rewrite) and each alert in a field of its own
_STORED_FIELDS = [
    f.name
    for f in fields(Incident)
    if f.name not in ("version", "duplicates", "alerts", "alerts_inline", "firing_by")
]
_ALERT_FIELDS = [f.name for f in fields(AlertState) if f.name != "fingerprint"]
_KNOWN = frozenset(f.name for f in fields(Incident))
_ALL = attrgetter(*(f.name for f in fields(Incident)))  # every field, in __init__'s order
_STORED = attrgetter(*_STORED_FIELDS)
