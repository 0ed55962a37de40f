"""The duplicate fast path: a webhook that only repeats what an open incident holds is counted
in one script (scripts/repeat.lua) without reading the incident out or deciding it. The script's
rule must be escalation._is_duplicate's, and whatever it does not confirm is decided in full.
Real redis-server."""

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from engine.alerts import Alert, AlertStatus
from engine.escalation import _is_duplicate
from engine.events import Resolve
from engine.incident import Incident
from engine.metrics import Metrics
from engine.policy.routing import incident_key, route
from engine.processor import Processor
from engine.store import keys
from engine.store.connect import connect
from engine.store.redis import RedisStore
from tests.clock import FakeClock
from tests.unit.escalation_helpers import POLICIES, T0

pytestmark = pytest.mark.redis
GROUP = '{}:{alertname="Down"}'


def alert(
    fp: str, status: str = "firing", starts: int = T0, ends: int | None = None, group: str = GROUP
) -> Alert:
    return Alert(
        fingerprint=fp,
        status=AlertStatus(status),
        labels={"alertname": "Down", "instance": fp},
        starts_at_ms=starts,
        ends_at_ms=ends,
        group_key=group,
    )


def key_of(a: Alert) -> str:
    return incident_key(route(POLICIES, a.labels)[0], a)


class Spy:
    """Counts the fast path's tries and what came of them."""

    def __init__(self, store: RedisStore) -> None:
        self.tries: list[str | None] = []
        self.calls = 0
        real = store.count_repeats

        async def counted(groups: Sequence[tuple[str, Sequence[Alert]]]) -> list[str | None]:
            found = await real(groups)
            self.tries += found
            self.calls += 1
            return found

        store.count_repeats = counted  # type: ignore[method-assign]


class StoreProcessor(Processor):
    store: RedisStore


@pytest.fixture
async def proc(redis_url: str) -> AsyncIterator[StoreProcessor]:
    store = RedisStore(await connect(redis_url))
    await store.client.flushdb()
    yield StoreProcessor(store, lambda: POLICIES, FakeClock(), Metrics(CollectorRegistry()))
    await store.close()


async def incident_of(proc: Processor, a: Alert) -> Incident:
    found = await proc.store.load_by_key(key_of(a))
    assert found is not None
    inc = await proc.store.load(found.id)  # every alert
    assert inc is not None
    return inc


async def test_a_repeat_is_counted_in_one_step_and_the_incident_is_not_rewritten(
    proc: StoreProcessor,
) -> None:
    spy = Spy(proc.store)
    first = [alert("a" * 16), alert("b" * 16)]
    opened = await proc.ingest(first)
    assert opened.opened == 1 and spy.tries == []  # nothing held yet: decided in full
    before = await incident_of(proc, first[0])

    again = await proc.ingest(first)

    assert spy.tries == [before.id]
    assert (again.incidents, again.opened, again.duplicates) == ([before.id], 0, 2)
    after = await incident_of(proc, first[0])
    assert after.version == before.version  # no rewrite, no version bump
    assert after.duplicates == before.duplicates + 2  # counted as the full path counts


async def test_anything_new_in_a_webhook_is_decided_in_full(proc: StoreProcessor) -> None:
    spy = Spy(proc.store)
    held = alert("a" * 16)
    await proc.ingest([held])
    inc = await incident_of(proc, held)

    # a new alert beside a held one: not all held, so no try; the new one joins
    joined = await proc.ingest([held, alert("c" * 16)])
    assert spy.tries == [] and joined.duplicates == 1
    await proc.ingest([held])  # all held now: counted by the store
    assert spy.tries == [inc.id]
    # a held alert's resolve is a new status: not held, decided in full
    refired = await proc.ingest([dataclasses.replace(held, status=AlertStatus.RESOLVED, ends_at_ms=T0 + 5)])
    assert refired.duplicates == 0
    resolved = await incident_of(proc, held)
    assert resolved.alerts["a" * 16].status is AlertStatus.RESOLVED
    assert resolved.version == inc.version + 2  # joined, then resolved: both written


async def test_a_webhooks_keys_are_offered_in_one_step_and_a_refused_one_is_decided_alone(
    proc: StoreProcessor,
) -> None:
    spy = Spy(proc.store)
    one, two, three = (alert(c * 16, group=f"g{c}") for c in "abc")
    opened = await proc.ingest([one, two, three])
    assert opened.opened == 3
    first, second, third = opened.incidents
    await proc.act(second, Resolve("alice", ""))

    again = await proc.ingest([one, two, three])

    assert spy.calls == 1 and spy.tries == [first, None, third]
    assert again.incidents == [first, second, third]  # in the webhook's order, as before
    assert (again.opened, again.duplicates) == (0, 3)


