"""Go/Prometheus durations: table tests of parsing and formatting, and the round trip as a property."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.policy.durations import MAX_MS, format_duration_ms, parse_duration_ms

SYNTAX = "use Go/Prometheus syntax such as 30s, 15m, 1h30m"


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("0", 0),
        ("0s", 0),
        ("500ms", 500),
        ("30s", 30_000),
        ("15m", 900_000),
        ("1h30m", 5_400_000),
        ("2h", 7_200_000),
        ("1d", 86_400_000),
        ("1w", 604_800_000),
        ("1y", 31_536_000_000),
        ("1h0m5s", 3_605_000),
        ("1m1ms", 60_001),
        ("90m", 5_400_000),
    ],
)
def test_parse(text: str, ms: int) -> None:
    assert parse_duration_ms(text) == ms


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("15x", f"invalid duration '15x': {SYNTAX}"),
        ("", f"invalid duration '': {SYNTAX}"),
        ("15", f"invalid duration '15': {SYNTAX}"),
        ("1.5h", f"invalid duration '1.5h': {SYNTAX}"),
        ("-1s", f"invalid duration '-1s': {SYNTAX}"),
        (" 1m", f"invalid duration ' 1m': {SYNTAX}"),
        ("1H", f"invalid duration '1H': {SYNTAX}"),
        ("1m1h", "invalid duration '1m1h': units must go from largest to smallest"),
        ("1h1h", "invalid duration '1h1h': units must go from largest to smallest"),
    ],
)
def test_parse_errors(text: str, error: str) -> None:
    with pytest.raises(ValueError, match="invalid duration") as caught:
        parse_duration_ms(text)
    assert str(caught.value) == error


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (0, "0s"),
        (1, "1ms"),
        (90_000, "1m30s"),
        (5_400_000, "1h30m"),
        (86_400_000, "1d"),
        (694_861_001, "1w1d1h1m1s1ms"),
        (31_536_000_000, "52w1d"),
    ],
)
def test_format(ms: int, text: str) -> None:
    assert format_duration_ms(ms) == text


def test_format_rejects_negative() -> None:
    with pytest.raises(ValueError, match="negative duration -1 ms"):
        format_duration_ms(-1)


@given(st.integers(min_value=0, max_value=MAX_MS))
def test_format_parses_back(ms: int) -> None:
    assert parse_duration_ms(format_duration_ms(ms)) == ms


@pytest.mark.parametrize("text", ["\u0661\u0662m", "\uff15m", "1\u0665s"])
def test_only_ascii_digits_as_in_go(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration_ms(text)


def test_durations_are_bounded() -> None:
    assert parse_duration_ms("100y") == MAX_MS
    with pytest.raises(ValueError, match="too long: at most 100y"):
        parse_duration_ms("100y1ms")
    with pytest.raises(ValueError, match="invalid duration"):  # not Python's int-digit limit
        parse_duration_ms("9" * 5000 + "y")


@given(
    st.lists(st.integers(min_value=0, max_value=999), min_size=6, max_size=6).map(
        lambda rest: [rest[0] % 50, *rest]  # years: within the 100y bound whatever the rest says
    )
)
def test_parse_then_format_is_canonical(counts: list[int]) -> None:
    """Any valid spelling formats to one canonical text, which parses to the same value."""
    text = "".join(f"{n}{unit}" for n, unit in zip(counts, ["y", "w", "d", "h", "m", "s", "ms"], strict=True))
    ms = parse_duration_ms(text)
    canonical = format_duration_ms(ms)
    assert parse_duration_ms(canonical) == ms
    assert format_duration_ms(parse_duration_ms(canonical)) == canonical
