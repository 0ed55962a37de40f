"""Sleeps until the earliest due timer (woken early when a sooner one is set); fires it via decide()."""

import asyncio
from collections import deque
from collections.abc import Callable
from contextlib import AbstractContextManager

import structlog

from engine.clock import Clock
from engine.errors import StoreError
from engine.events import Decision
from engine.metrics import Metrics
from engine.processor import Processor
from engine.store import keys
from engine.store.base import DueTimer, Store

log = structlog.get_logger(__name__)
BATCH = 500  # per shard
CONCURRENCY = 16  # decisions in flight, each on a connection of its own (a Cluster)
PIPELINED = 128  # timers decided per batch with a standalone Redis: their commits share pipelines
LANES = 9  # batches in hand at once (1,152 timers): some decided while those before are in Redis
RETRY_BROKEN_MS = 30_000  # an incident that cannot be decided is tried again this much later


class Scheduler:
    """Owns the escalation timers: sleeps until the earliest is due (or a local commit sets a
    sooner one), fires due timers through the processor, and hands due delivery retries back to
    the outbox. Any number of replicas may run one: the guarded commit fires each timer once."""

    def __init__(
        self,
        store: Store,
        processor: Processor,
        clock: Clock,
        metrics: Metrics,
        max_sleep_s: float = 1.0,
    ) -> None:
        self.store = store
        self.processor = processor
        self.clock = clock
        self.metrics = metrics
        self.max_sleep_s = max_sleep_s
        self.wake = asyncio.Event()
        self._sleep_until_ms = 0
        self.on_outbox: Callable[[], None] = lambda: None
        # held while due timers fire: no new ingest decision starts meanwhile (Processor.timers_first)
        self.hold_ingest: Callable[[], AbstractContextManager[None]] = processor.timers_first
        self._stopping = False

    def poke(self, due_ms: int | None) -> None:
        """Called after a local commit: wake now if the new timer is sooner than our sleep."""
        if due_ms is not None and due_ms < self._sleep_until_ms:
            self.wake.set()

    async def _fire_batches(self, now: int) -> tuple[int, bool, list[DueTimer]]:
        """Every shard's due timers, read with their incidents and fired a batch at a time.
        Returns how many fired, whether a shard had more due than one read takes, and the timers
        the batches left for the one-by-one way."""
        pipelined = self.store.pipelined()
        size, lanes = (PIPELINED, LANES) if pipelined else (CONCURRENCY, 1)  # Cluster: 16 in flight
        reads = [asyncio.ensure_future(self.store.due_incidents(now, BATCH, n)) for n in range(keys.SHARDS)]
        batches: deque[asyncio.Future[tuple[list[tuple[DueTimer, Decision]], list[DueTimer]]]] = deque()
        fired, full, rest = 0, False, list[DueTimer]()

        async def settle() -> None:
            nonlocal fired
            done, left = await batches.popleft()
            for t, _ in done:
                self._late(t.due_ms)
            fired += len(done)
            rest.extend(left)

        try:
            for read in reads:
                due = await read
                full = full or len(due) >= BATCH
                for i in range(0, len(due), size):
                    # decided at once, its commits sent while the next batch is decided
                    batches.append(asyncio.ensure_future(self.processor.fire_due(due[i : i + size])))
                    while len(batches) >= lanes:
                        await settle()
            while batches:
                await settle()
        finally:  # a failed read or batch: the others are not left running unowned
            for read in reads:
                read.cancel()
            for batch in batches:
                batch.cancel()
        return fired, full, rest

    async def _fire_one_by_one(self, due: list[DueTimer], now: int) -> int:
        gate = asyncio.Semaphore(PIPELINED if self.store.pipelined() else CONCURRENCY)

        async def fire(incident_id: str, due_ms: int) -> bool:
            async with gate:  # several in flight: Redis round trips overlap instead of queueing
                try:
                    d = await self.processor.fire(incident_id, due_ms)
                except StoreError:
                    raise
                except Exception as exc:  # one bad incident must not hold up the others
                    log.exception("timer_failed", incident_id=incident_id, error=repr(exc))
                    await self.store.repair_timer(incident_id, due_ms, now + RETRY_BROKEN_MS)
                    return False
            if d.changed:
                self._late(due_ms)
            return d.changed

        return sum(await asyncio.gather(*(fire(t.member, t.due_ms) for t in due)))

    def _late(self, due_ms: int) -> None:
        self.metrics.timer_lateness.observe(max(0, self.clock.now_ms() - due_ms) / 1000)

    def stop(self) -> None:
        self._stopping = True
        self.wake.set()

    async def run(self) -> None:
        while not self._stopping:
            try:
                sleep_s = await self.cycle()
            except StoreError as exc:
                log.warning("scheduler_store_unavailable", error=str(exc))
                sleep_s = self.max_sleep_s
            except Exception as exc:  # timers must keep firing whatever one cycle hit
                log.exception("scheduler_cycle_failed", error=repr(exc))
                sleep_s = self.max_sleep_s
            self._sleep_until_ms = self.clock.now_ms() + int(sleep_s * 1000)
            self.wake.clear()
            try:  # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation
                async with asyncio.timeout(sleep_s):
                    await self.wake.wait()
            except TimeoutError:
                pass

    async def cycle(self) -> float:
        """Fire every due timer; return how long to sleep before the next one."""
        start = now = self.clock.now_ms()
        with self.hold_ingest():
            fired, full, rest = await self._fire_batches(now)
            fired += await self._fire_one_by_one(rest, now)
        if full and fired:
            return 0.0
        next_timer, next_retry = await self.store.next_due_ms()
        now = self.clock.now_ms()
        if next_timer is not None and start < next_timer <= now:
            return 0.0  # it fell due while this cycle ran (woken a hair early): fire it now
        if next_retry is not None and next_retry <= now and await self.store.pump_retries(now):
            self.on_outbox()  # delivery retries are due: hand them back to the outbox
            next_retry = None
        due_ms = [t for t in (next_timer, next_retry) if t is not None]
        if not due_ms:
            return self.max_sleep_s
        delay = (min(due_ms) - now) / 1000
        if delay <= 0:
            # a timer still due after this cycle: more to fire now, or one that failed just now
            return 0.0 if fired else self.max_sleep_s
        return min(delay, self.max_sleep_s)
