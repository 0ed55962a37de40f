"""Store.load_shown against a real redis-server: a message's read of a fleet-wide outage's incident
takes a few alerts, the firing ones first, and the record's counts and shared labels; a record
from before the labels were kept comes with every alert."""

import copy
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

from engine.ingest.alertmanager import parse_payload
from engine.messages import SHOWN_ALERTS
from engine.metrics import Metrics
from engine.processor import Processor
from engine.store import keys
from engine.store.redis import SHOWN_SCAN, RedisStore
from tests.clock import FakeClock
from tests.integration.test_store import payload
from tests.unit.escalation_helpers import POLICIES

pytestmark = pytest.mark.redis


def fleet(hosts: range, status: str = "firing") -> dict[str, Any]:
    """One Alertmanager group: HighRequestLatency on every host of `hosts`."""
    raw = payload("02-firing-group.json")
    first = raw["alerts"][0]  # type: ignore[index]
    alerts = []
    for n in hosts:
        a = copy.deepcopy(first)
        a["labels"]["instance"] = f"host-{n}:9100"
        a["fingerprint"] = f"{n:016x}"
        a["status"] = status
        if status == "resolved":
            a["endsAt"] = "2026-11-23T18:00:00Z"
        alerts.append(a)
    raw["alerts"] = alerts
    return raw


async def test_a_message_reads_a_few_alerts_the_firing_first(store: RedisStore) -> None:
    proc = Processor(store, lambda: POLICIES, FakeClock(), Metrics(CollectorRegistry()))
    [incident_id] = (await proc.ingest(parse_payload(fleet(range(900)))[1])).incidents
    await proc.ingest(parse_payload(fleet(range(890), "resolved"))[1])  # ten still firing

    inc = await store.load_shown(incident_id, SHOWN_ALERTS)

    assert inc is not None and inc.id == incident_id
    assert len(inc.alerts) == SHOWN_ALERTS
    firing = [a for a in inc.alerts.values() if a.status.value == "firing"]
    assert len(firing) == 10  # every firing one found among the resolved ones
    assert (inc.alert_total, inc.firing_count()) == (900, 10)
    assert inc.common is not None and "instance" not in inc.common
    assert inc.common["alertname"] == "HighRequestLatency"
    whole = await store.load(incident_id)
    assert whole is not None and whole.to_json() == inc.to_json()  # the same record, fewer alerts
    assert await store.load_shown("0-000000000000", SHOWN_ALERTS) is None


async def test_past_the_scan_budget_the_read_stays_small_and_the_counts_whole(store: RedisStore) -> None:
    """Beyond SHOWN_SCAN alert fields the read looks no further (a Redis step stays ~2 ms): the
    firing ones it did not reach are counted, not shown."""
    proc = Processor(store, lambda: POLICIES, FakeClock(), Metrics(CollectorRegistry()))
    [incident_id] = (await proc.ingest(parse_payload(fleet(range(SHOWN_SCAN * 3)))[1])).incidents
    await proc.ingest(parse_payload(fleet(range(SHOWN_SCAN * 3 - 10), "resolved"))[1])

    inc = await store.load_shown(incident_id, SHOWN_ALERTS)

    assert inc is not None and len(inc.alerts) == SHOWN_ALERTS
    assert (inc.alert_total, inc.firing_count()) == (SHOWN_SCAN * 3, 10)


async def test_a_record_from_before_the_shared_labels_comes_with_every_alert(store: RedisStore) -> None:
    proc = Processor(store, lambda: POLICIES, FakeClock(), Metrics(CollectorRegistry()))
    [incident_id] = (await proc.ingest(parse_payload(fleet(range(120)))[1])).incidents
    key = keys.incident(incident_id)
    raw = await store.client.hget(key, "d")
    assert isinstance(raw, bytes)
    record = orjson.loads(raw)
    del record["common"]  # as the release before wrote it
    await store.client.hset(key, "d", orjson.dumps(record))

    inc = await store.load_shown(incident_id, SHOWN_ALERTS)

    assert inc is not None and len(inc.alerts) == 120  # its shared labels are known from all
    assert inc.common is None and "instance" not in (await store.load(incident_id) or inc).alerts


async def test_the_second_alert_to_join_in_a_webhook_of_its_own_still_keeps_the_shared_labels(
    store: RedisStore,
) -> None:
    """A one-alert incident stores no shared labels (they are its alert's); read.lua hands that
    alert to the next webhook's decision even when it does not name it."""
    proc = Processor(store, lambda: POLICIES, FakeClock(), Metrics(CollectorRegistry()))
    [incident_id] = (await proc.ingest(parse_payload(fleet(range(1)))[1])).incidents
    raw = await store.client.hget(keys.incident(incident_id), "d")
    assert isinstance(raw, bytes) and b'"common"' not in raw

    await proc.ingest(parse_payload(fleet(range(1, 2)))[1])  # names the second alert only

    inc = await store.load_shown(incident_id, SHOWN_ALERTS)
    assert inc is not None and inc.alert_total == 2
    assert inc.common is not None and inc.common["alertname"] == "HighRequestLatency"
    assert "instance" not in inc.common
