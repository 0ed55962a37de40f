"""The source-independent alert the rest of the engine works with."""

from dataclasses import dataclass, field
from enum import StrEnum


class AlertStatus(StrEnum):
    FIRING = "firing"
    RESOLVED = "resolved"


@dataclass(frozen=True, slots=True)
class Alert:
    fingerprint: str
    status: AlertStatus
    labels: dict[str, str]
    starts_at_ms: int
    ends_at_ms: int | None = None
    annotations: dict[str, str] = field(default_factory=dict)
    generator_url: str = ""
    group_key: str = ""  # the sender's grouping (Alertmanager groupKey); "" when none


def fingerprint(labels: dict[str, str]) -> str:
    """Alertmanager's label-set fingerprint (FNV-1a 64 over sorted name/value pairs)."""
    h = 14695981039346656037
    for name in sorted(labels):
        for part in (name, labels[name]):
            for b in part.encode("utf-8"):
                h = ((h ^ b) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
            h = ((h ^ 0xFF) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"
