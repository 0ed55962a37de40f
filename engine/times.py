"""Epoch milliseconds as people and APIs read them. Pure."""

from datetime import UTC, datetime, timedelta

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def rfc3339(ms: int) -> str:
    """Exact to the millisecond (integer arithmetic: a float loses the last digit near year 9999)."""
    stamp = _EPOCH + timedelta(milliseconds=ms)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def utc(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)


def epoch_ms(at: datetime) -> int:
    return (at - _EPOCH) // timedelta(milliseconds=1)
