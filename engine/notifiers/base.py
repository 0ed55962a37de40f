"""What every channel adapter receives, and the one Protocol they all implement."""

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol


class Action(StrEnum):
    TRIGGER = "trigger"  # a page: first notification, escalation, repeat, re-trigger
    ACKNOWLEDGE = "acknowledge"
    RESOLVE = "resolve"


@dataclass(frozen=True, slots=True)
class AlertSummary:
    fingerprint: str
    status: str  # firing | resolved
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: str  # RFC 3339
    generator_url: str = ""


@dataclass(frozen=True, slots=True)
class Message:
    """One notification about one incident, addressed to one channel address."""

    action: Action
    incident_id: str
    title: str  # one line, e.g. "[P0] HighErrorRate checkout: 5xx ratio above 5%"
    body: str  # plain text, several lines
    severity: str  # the policy's severity name (P0..P3)
    severity_rank: int  # 0 = highest; PagerDuty maps 0 critical, 1 error, 2 warning, else info
    status: str  # incident status after the change: triggered | acknowledged | resolved | snoozed
    level: int  # 0-based ladder level that caused a trigger (0 for ack/resolve)
    target: str  # the policy target that led here, e.g. "user:sre-oncall" or "pagerduty:platform"
    address: str  # channel-specific: PagerDuty service name, webhook endpoint name, email address
    labels: dict[str, str] = field(default_factory=dict)  # labels common to the incident's alerts
    alerts: tuple[AlertSummary, ...] = ()
    triggered_at: str = ""  # RFC 3339 trigger time
    actor: str = ""  # who acked/resolved, when known
    incident_url: str = ""  # link to the incident in the engine's API
    decided_ms: int = 0  # when the engine decided this notification: retries of it share the value


class Notifier(Protocol):
    """Send one message; raise RetryableDeliveryError or PermanentDeliveryError on failure."""

    channel: str

    async def send(self, message: Message) -> None: ...
