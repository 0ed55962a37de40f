"""Accepted means paged: each hostile-input defect found by hand, as a regression test.

Whatever the edge accepts can be stored, listed, rendered and delivered; whatever it refuses
gets a 4xx JSON error naming the problem; nothing gives a 500 or blocks the engine.
"""

import asyncio
import gzip
import json
import logging
import zlib
from collections.abc import Callable
from typing import Any

import pytest

from tests.integration.test_api import TOKEN, Engine, body, wait_for

pytestmark = pytest.mark.redis
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def with_alert(**changes: Any) -> dict[str, Any]:
    b = body("01-firing-single.json")
    alert = b["alerts"][0]
    for key, value in changes.items():
        if key in ("labels", "annotations"):
            alert[key].update(value)
        else:
            alert[key] = value
    return b


async def readable(engine: Engine, incident_id: str) -> dict[str, Any]:
    """The incident can be read, and every list that includes it still answers."""
    one = await engine.client.get(f"/api/v1/incidents/{incident_id}")
    assert one.status == 200, await one.text()
    listed = await engine.client.get("/api/v1/incidents")
    assert listed.status == 200, await listed.text()
    assert incident_id in [i["id"] for i in (await listed.json())["incidents"]]
    view: dict[str, Any] = await one.json()
    return view


@pytest.mark.parametrize("where", ["webhook", "action"])
async def test_an_integer_past_pythons_digit_limit_is_a_400(engine: Engine, where: str) -> None:
    huge = b"1" * 5000
    if where == "webhook":
        resp = await engine.post(b'{"version": "4", "truncatedAlerts": ' + huge + b"}")
    else:
        resp = await engine.client.post(
            "/api/v1/incidents/0-x/ack", data=b'{"n": ' + huge + b"}", headers=AUTH
        )
    assert resp.status == 400
    assert "not valid JSON" in (await resp.json())["error"]


async def test_a_count_out_of_range_is_a_422_naming_it(engine: Engine) -> None:
    b = body("01-firing-single.json")
    b["truncatedAlerts"] = 10**12
    resp = await engine.post(b)
    assert resp.status == 422
    assert "truncatedAlerts" in [d["field"] for d in (await resp.json())["detail"]]


@pytest.mark.parametrize(
    "stamp",
    ["9999-12-31T23:59:59.999999999Z", "9999-12-31T23:00:00-23:59", "1960-01-01T00:00:00+01:00"],
)
async def test_timestamps_at_the_calendars_edges_are_clamped_and_the_incident_renders_and_pages(
    engine: Engine, stamp: str
) -> None:
    resp = await engine.post(with_alert(startsAt=stamp, endsAt=stamp))
    assert resp.status == 200, await resp.text()
    [incident_id] = (await resp.json())["incidents"]
    view = await readable(engine, incident_id)
    assert view["alerts"][0]["starts_at"] in ("9999-12-31T23:59:59.999Z", "1970-01-01T00:00:00.000Z")
    await wait_for(lambda: len(engine.pd.events) == 1)  # and its page went out


@pytest.mark.parametrize(
    "stamp",
    [
        "00010101T000000+0100",
        "2026-11-23T17:48:29.795Z\u0000",
        "2026-02-30T00:00:00Z",
        "٢٠٢٦-11-23T17:48:29Z",
    ],
)
async def test_timestamps_that_are_not_rfc_3339_are_a_422_naming_the_field(
    engine: Engine, stamp: str
) -> None:
    resp = await engine.post(with_alert(startsAt=stamp))
    assert resp.status == 422
    assert "alerts[0].startsAt" in [d["field"] for d in (await resp.json())["detail"]]


@pytest.mark.parametrize(
    "alert",
    [
        {"labels": {"team": "\ud800"}},
        {"labels": {"\ud800": "x"}},
        {"annotations": {"summary": "broken \udfff text"}},
        {"labels": {"alertname": "\ud800"}, "fingerprint": None},
    ],
)
async def test_a_lone_surrogate_is_refused_before_anything_is_stored(
    engine: Engine, alert: dict[str, Any]
) -> None:
    b = with_alert(**alert)
    if alert.get("fingerprint", "") is None:
        del b["alerts"][0]["fingerprint"]
    # json.dumps writes a lone surrogate as the escape "\ud800", as a buggy sender would
    resp = await engine.post(json.dumps(b).encode())
    assert resp.status == 400
    assert "not valid JSON" in (await resp.json())["error"]
    listed = await engine.client.get("/api/v1/incidents")
    assert (await listed.json())["incidents"] == []


