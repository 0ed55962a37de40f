"""ESCALATION_REDIS_MIN_REPLICAS: each commit of accepted state is followed by WAIT on the connection
that made it; a commit fewer replicas acknowledged is refused (the webhook gets 503), and the
sender's retry of it is a duplicate to the state machine, so safe. A master and a replica on
loopback; the replica is frozen with SIGSTOP (still connected, never acknowledging), which is
deterministic where pausing its replication link by other means races its reconnect."""

import json
import signal
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import redis
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry

from engine.app import create_app
from engine.config import Settings
from engine.errors import NotReplicatedError, StoreError
from engine.events import Acknowledge
from engine.ingest.alertmanager import parse_payload
from engine.metrics import Metrics
from engine.processor import Processor
from engine.scheduler import Scheduler
from engine.store import keys
from engine.store.connect import connect, open_store
from engine.store.redis import RedisStore
from tests.clock import FakeClock
from tests.integration.test_api import POLICIES as API_POLICIES
from tests.integration.test_api import EngineTestServer
from tests.servers import HOST, RedisServer, wait_for_replicas
from tests.unit.escalation_helpers import POLICIES

FIXTURES = Path(__file__).parent.parent / "fixtures"
WAIT_MS = 100  # each refused commit waits this long for the frozen replica
pytestmark = pytest.mark.redis


def webhook(name: str = "01-firing-single.json") -> dict[str, Any]:
    raw: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return raw


class Pair:
    """A master and its replica; `frozen()` stops the replica's process while the block runs."""

    def __init__(self) -> None:
        self.master = RedisServer().start()
        self.replica = RedisServer(extra_args=("--replicaof", HOST, str(self.master.port))).start()
        wait_for_replicas(self.master.port, 1)

    def freeze(self) -> None:
        assert self.replica.proc is not None
        self.replica.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.replica.proc is not None
        self.replica.proc.send_signal(signal.SIGCONT)
        wait_for_replicas(self.master.port, 1)

    def on_replica(self, key: str) -> bytes | None:
        with redis.Redis(host=HOST, port=self.replica.port) as r:
            value = r.hget(key, "d")
            assert value is None or isinstance(value, bytes)
            return value

    def close(self) -> None:
        if self.replica.proc is not None:
            self.replica.proc.send_signal(signal.SIGCONT)
        self.replica.close()
        self.master.close()


@pytest.fixture
def pair() -> Iterator[Pair]:
    p = Pair()
    try:
        yield p
    finally:
        p.close()


@asynccontextmanager
async def durable_store(url: str, min_replicas: int = 1) -> AsyncIterator[RedisStore]:
    store = RedisStore(await connect(url), min_replicas=min_replicas, min_replicas_timeout_ms=WAIT_MS)
    try:
        yield store
    finally:
        await store.close()


def processor(store: RedisStore, clock: FakeClock) -> Processor:
    return Processor(store, lambda: POLICIES, clock, Metrics(CollectorRegistry()))


async def test_a_commit_returns_once_its_replica_has_it(pair: Pair) -> None:
    async with durable_store(pair.master.url) as store:
        result = await processor(store, FakeClock()).ingest(parse_payload(webhook())[1])
        assert pair.on_replica(keys.incident(result.incidents[0])) is not None  # no polling: WAITed


async def test_a_commit_its_replica_did_not_acknowledge_is_refused(pair: Pair) -> None:
    seen: list[tuple[str, bool]] = []
    store = RedisStore(
        await connect(pair.master.url),
        observe=lambda step, _s, ok: seen.append((step, ok)),
        min_replicas=1,
        min_replicas_timeout_ms=WAIT_MS,
    )
    try:
        pair.freeze()
        with redis.Redis(host=HOST, port=pair.master.port) as other:
            # WAIT on a connection that wrote nothing counts the frozen replica: WAIT must follow
            # the write on the write's own connection, or it says nothing about that write
            assert other.execute_command("WAIT", 1, WAIT_MS) == 1
        with pytest.raises(NotReplicatedError, match="acknowledged by 0 of 1 required replicas"):
            await processor(store, FakeClock()).ingest(parse_payload(webhook())[1])
        assert ("commit decision", False) in seen  # counted as a failed commit (store errors metric)
    finally:
        pair.thaw()
        await store.close()


async def test_the_webhook_gets_503_and_its_retry_is_a_safe_duplicate(pair: Pair) -> None:
    settings = Settings(
        redis_url=pair.master.url, redis_min_replicas=1, redis_min_replicas_timeout_ms=WAIT_MS
    )
    app = create_app(settings, API_POLICIES, notifiers={})
    data = json.dumps(webhook())
    async with TestClient(EngineTestServer(app)) as client:
        pair.freeze()
        try:
            resp = await client.post("/api/v1/alertmanager", data=data)
            assert resp.status == 503, await resp.text()
            assert "required replicas" in (await resp.json())["detail"]
        finally:
            pair.thaw()
        resp = await client.post("/api/v1/alertmanager", data=data)  # Alertmanager's retry
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["duplicates"] == 1  # the refused commit had reached the master
        listed = (await (await client.get("/api/v1/incidents")).json())["incidents"]
        assert len(listed) == 1 and pair.on_replica(keys.incident(listed[0]["id"])) is not None
        text = await (await client.get("/metrics")).text()
        assert 'escalation_store_errors_total{operation="commit"} 1.0' in text


async def test_a_fired_timer_is_not_done_until_replicated(pair: Pair) -> None:
    clock = FakeClock()
    async with durable_store(pair.master.url) as store:
        proc = processor(store, clock)
        await proc.ingest(parse_payload(webhook())[1])
        clock.advance(3600)
        pair.freeze()
        try:
            with pytest.raises(NotReplicatedError):  # the scheduler logs it and goes on
                await Scheduler(store, proc, clock, proc.metrics).cycle()
        finally:
            pair.thaw()


async def test_without_the_setting_a_frozen_replica_changes_nothing(pair: Pair) -> None:
    async with durable_store(pair.master.url, min_replicas=0) as store:
        pair.freeze()
        try:
            result = await processor(store, FakeClock()).ingest(parse_payload(webhook())[1])
            assert result.opened == 1
        finally:
            pair.thaw()


async def test_settings_that_cannot_work_are_refused_at_start(pair: Pair, tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="embedded redis-server has none"):
        async with open_store(None, Settings(data_dir=tmp_path, redis_min_replicas=1)):
            pass
    with pytest.raises(StoreError, match="TIMEOUT_MS must be > 0"):
        async with open_store(
            pair.master.url, Settings(redis_min_replicas=1, redis_min_replicas_timeout_ms=0)
        ):
            pass
    async with open_store(pair.master.url, Settings(redis_min_replicas=1)) as store:
        assert (store.min_replicas, store.min_replicas_timeout_ms) == (1, 500)


async def test_a_retried_action_whose_first_commit_was_refused_waits_for_the_replica_too(pair: Pair) -> None:
    async with durable_store(pair.master.url) as store:
        proc = processor(store, FakeClock())
        incident_id = (await proc.ingest(parse_payload(webhook())[1])).incidents[0]
        pair.freeze()
        try:
            ack = Acknowledge("alice")
            with pytest.raises(NotReplicatedError):
                await proc.act(incident_id, ack)
            # the refused ack is on the master: its retry changes nothing, and must still not
            # be answered as done while the replica lacks it
            with pytest.raises(NotReplicatedError):
                await proc.act(incident_id, ack)
        finally:
            pair.thaw()
        assert (await proc.act(incident_id, Acknowledge("alice"))).acked_by == "alice"
