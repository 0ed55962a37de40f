"""Alertmanager webhook payload (version 4) -> Alerts. Unknown fields are ignored: Alertmanager adds some."""

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from engine.alerts import Alert, AlertStatus, fingerprint
from engine.errors import IngestError


def _rfc3339_ms(text: str) -> int | None:
    """Epoch ms; Go's zero time (year 1) means "no end time"."""
    if text.startswith("0001-01-01"):
        return None
    stamp = datetime.fromisoformat(text)
    if stamp.tzinfo is None:
        raise ValueError("timestamp needs a time zone (RFC 3339)")
    return int(stamp.timestamp() * 1000)


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class AlertmanagerAlert(_Model):
    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = {}
    starts_at: str = Field(alias="startsAt")
    ends_at: str = Field(default="0001-01-01T00:00:00Z", alias="endsAt")
    generator_url: str = Field(default="", alias="generatorURL")
    fingerprint: str | None = Field(default=None, pattern=r"^[0-9a-f]{16}$")

    @field_validator("starts_at", "ends_at")
    @classmethod
    def _check_time(cls, value: str) -> str:
        _rfc3339_ms(value)
        return value


class AlertmanagerPayload(_Model):
    version: Literal["4"]
    group_key: str = Field(alias="groupKey", min_length=1)
    status: Literal["firing", "resolved"]
    receiver: str = ""
    alerts: list[AlertmanagerAlert]
    truncated_alerts: int = Field(default=0, alias="truncatedAlerts", ge=0)
    external_url: str = Field(default="", alias="externalURL")


def parse_payload(raw: object) -> tuple[AlertmanagerPayload, list[Alert]]:
    """Validate a decoded JSON body; IngestError names every bad field (`alerts[0].startsAt: ...`)."""
    try:
        payload = AlertmanagerPayload.model_validate(raw)
    except ValidationError as exc:
        problems = [
            {"field": _loc(err["loc"]), "message": err["msg"]}
            for err in exc.errors(include_url=False, include_context=False, include_input=False)
        ]
        first = problems[0]
        raise IngestError(
            f"invalid Alertmanager payload: {first['field']}: {first['message']}", problems
        ) from None
    alerts = [
        Alert(
            fingerprint=a.fingerprint or fingerprint(a.labels),
            status=AlertStatus(a.status),
            labels=a.labels,
            starts_at_ms=_rfc3339_ms(a.starts_at) or 0,
            ends_at_ms=_rfc3339_ms(a.ends_at),
            annotations=a.annotations,
            generator_url=a.generator_url,
            group_key=payload.group_key,
        )
        for a in payload.alerts
    ]
    return payload, alerts


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"