async def test_a_lone_surrogate_in_an_acks_by_is_refused(engine: Engine) -> None:
    [incident_id] = (await (await engine.post(body("01-firing-single.json"))).json())["incidents"]
    data = json.dumps({"by": "\ud800"}).encode()
    resp = await engine.client.post(f"/api/v1/incidents/{incident_id}/ack", data=data, headers=AUTH)
    assert resp.status == 400
    assert (await readable(engine, incident_id))["status"] == "triggered"


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_a_body_marked_compressed_that_is_not_is_a_400(engine: Engine, encoding: str) -> None:
    raw = json.dumps(body("01-firing-single.json")).encode()
    headers = {"Content-Encoding": encoding, **AUTH}
    resp = await engine.client.post("/api/v1/alertmanager", data=raw, headers=headers)
    assert resp.status == 400
    assert "decompress" in (await resp.json())["error"]


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_a_body_really_compressed_is_accepted(engine: Engine, encoding: str) -> None:
    raw = json.dumps(body("01-firing-single.json")).encode()
    packed = gzip.compress(raw) if encoding == "gzip" else zlib.compress(raw)
    headers = {"Content-Encoding": encoding, **AUTH}
    resp = await engine.client.post("/api/v1/alertmanager", data=packed, headers=headers)
    assert resp.status == 200, await resp.text()


@pytest.mark.parametrize(
    ("encoding", "damage", "status", "says"),
    [
        ("deflate", lambda b: b[:40], 400, "cut short"),  # aiohttp's own decoder left this one hanging
        ("deflate", lambda b: b + b"junk", 400, "after the stream's end"),
        ("gzip", lambda b: b[:40], 400, "cut short"),
        ("deflate", lambda b: b[2:-4], 200, ""),  # raw deflate, as some clients send it
    ],
)
async def test_a_damaged_compressed_body_is_answered_at_once(
    engine: Engine, encoding: str, damage: Callable[[bytes], bytes], status: int, says: str
) -> None:
    raw = json.dumps(body("01-firing-single.json")).encode()
    packed = gzip.compress(raw) if encoding == "gzip" else zlib.compress(raw)
    headers = {"Content-Encoding": encoding, **AUTH}
    async with asyncio.timeout(5):
        resp = await engine.client.post("/api/v1/alertmanager", data=damage(packed), headers=headers)
    assert resp.status == status, await resp.text()
    assert says in (await resp.json()).get("error", "")


async def test_a_compressed_body_that_inflates_past_the_limit_is_a_413(engine: Engine) -> None:
    bomb = zlib.compress(b'{"version": "4", "pad": "' + b"x" * (1 << 20) + b'"}')  # ~1 KiB -> 1 MiB
    headers = {"Content-Encoding": "deflate", **AUTH}
    resp = await engine.client.post("/api/v1/alertmanager", data=bomb, headers=headers)
    assert resp.status == 413


@pytest.mark.parametrize("encoding", ["br", "zstd", "compress"])
async def test_an_encoding_the_engine_does_not_speak_is_a_415(engine: Engine, encoding: str) -> None:
    headers = {"Content-Encoding": encoding, **AUTH}
    resp = await engine.client.post("/api/v1/alertmanager", data=b"{}", headers=headers)
    assert resp.status == 415
    assert "gzip, deflate or none" in (await resp.json())["error"]


async def test_a_catastrophic_regex_in_a_list_query_cannot_stall_the_engine(engine: Engine) -> None:
    await engine.post(with_alert(labels={"job": "a" * 2000}))
    # exponential in the value's length under a backtracking engine; linear under RE2
    query = {"label": 'job=~"(.|.|.|.|.|.|.|.)*z"'}
    listed, health = await asyncio.gather(
        engine.client.get("/api/v1/incidents", params=query), engine.client.get("/-/healthy")
    )
    assert listed.status == 200 and (await listed.json())["incidents"] == []
    assert health.status == 200


@pytest.mark.parametrize("pattern", ['job=~"(a"', 'job=~"(?=a)"', 'job=~"(a)\\\\1"'])
async def test_a_regex_re2_refuses_is_a_400_naming_it(engine: Engine, pattern: str) -> None:
    resp = await engine.client.get("/api/v1/incidents", params={"label": pattern})
    assert resp.status == 400
    assert "invalid regular expression" in (await resp.json())["error"]


@pytest.mark.parametrize("duration", ["\u0661\u0662m", "\uff15m", "9" * 5000 + "s"])
async def test_a_snooze_duration_that_go_would_refuse_is_a_422(engine: Engine, duration: str) -> None:
    [incident_id] = (await (await engine.post(body("01-firing-single.json"))).json())["incidents"]
    data = json.dumps({"by": "bob", "duration": duration})
    resp = await engine.client.post(f"/api/v1/incidents/{incident_id}/snooze", data=data, headers=AUTH)
    assert resp.status == 422
    assert "duration" in (await resp.json())["error"]


@pytest.mark.parametrize("limit", ["0", "-5", "\u0661\u0660", "1" * 5000, "1001"])
async def test_a_bad_list_limit_is_a_400(engine: Engine, limit: str) -> None:
    resp = await engine.client.get("/api/v1/incidents", params={"limit": limit})
    assert resp.status == 400
    assert (await resp.json())["error"].startswith("limit:")


async def test_a_client_that_disconnects_mid_body_is_logged_once_quietly(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server = engine.client.server
    _, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(
        b"POST /api/v1/alertmanager HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + TOKEN.encode() + b'\r\nContent-Length: 1000\r\n\r\n{"version"'
    )
    await writer.drain()
    writer.close()
    await writer.wait_closed()
    await asyncio.sleep(0.3)
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    health = await engine.client.get("/-/healthy")
    assert health.status == 200
