from collections.abc import AsyncIterator
from dataclasses import replace

import aiohttp
import pytest

from engine.errors import PermanentDeliveryError, RetryableDeliveryError
from engine.events import Action
from engine.messages import AlertSummary, Message
from engine.notifiers.pagerduty import PagerDutyNotifier, event_body
from tests.sinks import PagerDutySink, Reply, refused_url

KEY = "0123456789abcdef0123456789abcdef"

ALERT = AlertSummary(
    fingerprint="a1b2c3d4e5f60718",
    status="firing",
    labels={
        "alertname": "HighErrorRate",
        "service": "checkout",
        "team": "payments",
        "instance": "pod-1:8080",
    },
    annotations={
        "summary": "5xx ratio above 5%",
        "description": "checkout is returning 7.3% 5xx",
        "runbook_url": "https://runbooks.example/checkout",
    },
    starts_at="2026-11-23T17:48:29.795Z",
)

TRIGGER = Message(
    action=Action.TRIGGER,
    incident_id="inc-42",
    title="[P0] HighErrorRate checkout: 5xx ratio above 5%",
    body="line one\nline two",
    severity="P0",
    severity_rank=0,
    status="triggered",
    level=1,
    target="pagerduty:platform",
    address="platform",
    labels={"alertname": "HighErrorRate", "service": "checkout", "team": "payments"},
    alerts=(ALERT,),
    triggered_at="2026-11-23T17:48:30Z",
    incident_url="https://esc.example/incidents/inc-42",
)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
async def sink() -> AsyncIterator[PagerDutySink]:
    async with PagerDutySink() as s:
        yield s


def notifier(session: aiohttp.ClientSession, url: str, timeout_s: float = 0.5) -> PagerDutyNotifier:
    keys: dict[str, str | Exception] = {
        "platform": KEY,
        "broken": ValueError("environment variable X is not set"),
    }
    return PagerDutyNotifier(session, url, keys, timeout_s=timeout_s)


async def test_trigger_sends_full_event(session: aiohttp.ClientSession, sink: PagerDutySink) -> None:
    await notifier(session, sink.url).send(TRIGGER)

    assert sink.events == [
        {
            "routing_key": KEY,
            "dedup_key": "inc-42",
            "event_action": "trigger",
            "payload": {
                "summary": TRIGGER.title,
                "source": "checkout",
                "severity": "critical",
                "timestamp": "2026-11-23T17:48:30Z",
                "component": "checkout",
                "group": "payments",
                "class": "HighErrorRate",
                "custom_details": {
                    "severity": "P0",
                    "level": 1,
                    "labels": TRIGGER.labels,
                    "firing": 1,
                    "alert_count": 1,
                    "alerts": [
                        {
                            "fingerprint": "a1b2c3d4e5f60718",
                            "status": "firing",
                            "labels": {"instance": "pod-1:8080"},
                            "summary": "5xx ratio above 5%",
                            "description": "checkout is returning 7.3% 5xx",
                        }
                    ],
                },
            },
            "links": [
                {"href": "https://runbooks.example/checkout", "text": "Runbook"},
                {"href": "https://esc.example/incidents/inc-42", "text": "Incident"},
            ],
            "client": "escalation-engine",
            "client_url": "https://esc.example/incidents/inc-42",
        }
    ]
    headers = sink.requests[0].headers
    assert headers["Content-Type"] == "application/json"
    assert headers["User-Agent"].startswith("escalation-engine/")


@pytest.mark.parametrize("action", [Action.ACKNOWLEDGE, Action.RESOLVE])
async def test_ack_and_resolve_carry_only_key_and_action(
    session: aiohttp.ClientSession, sink: PagerDutySink, action: Action
) -> None:
    await notifier(session, sink.url).send(replace(TRIGGER, action=action, status="resolved", level=0))

    assert sink.events == [{"routing_key": KEY, "dedup_key": "inc-42", "event_action": str(action)}]


async def test_minimal_trigger_falls_back_for_optional_fields(
    session: aiohttp.ClientSession, sink: PagerDutySink
) -> None:
    bare = replace(TRIGGER, labels={}, alerts=(), triggered_at="", incident_url="")

    await notifier(session, sink.url).send(bare)

    event = sink.events[0]
    assert event["payload"] == {
        "summary": TRIGGER.title,
        "source": "escalation-engine",
        "severity": "critical",
        "custom_details": {
            "severity": "P0",
            "level": 1,
            "labels": {},
            "firing": 0,
            "alert_count": 0,
            "alerts": [],
        },
    }
    assert "links" not in event
    assert "client_url" not in event
    assert event["client"] == "escalation-engine"


def test_source_prefers_instance_label() -> None:
    labels = {"instance": "db-1:9100", "service": "db"}
    assert event_body(replace(TRIGGER, labels=labels), KEY)["payload"]["source"] == "db-1:9100"


