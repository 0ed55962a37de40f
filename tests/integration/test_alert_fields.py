"""Each alert in a hash field of its own: a webhook touching k alerts of an incident holding N
reads and writes k alert fields (not N), against a real redis-server."""

import asyncio
import copy
import json
from typing import Any

import pytest

from engine.alerts import AlertStatus
from engine.ingest.alertmanager import parse_payload
from engine.store import keys
from engine.store.redis import RedisStore
from tests.clock import FakeClock
from tests.integration.test_store import payload, processor

pytestmark = pytest.mark.redis
N = 300


def group(n: int, status: str = "firing", first: int = 0) -> dict[str, Any]:
    """One Alertmanager group (so one incident) of n alerts with distinct fingerprints."""
    raw = payload("02-firing-group.json")
    template = raw["alerts"][0]  # type: ignore[index]
    alerts = []
    for i in range(first, first + n):
        a = copy.deepcopy(template)
        a["fingerprint"] = f"{i:016x}"
        a["labels"] = {**a["labels"], "instance": f"host-{i}"}
        a["status"] = status
        if status == "resolved":
            a["endsAt"] = "2030-01-01T00:00:00Z"
        alerts.append(a)
    raw["alerts"] = alerts
    raw["status"] = status
    return raw


class Spy:
    """The arguments of the store's read and commit scripts, per call."""

    def __init__(self, store: RedisStore) -> None:
        self.reads: list[list[Any]] = []
        self.commits: list[list[Any]] = []
        for name, calls in (("read", self.reads), ("commit", self.commits)):
            script = store.scripts[name]

            def spied(*a: Any, _script: Any = script, _calls: list[list[Any]] = calls, **kw: Any) -> Any:
                _calls.append(list(kw.get("args") or []))
                return _script(*a, **kw)

            store.scripts[name] = spied


def alert_pairs(commit_args: list[Any]) -> int:
    """How many alert fields a commit wrote (the count after notes and outbox, see commit.lua)."""
    i = 10
    i += int(commit_args[i]) + 1  # notes
    i += int(commit_args[i]) + 1  # outbox
    return int(commit_args[i])


async def test_a_webhook_touching_three_alerts_of_300_reads_and_writes_three(store: RedisStore) -> None:
    proc = processor(store, FakeClock())
    opened = await proc.ingest(parse_payload(group(N))[1])
    incident_id = opened.incidents[0]
    spy = Spy(store)
    result = await proc.ingest(parse_payload(group(3, "resolved"))[1])
    assert result.incidents == [incident_id]
    assert [len(args) for args in spy.reads] == [3]  # three alert fields named, not 300
    assert [alert_pairs(args) for args in spy.commits] == [3]
    inc = await store.load(incident_id)
    assert inc is not None and inc.is_open
    assert len(inc.alerts) == N and len(inc.firing()) == N - 3 and inc.firing_count() == N - 3
    # the rest resolves: the aggregate alone says nothing fires any more, so it resolves
    await proc.ingest(parse_payload(group(N - 3, "resolved", first=3))[1])
    inc = await store.load(incident_id)
    assert inc is not None and not inc.is_open and inc.firing_count() == 0
    assert all(a.status is AlertStatus.RESOLVED for a in inc.alerts.values())


async def test_a_record_with_alerts_inline_is_read_whole_and_rewritten_apart(store: RedisStore) -> None:
    """Data written before per-alert fields: one JSON record holding every alert."""
    proc = processor(store, FakeClock())
    incident_id = (await proc.ingest(parse_payload(group(5))[1])).incidents[0]
    key = keys.incident(incident_id)
    inc = await store.load(incident_id)
    assert inc is not None
    old = json.loads(inc.to_json())
    del old["firing_by"], old["alert_total"]
    old["alerts"] = {fp: {**json.loads(a.to_json()), "fingerprint": fp} for fp, a in inc.alerts.items()}
    await store.client.hdel(key, *[f"f:{fp}" for fp in inc.alerts])
    await store.client.hset(key, "d", json.dumps(old))

    legacy = await store.load(incident_id)
    assert legacy is not None and legacy.alerts == inc.alerts and legacy.firing_count() == 5
    await proc.ingest(parse_payload(group(1, "resolved"))[1])  # one alert changes
    raw = await store.client.hget(key, "d")
    assert isinstance(raw, bytes)
    record = json.loads(raw)
    assert "alerts" not in record and record["alert_total"] == 5
    fields = {k.decode() if isinstance(k, bytes) else k for k in await store.client.hkeys(key)}
    assert {f"f:{fp}" for fp in inc.alerts} <= fields  # every alert was moved to its own field
    after = await store.load(incident_id)
    assert after is not None and len(after.alerts) == 5 and after.firing_count() == 4


async def test_a_timer_decision_reads_no_alert(store: RedisStore) -> None:
    clock = FakeClock()
    proc = processor(store, clock)
    incident_id = (await proc.ingest(parse_payload(group(50))[1])).incidents[0]
    inc = await store.load(incident_id)
    assert inc is not None and inc.timer_ms is not None
    head = await store.load(incident_id, alerts=False)
    assert head is not None and head.alerts == {} and head.firing_count() == 50
    clock.ms = inc.timer_ms
    spy = Spy(store)
    d = await proc.fire(incident_id, inc.timer_ms)
    assert d.changed and [alert_pairs(args) for args in spy.commits] == [0]
    after = await store.load(incident_id)
    assert after is not None and len(after.alerts) == 50  # untouched by the header-only commit


async def test_concurrent_webhooks_for_one_incident_take_turns_instead_of_losing_commits(
    store: RedisStore,
) -> None:
    """Eight webhooks at once, each changing its own alerts of one incident: in one process they
    are decided one after the other, so no guarded commit is lost (none runs out of attempts)."""
    proc = processor(store, FakeClock())
    incident_id = (await proc.ingest(parse_payload(group(N))[1])).incidents[0]
    batches = [parse_payload(group(3, "resolved", first=3 * i))[1] for i in range(8)]
    results = await asyncio.gather(*(proc.ingest(b) for b in batches))
    assert all(r.incidents == [incident_id] for r in results)
    assert proc.metrics.registry.get_sample_value("escalation_commit_conflicts_total") == 0
    inc = await store.load(incident_id)
    assert inc is not None and inc.firing_count() == N - 24 and inc.version == 9
    assert proc._turns == {}  # nothing held once all are done


async def test_one_webhook_of_8500_alerts_for_one_incident_is_read_and_written_in_chunks(
    store: RedisStore,
) -> None:
    """Lua's unpack() refuses more than ~8,000 values: the scripts take alert fields in chunks."""
    proc = processor(store, FakeClock())
    opened = await proc.ingest(parse_payload(group(8500))[1])  # 17,000 values for one HSET
    inc = await store.load(opened.incidents[0])
    assert inc is not None and len(inc.alerts) == 8500 and inc.firing_count() == 8500
    again = await proc.ingest(parse_payload(group(8500))[1])  # 8,500 fields named in one HMGET
    assert again.duplicates == 8500 and again.incidents == opened.incidents
    gone = await proc.ingest(parse_payload(group(8500, "resolved"))[1])
    assert gone.incidents == opened.incidents
    inc = await store.load(opened.incidents[0])
    assert inc is not None and not inc.is_open and inc.firing_count() == 0
