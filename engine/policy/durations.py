"""Go/Prometheus duration strings (`0s`, `15m`, `1h30m`, `1d`, `1w`, `500ms`) in milliseconds."""

import re

_UNIT_MS = {
    "ms": 1,
    "s": 1000,
    "m": 60_000,
    "h": 3_600_000,
    "d": 86_400_000,
    "w": 604_800_000,
    "y": 31_536_000_000,
}
_ORDER = ["y", "w", "d", "h", "m", "s", "ms"]
_PART = re.compile(r"([0-9]{1,15})(ms|y|w|d|h|m|s)")  # ASCII digits only, as in Go
MAX_MS = 100 * _UNIT_MS["y"]  # beyond any ladder or snooze, and within what timestamps can render


def parse_duration_ms(text: str) -> int:
    """Parse like Prometheus' model.ParseDuration: units largest first, each at most once."""
    if text == "0":
        return 0
    pos = 0
    total = 0
    last = -1
    for m in _PART.finditer(text):
        if m.start() != pos:
            break
        idx = _ORDER.index(m.group(2))
        if idx <= last:
            raise ValueError(f"invalid duration {text!r}: units must go from largest to smallest")
        last = idx
        total += int(m.group(1)) * _UNIT_MS[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise ValueError(f"invalid duration {text!r}: use Go/Prometheus syntax such as 30s, 15m, 1h30m")
    if total > MAX_MS:
        raise ValueError(f"duration {text!r} is too long: at most 100y")
    return total


def format_duration_ms(ms: int) -> str:
    """The canonical spelling (largest unit: weeks); parse_duration_ms gives `ms` back."""
    if ms < 0:
        raise ValueError(f"negative duration {ms} ms")
    if ms == 0:
        return "0s"
    out = []
    for unit in ["w", "d", "h", "m", "s", "ms"]:
        n, ms = divmod(ms, _UNIT_MS[unit])
        if n:
            out.append(f"{n}{unit}")
    return "".join(out)
