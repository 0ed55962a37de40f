"""Hypothesis against the engine in process: Alertmanager v4 webhooks (valid and broken) and
incident API calls. Whatever is sent: no 5xx; every 4xx is a JSON error that names the problem;
every incident a 200-accepted webhook touched can be read and listed; and every page that was
accepted is delivered (nothing crashes in a notifier, nothing is dead-lettered)."""

import gzip
import json
import urllib.parse
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.fuzz_harness import LiveEngine, Reply, incidents
from tests.servers import RedisServer

pytestmark = pytest.mark.redis
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
EDGE_STAMPS = [
    "0001-01-01T00:00:00Z",
    "1969-12-31T23:59:59.999Z",
    "9999-12-31T23:59:59.999999999Z",
    "9999-12-31T23:00:00-23:59",
    "2026-11-23T17:48:29.795123456+14:00",
]


@pytest.fixture(scope="module")
def engine(redis_server: RedisServer) -> Iterator[LiveEngine]:
    redis_server.start()
    redis_server.flushall()
    with LiveEngine(redis_server.url) as live:
        yield live


# ---- strategies ----------------------------------------------------------------------------------

texts = st.text(max_size=60)  # any Unicode Hypothesis makes: controls, NUL, RTL, astral planes
label_names = st.one_of(st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,15}", fullmatch=True), texts)
labels = st.dictionaries(label_names, texts, max_size=6)


@st.composite
def stamps(draw: st.DrawFn) -> str:
    if draw(st.booleans()):
        return draw(st.sampled_from(EDGE_STAMPS))
    y, mo, d = draw(st.integers(1, 9999)), draw(st.integers(1, 12)), draw(st.integers(1, 28))
    h, mi, s = draw(st.integers(0, 23)), draw(st.integers(0, 59)), draw(st.integers(0, 59))
    frac = draw(st.sampled_from(["", ".1", ".795", ".123456789"]))
    zone = draw(st.sampled_from(["Z", "+00:00", "-23:59", "+14:00", "+05:30"]))
    return f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}{frac}{zone}"


alerts = st.fixed_dictionaries(
    {
        "status": st.sampled_from(["firing", "resolved"]),
        "labels": st.builds(
            lambda ls, sev: {"alertname": "Fuzz", **ls, **({"severity": sev} if sev else {})},
            labels,
            st.sampled_from([None, "critical", "warning"]),
        ),
        "startsAt": stamps(),
    },
    optional={
        "annotations": st.dictionaries(texts, st.text(max_size=300), max_size=4),
        "endsAt": stamps(),
        "generatorURL": st.one_of(st.just("http://prometheus:9090/graph?g0.expr=up"), texts),
        "fingerprint": st.from_regex(r"[0-9a-f]{16}", fullmatch=True),
    },
)

webhooks = st.fixed_dictionaries(
    {
        "version": st.just("4"),
        "groupKey": st.text(min_size=1, max_size=80),
        "status": st.sampled_from(["firing", "resolved"]),
        "receiver": texts,
        "alerts": st.lists(alerts, max_size=4),
    },
    optional={"truncatedAlerts": st.integers(0, 10), "externalURL": texts, "groupLabels": labels},
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=8,
)


@st.composite
def broken(draw: st.DrawFn, payload: dict[str, Any]) -> bytes:
    """A webhook a buggy or hostile sender might produce: one of several kinds of damage."""
    kind = draw(st.sampled_from(["drop", "retype", "alert", "surrogate", "bigint", "truncate", "bytes"]))
    if kind == "drop" and payload:
        payload.pop(draw(st.sampled_from(sorted(payload))))
    elif kind == "retype":
        payload[draw(st.sampled_from([*payload, "alerts"]))] = draw(json_values)
    elif kind == "alert" and payload.get("alerts"):
        alert = payload["alerts"][0]
        alert[draw(st.sampled_from([*alert, "labels"]))] = draw(json_values)
    text = json.dumps(payload)
    if kind == "surrogate":
        return text.replace('"Fuzz"', '"Fu\\ud800zz"', 1).encode()
    if kind == "bigint":
        return text.replace('"4"', "1" + "0" * draw(st.integers(300, 6000)), 1).encode()
    if kind == "truncate":
        return text.encode()[: draw(st.integers(0, max(len(text) - 1, 0)))]
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    return text.encode()


def assert_json_error(reply: Reply) -> dict[str, Any]:
    assert reply.status < 500, reply.body[:500]
    assert reply.content_type.startswith("application/json"), (reply.status, reply.body[:200])
    err: dict[str, Any] = reply.json()
    assert isinstance(err["error"], str) and err["error"], err
    if reply.status == 422:  # names each field
        assert all(isinstance(d["field"], str) and d["message"] for d in err["detail"]), err
    return err


