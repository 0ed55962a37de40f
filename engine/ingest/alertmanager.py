"""Alertmanager webhook payload (version 4) -> Alerts. Unknown fields are ignored: Alertmanager adds some."""

import functools
import hashlib
import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from engine.alerts import Alert, AlertStatus, fingerprint
from engine.errors import IngestError

# RFC 3339 as Go writes it (time.RFC3339Nano): nothing before or after, ASCII digits only
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(?:([Zz])|([+-])(\d{2}):(\d{2}))",
    re.ASCII,
)
MAX_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z: the last instant every reader can render
MAX_COUNT = 1_000_000_000  # for counts such as truncatedAlerts: far above any real one
# Alertmanager re-sends an unchanged group byte for byte (firing alerts carry the zero endsAt):
# bodies seen lately are parsed once. Bounded by the bytes of the bodies kept; parsed, they take
# about twice that (4 MiB: about 1,400 three-alert webhooks, 8 MB of memory).
CACHED_BYTES = 4 * 1024 * 1024
CACHED_BODY_BYTES = 16 * 1024  # larger bodies are parsed each time


@functools.lru_cache(maxsize=4096)  # Alertmanager re-sends the same startsAt with every repeat
def _rfc3339_ms(text: str) -> int | None:
    """Epoch ms, clamped to 1970-01-01 .. 9999-12-31 UTC; Go's zero time (year 1) means "none".

    Clamped rather than refused: Alertmanager does not retry a 4xx, so refusing a webhook for
    one odd clock would drop every alert in it. What is stored can always be rendered.
    """
    found = _RFC3339.fullmatch(text)
    if found is None:
        raise ValueError("expected an RFC 3339 timestamp such as 2026-11-23T17:48:29.795Z")
    if text.startswith("0001-01-01"):
        return None
    year, month, day, hour, minute, second, frac, _zulu, sign, off_h, off_m = found.groups()
    if int(off_h or 0) > 23 or int(off_m or 0) > 59:
        raise ValueError("time zone offset out of range")
    offset = timedelta(hours=int(off_h or 0), minutes=int(off_m or 0)) * (-1 if sign == "-" else 1)
    try:
        stamp = datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second), tzinfo=timezone(offset)
        )
    except ValueError as exc:
        raise ValueError(f"not a valid date and time: {exc}") from None
    ms = int((stamp - _EPOCH) // timedelta(milliseconds=1)) + int((frac or "0").ljust(3, "0")[:3])
    return min(max(ms, 0), MAX_MS)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class AlertmanagerAlert(_Model):
    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = {}
    starts_at: str = Field(alias="startsAt", json_schema_extra={"format": "date-time"})
    ends_at: str = Field(
        default="0001-01-01T00:00:00Z", alias="endsAt", json_schema_extra={"format": "date-time"}
    )
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
    truncated_alerts: int = Field(default=0, alias="truncatedAlerts", ge=0, le=MAX_COUNT, strict=True)
    external_url: str = Field(default="", alias="externalURL")


def parse_payload(raw: object) -> tuple[AlertmanagerPayload, list[Alert]]:
    """Validate a decoded JSON body; IngestError names every bad field (`alerts[0].startsAt: ...`)."""
    try:
        payload = AlertmanagerPayload.model_validate(raw)
    except ValidationError as exc:
        problems = [
            {"field": field_path(err["loc"]), "message": err["msg"]}
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


def field_path(loc: tuple[int | str, ...]) -> str:
    """A pydantic error location as the request spells it: `alerts[0].startsAt`."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


@dataclass(frozen=True, slots=True)
class Parsed:
    """What a webhook handler needs of a body: shared by every repeat of it, so never changed."""

    receiver: str
    truncated_alerts: int
    alerts: tuple[Alert, ...]
    firing: int  # how many of the alerts are firing
    size: int  # of the body, in bytes


class _Bodies:
    """Parsed bodies by digest, oldest first, within CACHED_BYTES of bodies. An OrderedDict: a
    dict's oldest key is found by scanning past every key dropped since its last resize."""

    def __init__(self) -> None:
        self.parsed: OrderedDict[bytes, Parsed] = OrderedDict()
        self.kept = 0  # bytes of the bodies held

    def keep(self, digest: bytes, found: Parsed) -> None:
        self.parsed[digest] = found
        self.kept += found.size
        while self.kept > CACHED_BYTES:
            self.kept -= self.parsed.popitem(last=False)[1].size


_bodies = _Bodies()


def parse_body(body: bytes, decode: Callable[[bytes], object]) -> Parsed:
    """A body as `parse_payload` reads it (decoded by `decode`), from the cache when the same
    bytes came lately. A body that fails is never cached: it fails the same way every time."""
    digest = hashlib.blake2b(body, digest_size=16).digest()
    found = _bodies.parsed.get(digest)
    if found is not None:
        return found
    payload, alerts = parse_payload(decode(body))
    firing = sum(a.status is AlertStatus.FIRING for a in alerts)
    found = Parsed(payload.receiver, payload.truncated_alerts, tuple(alerts), firing, len(body))
    if len(body) <= CACHED_BODY_BYTES:
        _bodies.keep(digest, found)
    return found
