"""The incident record and its (de)serialisation; the rules that change it live in escalation.py."""

import copy
import json
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any

from engine.alerts import AlertStatus


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
    alerts: dict[str, AlertState] = field(default_factory=dict)
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

    @property
    def is_open(self) -> bool:
        return self.status is not Status.RESOLVED

    def firing(self) -> list[AlertState]:
        return [a for a in self.alerts.values() if a.status is AlertStatus.FIRING]

    def clone(self) -> "Incident":
        """A copy decide() may change: alert states are replaced, never edited, so shallow is enough."""
        other = copy.copy(self)
        other.alerts = dict(self.alerts)
        other.paged = list(self.paged)
        other.held = [list(h) for h in self.held]
        other.updates = list(self.updates)
        return other

    def to_json(self) -> str:
        # by hand: dataclasses.asdict deep-copies everything and was half the cost of a commit
        raw = {name: getattr(self, name) for name in _STORED_FIELDS}
        raw["alerts"] = {fp: {n: getattr(a, n) for n in _ALERT_FIELDS} for fp, a in self.alerts.items()}
        return json.dumps(raw, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> "Incident":
        raw: dict[str, Any] = json.loads(text)
        raw.pop("version", None)  # written by the first release; the store's own field is the truth
        raw["status"] = Status(raw["status"])
        raw["alerts"] = {
            fp: AlertState(**{**a, "status": AlertStatus(a["status"])}) for fp, a in raw["alerts"].items()
        }
        return cls(**raw)


# the store keeps `version` and `duplicates` beside the record (a repeat bumps a counter, no rewrite)
_STORED_FIELDS = [f.name for f in fields(Incident) if f.name not in ("version", "duplicates")]
_ALERT_FIELDS = [f.name for f in fields(AlertState)]
