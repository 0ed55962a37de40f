"""Bodies seen lately are parsed once: Alertmanager re-sends an unchanged group byte for byte."""

import json
from pathlib import Path

import orjson
import pytest

from engine.errors import IngestError
from engine.ingest import alertmanager
from engine.ingest.alertmanager import parse_body

BODY = (Path(__file__).parent.parent / "fixtures" / "02-firing-group.json").read_bytes()


class Decoder:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, body: bytes) -> object:
        self.calls += 1
        return orjson.loads(body)


@pytest.fixture(autouse=True)
def empty_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(alertmanager, "_bodies", alertmanager._Bodies())


def variant(i: int) -> bytes:
    raw = json.loads(BODY)
    raw["groupKey"] = f"group-{i}"
    return json.dumps(raw).encode()


def test_the_same_bytes_are_parsed_once_and_give_what_a_fresh_parse_gives() -> None:
    decode = Decoder()
    first = parse_body(BODY, decode)
    again = parse_body(bytes(BODY), decode)
    assert again is first and decode.calls == 1
    payload, alerts = alertmanager.parse_payload(orjson.loads(BODY))
    assert first.alerts == tuple(alerts) and first.receiver == payload.receiver
    assert first.firing == sum(a.status.value == "firing" for a in alerts) == 3
    assert parse_body(variant(1), decode) is not first and decode.calls == 2


def test_the_cache_keeps_the_newest_bodies_only(monkeypatch: pytest.MonkeyPatch) -> None:
    size = len(variant(0))
    assert all(len(variant(i)) == size for i in range(4))
    monkeypatch.setattr(alertmanager, "CACHED_BYTES", 3 * size)
    decode = Decoder()
    for i in range(4):
        parse_body(variant(i), decode)
    assert len(alertmanager._bodies.parsed) == 3 and alertmanager._bodies.kept == 3 * size
    parse_body(variant(3), decode)
    assert decode.calls == 4  # the newest is kept
    parse_body(variant(0), decode)
    assert decode.calls == 5  # the oldest was let go


def test_a_big_body_is_not_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(alertmanager, "CACHED_BODY_BYTES", len(BODY) - 1)
    decode = Decoder()
    parse_body(BODY, decode)
    parse_body(BODY, decode)
    assert decode.calls == 2 and not alertmanager._bodies.parsed


def test_a_bad_body_fails_every_time_and_is_never_kept() -> None:
    raw = json.loads(BODY)
    raw["alerts"][1]["startsAt"] = "yesterday"
    bad = json.dumps(raw).encode()
    for _ in range(2):
        with pytest.raises(IngestError, match=r"alerts\[1\]\.startsAt"):
            parse_body(bad, orjson.loads)
    assert not alertmanager._bodies.parsed
