"""Typed timeline entries: what the API shows, and what reviews and reports are built from. Pure."""

from dataclasses import dataclass
from enum import StrEnum

import orjson


class EntryKind(StrEnum):
    # decided by the state machine
    OPENED = "opened"
    PAGED = "paged"
    HELD = "held"
    MAINTENANCE = "maintenance"
    ACKNOWLEDGED = "acknowledged"
    UNACKNOWLEDGED = "unacknowledged"
    RESOLVED = "resolved"
    SNOOZED = "snoozed"
    UNSNOOZED = "unsnoozed"
    ESCALATED = "escalated"
    ACK_TIMEOUT = "ack_timeout"
    SEVERITY_RAISED = "severity_raised"
    ALERT_JOINED = "alert_joined"
    ALERT_REFIRED = "alert_refired"
    ALERT_RESOLVED = "alert_resolved"
    STATUS_UPDATE = "status_update"  # "UPDATE #2 (identified): ..." by the incident commander
    REASSIGNED = "reassigned"
    UPDATE_DUE = "update_due"  # update_every passed without a status update: the commander reminded
    # recorded by delivery
    PAGE_SKIPPED = "page_skipped"
    NOBODY_ON_CALL = "nobody_on_call"
    DELIVERED = "delivered"
    DELIVERY_RETRY = "delivery_retry"
    DELIVERY_FAILED = "delivery_failed"
    FAILOVER = "failover"  # a person's page handed to their next contact method
    BREAKER = "breaker"  # a channel endpoint's circuit breaker opened or closed
    DEAD_LETTER = "dead_letter"  # kept for people to see and re-drive
    REDRIVEN = "redriven"


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    at_ms: int
    kind: EntryKind
    actor: str
    text: str

    def to_json(self) -> str:
        raw = {"at_ms": self.at_ms, "kind": self.kind.value, "actor": self.actor, "text": self.text}
        return orjson.dumps(raw).decode()

    @classmethod
    def from_json(cls, text: str | bytes) -> "TimelineEntry":
        raw = orjson.loads(text)
        return cls(int(raw["at_ms"]), EntryKind(raw["kind"]), str(raw["actor"]), str(raw["text"]))


def in_time_order(entries: list[TimelineEntry]) -> list[TimelineEntry]:
    """Entries by time; equal times keep the order they were written in.

    Writers stamp an entry when they make it, but a delivery outcome stamped just before a
    concurrent ack commits can be appended just after it: the stored order is not time order.
    """
    return sorted(entries, key=lambda e: e.at_ms)