def accepted_can_be_read(engine: LiveEngine, reply: Reply) -> None:
    ids = reply.json()["incidents"]
    listed = {i["id"] for i in incidents(engine)}
    for incident_id in ids:
        one = engine.request("GET", f"/api/v1/incidents/{urllib.parse.quote(incident_id)}")
        assert one.status == 200, one.body[:300]
        assert one.json()["timeline"], "an incident always has a timeline"
        assert incident_id in listed


# ---- tests ----------------------------------------------------------------------------------------


@FUZZ
@given(payload=webhooks, ascii_only=st.booleans())
def test_valid_webhooks_are_stored_readable_and_listed(
    engine: LiveEngine, payload: dict[str, Any], ascii_only: bool
) -> None:
    reply = engine.request(
        "POST", "/api/v1/alertmanager", json.dumps(payload, ensure_ascii=ascii_only).encode()
    )
    assert reply.status == 200, reply.body[:500]
    accepted_can_be_read(engine, reply)


@FUZZ
@given(data=st.data(), payload=webhooks)
def test_broken_webhooks_get_a_json_4xx_and_never_a_5xx(
    engine: LiveEngine, data: st.DataObject, payload: dict[str, Any]
) -> None:
    raw = data.draw(broken(payload))
    encoding = data.draw(st.sampled_from([None, None, "gzip", "deflate", "br", "identity"]))
    if encoding in ("gzip", "deflate") and data.draw(st.booleans()):
        packed = gzip.compress(raw) if encoding == "gzip" else zlib.compress(raw)
        raw = data.draw(st.sampled_from([packed, packed[: len(packed) // 2], packed + b"junk"]))
    headers = {"Content-Type": "application/json", **({"Content-Encoding": encoding} if encoding else {})}
    reply = engine.request("POST", "/api/v1/alertmanager", raw, headers)
    if reply.status == 200:
        accepted_can_be_read(engine, reply)
    else:
        assert_json_error(reply)


ids = st.one_of(st.text(max_size=30), st.from_regex(r"[0-9a-f]-[0-9a-f]{12}", fullmatch=True))
actions = st.one_of(st.sampled_from(["ack", "unack", "resolve", "escalate", "snooze"]), st.text(max_size=12))
bodies = st.one_of(
    st.fixed_dictionaries(
        {}, optional={"by": json_values, "note": json_values, "duration": st.one_of(texts, json_values)}
    ),
    json_values,
)


@FUZZ
@given(use_real=st.booleans(), incident_id=ids, action=actions, body=bodies)
def test_incident_actions_never_give_a_5xx(
    engine: LiveEngine, use_real: bool, incident_id: str, action: str, body: object
) -> None:
    known = [i["id"] for i in incidents(engine)]
    if use_real and known:
        incident_id = known[len(incident_id) % len(known)]
    path = (
        f"/api/v1/incidents/{urllib.parse.quote(incident_id, safe='')}/{urllib.parse.quote(action, safe='')}"
    )
    reply = engine.request("POST", path, json.dumps(body).encode())
    if reply.status == 200:
        assert reply.json()["id"] == incident_id
    else:
        assert_json_error(reply)


queries = st.dictionaries(
    st.sampled_from(["status", "severity", "label", "limit", "other"]),
    st.one_of(texts, st.sampled_from(['job=~"(.|.|.|.)*z"', 'a=~"(?P<x>a)"', 'x!~"["', "100", "0"])),
    max_size=4,
)


@FUZZ
@given(query=queries)
def test_listing_with_any_query_never_gives_a_5xx(engine: LiveEngine, query: dict[str, str]) -> None:
    reply = engine.request("GET", "/api/v1/incidents?" + urllib.parse.urlencode(query))
    if reply.status == 200:
        assert isinstance(reply.json()["incidents"], list)
    else:
        assert_json_error(reply)


def test_every_accepted_page_was_delivered_and_nothing_crashed(engine: LiveEngine) -> None:
    """Runs after the fuzzers above (file order): what they made the engine page went out."""
    group = (Path(__file__).parent.parent / "fixtures" / "02-firing-group.json").read_bytes()
    assert engine.request("POST", "/api/v1/alertmanager", group).status == 200  # at least these pages
    engine.settle()
    assert engine.metric("escalation_dead_letters_total") == 0.0
    assert engine.metric("escalation_notifications_total", {"outcome": "failed"}) == 0.0
    assert engine.metric("escalation_notifications_total", {"outcome": "success"}) > 0
    assert len(engine.pd.events) == len(engine.pd.requests)  # the sink refused no event as malformed