async def test_summary_cut_at_1024_characters(session: aiohttp.ClientSession, sink: PagerDutySink) -> None:
    title = "é" * 1000 + "x" * 100  # multi-byte: the limit counts characters, not bytes

    await notifier(session, sink.url).send(replace(TRIGGER, title=title))

    assert sink.events[0]["payload"]["summary"] == title[:1024]


@pytest.mark.parametrize(
    ("rank", "expected"), [(0, "critical"), (1, "error"), (2, "warning"), (3, "info"), (7, "info")]
)
def test_severity_mapping(rank: int, expected: str) -> None:
    assert event_body(replace(TRIGGER, severity_rank=rank), KEY)["payload"]["severity"] == expected


async def test_oversized_event_drops_custom_details(
    session: aiohttp.ClientSession, sink: PagerDutySink
) -> None:
    huge = replace(ALERT, annotations={"description": "x" * 600_000})

    await notifier(session, sink.url).send(replace(TRIGGER, alerts=(huge,)))

    details = sink.events[0]["payload"]["custom_details"]
    assert list(details) == ["note"]
    assert len(sink.requests[0].body) < 512_000


async def test_400_is_permanent_with_pagerduty_message(
    session: aiohttp.ClientSession, sink: PagerDutySink
) -> None:
    sink.script(
        Reply(400, {"status": "invalid event", "message": "Event object is invalid", "errors": ["bad"]})
    )

    with pytest.raises(PermanentDeliveryError, match=r"HTTP 400.*Event object is invalid: bad"):
        await notifier(session, sink.url).send(TRIGGER)
    assert sink.events == []


async def test_sink_rejects_malformed_event_as_permanent(
    session: aiohttp.ClientSession, sink: PagerDutySink
) -> None:
    # An empty summary is invalid per the API; the real validation path answers 400.
    with pytest.raises(PermanentDeliveryError, match=r"payload\.summary"):
        await notifier(session, sink.url).send(replace(TRIGGER, title=""))


async def test_429_is_retryable_with_retry_after(session: aiohttp.ClientSession, sink: PagerDutySink) -> None:
    sink.script(Reply(429, {"status": "throttle"}, headers={"Retry-After": "7"}))

    with pytest.raises(RetryableDeliveryError) as info:
        await notifier(session, sink.url).send(TRIGGER)
    assert info.value.retry_after_s == 7


async def test_429_without_retry_after(session: aiohttp.ClientSession, sink: PagerDutySink) -> None:
    sink.script(Reply(429))

    with pytest.raises(RetryableDeliveryError) as info:
        await notifier(session, sink.url).send(TRIGGER)
    assert info.value.retry_after_s is None


async def test_500_is_retryable_then_succeeds(session: aiohttp.ClientSession, sink: PagerDutySink) -> None:
    sink.script(Reply(500, {"status": "error", "message": "boom"}))
    pd = notifier(session, sink.url)

    with pytest.raises(RetryableDeliveryError, match="HTTP 500"):
        await pd.send(TRIGGER)
    await pd.send(TRIGGER)

    assert len(sink.requests) == 2
    assert len(sink.events) == 1


async def test_connection_refused_is_retryable(session: aiohttp.ClientSession) -> None:
    with pytest.raises(RetryableDeliveryError, match="platform"):
        await notifier(session, refused_url("/v2/enqueue")).send(TRIGGER)


async def test_timeout_is_retryable(session: aiohttp.ClientSession, sink: PagerDutySink) -> None:
    sink.script(Reply(202, {"status": "success"}, delay_s=5))

    with pytest.raises(RetryableDeliveryError, match=r"no response within 0\.05s"):
        await notifier(session, sink.url, timeout_s=0.05).send(TRIGGER)


async def test_unknown_service_is_permanent(session: aiohttp.ClientSession, sink: PagerDutySink) -> None:
    with pytest.raises(PermanentDeliveryError, match="'nope' is not configured"):
        await notifier(session, sink.url).send(replace(TRIGGER, address="nope"))
    assert sink.requests == []


async def test_unresolved_routing_key_is_permanent(
    session: aiohttp.ClientSession, sink: PagerDutySink
) -> None:
    with pytest.raises(PermanentDeliveryError, match=r"'broken'.*environment variable X is not set"):
        await notifier(session, sink.url).send(replace(TRIGGER, address="broken"))
    assert sink.requests == []


async def test_routing_key_never_appears_in_errors(
    session: aiohttp.ClientSession, sink: PagerDutySink
) -> None:
    sink.script(Reply(403, {"message": "forbidden"}))

    with pytest.raises(PermanentDeliveryError) as info:
        await notifier(session, sink.url).send(TRIGGER)
    assert KEY not in str(info.value)
