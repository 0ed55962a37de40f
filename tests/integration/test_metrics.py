"""/metrics after a varied workload: the contract's names are there, values follow what happened,
and cardinality stays bounded (no incident ids, fingerprints or free text in any label)."""

import re
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.test_api import TOKEN, Engine, body, wait_for
from tests.sinks import Reply

pytestmark = pytest.mark.redis
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CONTRACT = {
    "escalation_build_info",
    "escalation_webhook_requests_total",
    "escalation_alerts_received_total",
    "escalation_duplicate_alerts_total",
    "escalation_incidents_opened_total",
    "escalation_incidents",
    "escalation_escalations_total",
    "escalation_time_to_acknowledge_seconds",
    "escalation_time_to_resolve_seconds",
    "escalation_severity_ack_target_seconds",
    "escalation_notifications_total",
    "escalation_notification_duration_seconds",
    "escalation_dead_letters_total",
    "escalation_delivery_latency_seconds",
    "escalation_notifications_deferred_total",
    "escalation_breaker_state",
    "escalation_timer_lateness_seconds",
    "escalation_outbox_depth",
    "escalation_outbox_oldest_age_seconds",
    "escalation_store_operation_duration_seconds",
    "escalation_store_errors_total",
    "escalation_commit_conflicts_total",
    "escalation_config_last_reload_successful",
    "escalation_worker_restarts_total",
    "escalation_config_last_reload_success_timestamp_seconds",
}
# every series the workload below makes, with room for more severities; most are per channel
# kind (6 kinds: histogram buckets, outcomes, queues), none per incident, alert or address
MAX_SERIES = 800
UNBOUNDED = re.compile(r"^[0-9a-f]-[0-9a-f]{12}$|^[0-9a-f]{16}$|\s")  # incident ids, fingerprints, text


async def scrape(engine: Engine) -> dict[str, list[Any]]:
    text = await (await engine.client.get("/metrics")).text()
    samples: dict[str, list[Any]] = {}
    for family in text_string_to_metric_families(text):
        samples.setdefault(family.name, []).extend(family.samples)
    return samples


async def workload(engine: Engine) -> None:
    """Pages, repeats, a bad request, an ack, an escalation, a refused page and a resolve."""
    for name in ("01-firing-single.json", "02-firing-group.json", "05-truncated.json"):
        assert (await engine.post(body(name))).status == 200
    assert (await engine.post(body("02-firing-group.json"))).status == 200  # repeats
    assert (await engine.post(b"not json")).status == 400
    await wait_for(lambda: len(engine.pd.requests) == 3)  # three first pages
    incident_id = (await (await engine.post(body("05-truncated.json"))).json())["incidents"][0]
    for action, sent in (("ack", 4), ("escalate", 5), ("resolve", 6)):
        if action == "resolve":  # PagerDuty refuses this one
            engine.pd.script(Reply(400, {"status": "invalid event", "message": "no", "errors": ["x"]}))
        url = f"/api/v1/incidents/{incident_id}/{action}"
        r = await engine.client.post(url, json={"by": "bob"}, headers=AUTH)
        assert r.status == 200, await r.text()
        await wait_for(lambda n=sent: len(engine.pd.requests) == n)  # type: ignore[misc]


async def test_the_contracts_metrics_follow_a_workload_with_bounded_cardinality(engine: Engine) -> None:
    await workload(engine)
    samples = await scrape(engine)
    missing = (
        CONTRACT
        - {name.removesuffix("_total") for name in samples}
        - {n for n in CONTRACT if n.removesuffix("_total") in samples}
    )
    assert not missing, missing
    series = sum(len(s) for name, s in samples.items() if name.startswith("escalation_"))
    assert series <= MAX_SERIES, series
    for name, rows in samples.items():
        for row in rows:
            for label, text in row.labels.items():
                assert not UNBOUNDED.search(text), (name, label, text)

    def value(name: str, **labels: str) -> float:
        rows = [r for rs in samples.values() for r in rs if r.name == name]
        return float(sum(r.value for r in rows if all(r.labels.get(k) == v for k, v in labels.items())))

    assert value("escalation_webhook_requests_total", code="200") == 5
    assert value("escalation_webhook_requests_total", code="400") == 1
    assert value("escalation_time_to_acknowledge_seconds_count") == 1
    assert value("escalation_time_to_resolve_seconds_count") == 1
    assert value("escalation_escalations_total", level="1") >= 2  # first page + the escalate
    assert value("escalation_notifications_total", channel="pagerduty", outcome="failed") == 1
    assert value("escalation_store_operation_duration_seconds_count", operation="commit") > 0
    assert value("escalation_config_last_reload_successful") == 1
    assert value("escalation_build_info") == 1