async def test_a_closed_incident_falls_through_to_the_full_path_once(proc: StoreProcessor) -> None:
    spy = Spy(proc.store)
    a = alert("a" * 16)
    await proc.ingest([a])
    inc = await incident_of(proc, a)
    await proc.act(inc.id, Resolve("alice", ""))
    closed = await incident_of(proc, a)

    late = await proc.ingest([a])  # held, so tried; the incident is resolved: refused, decided
    assert spy.tries == [None]
    assert late.duplicates == 1 and late.opened == 0
    await proc.ingest([a])
    assert spy.tries == [None]  # no longer held: not tried again
    still = await incident_of(proc, a)
    assert (still.version, still.duplicates) == (
        closed.version,
        closed.duplicates,
    )  # a closed one counts nothing


async def test_a_record_with_inline_alerts_is_left_to_the_full_path(proc: StoreProcessor) -> None:
    a = alert("a" * 16)
    await proc.ingest([a])
    inc = await incident_of(proc, a)
    record = await proc.store.client.hget(keys.incident(inc.id), "d")
    assert isinstance(record, bytes) and record.startswith(b"{")
    await proc.store.client.hset(keys.incident(inc.id), "d", record[:-1] + b',"alerts":{}}')
    assert await proc.store.count_repeats([(key_of(a), [a])]) == [None]


async def test_a_key_pointing_nowhere_is_not_a_repeat(proc: StoreProcessor) -> None:
    a = alert("a" * 16)
    assert await proc.store.count_repeats([(key_of(a), [a])]) == [None]
    assert await proc.store.client.dbsize() == 0


async def test_the_fast_path_works_on_redis_cluster(redis_cluster_url: str) -> None:
    store = RedisStore(await connect(redis_cluster_url))
    proc = Processor(store, lambda: POLICIES, FakeClock(), Metrics(CollectorRegistry()))
    try:
        # fresh fingerprints and groups: the cluster outlives one test; keys in several slots
        sent = [alert(f"{T0 + i:016x}", group=f"cluster-{T0}-{i}") for i in range(20)]
        # all at once on a fresh client: connect() maps the slots first (redis-py's lazy refresh
        # in the middle of such a burst dropped connections that were still connecting)
        ids = (await proc.ingest(sent)).incidents
        assert len({keys.shard_of_id(i) for i in ids}) > 1
        again = await proc.ingest(sent)
        assert again.incidents == ids and again.duplicates == 20
        assert [(await incident_of(proc, a)).duplicates for a in sent] == [1] * 20
    finally:
        await store.close()


# the script's rule against the state machine's -------------------------------------------------

OFFSETS = st.integers(min_value=-2, max_value=2).map(lambda s: T0 + 1000 * s)
INCOMING = st.tuples(st.sampled_from(["firing", "resolved"]), OFFSETS, st.none() | OFFSETS)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(held_resolved=st.booleans(), held_starts=OFFSETS, incoming=INCOMING)
def test_the_script_calls_a_repeat_exactly_what_decide_calls_one(
    redis_url: str, held_resolved: bool, held_starts: int, incoming: tuple[str, int, int | None]
) -> None:
    asyncio.run(_same_verdict(redis_url, held_resolved, held_starts, incoming))


async def _same_verdict(
    redis_url: str, held_resolved: bool, held_starts: int, incoming: tuple[str, int, int | None]
) -> None:
    store = RedisStore(await connect(redis_url))
    await store.client.flushdb()
    proc = Processor(store, lambda: POLICIES, FakeClock(), Metrics(CollectorRegistry()))
    try:
        fp, keeper = "a" * 16, alert("f" * 16)  # the keeper keeps the incident open
        await proc.ingest([alert(fp, starts=held_starts), keeper])
        if held_resolved:
            await proc.ingest([alert(fp, "resolved", held_starts, held_starts + 500)])
        inc = await incident_of(proc, keeper)
        held = inc.alerts[fp]
        assert held.status is (AlertStatus.RESOLVED if held_resolved else AlertStatus.FIRING)
        status, starts, ends = incoming
        sent = alert(fp, status, starts, ends)
        expected = _is_duplicate(held, sent)
        before = await store.client.hgetall(keys.incident(inc.id))

        [found] = await store.count_repeats([(key_of(sent), [sent, sent])])

        after = await store.client.hgetall(keys.incident(inc.id))
        assert (found == inc.id) is expected, (held, sent)
        if expected:
            assert int(after[b"n"]) == int(before.get(b"n", 0)) + 2
            assert {k: v for k, v in after.items() if k != b"n"} == {
                k: v for k, v in before.items() if k != b"n"
            }
        else:
            assert after == before  # refused: nothing written
    finally:
        await store.close()
