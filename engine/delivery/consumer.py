"""One stream consumer loop: read (and claim a dead replica's entries), handle incidents in
parallel, park retries, dead-letter what cannot be done. The dispatcher and each channel's
worker are consumers of their own streams."""

import abc
import asyncio
import contextlib
import functools
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import structlog

from engine.clock import Clock
from engine.delivery.breaker import Breakers
from engine.delivery.links import LinkSecret
from engine.delivery.ratelimit import RateLimits
from engine.delivery.retry import RetryPolicy, backoff_s
from engine.errors import StoreError
from engine.metrics import DISPATCH_QUEUE, Metrics
from engine.notifiers.base import Notifier
from engine.outbox import OutboxMessage
from engine.policy.models import PolicySet
from engine.store.base import OutboxEntry, Pending, Store, UnreadableEntry
from engine.timeline import EntryKind, TimelineEntry

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class DeliveryConfig:
    consumer: str
    poll_s: float = 1.0
    claim_idle_s: float = 10.0
    timeout_s: float = 10.0
    backoff_s: float = 2.0
    backoff_max_s: float = 300.0
    max_attempts: int = 12
    public_url: str = ""
    # entries read per stream at a step (16 shards, 2 lanes: at most 64 started at once). A bigger
    # read starts a burst of sends whose CPU holds every other queue's pages (bench e2e: a
    # Slack answering in 2 s read 100 at a time, and PagerDuty pages waited 200-300 ms)
    batch: int = 2
    in_hand: int = 400  # entries being handled at most; reading waits beyond
    # bulk-lane sends under way at once per channel kind: fewer than the kind's connections
    # (app.CHANNEL_CONNECTIONS), so a P0 page finds a free one however many wait on a slow endpoint
    bulk_sends: int = 80
    rate_wait_max_s: float = 1.5  # a rate-limit wait longer than this parks the send instead
    breaker_failures: int = 5
    breaker_open_s: float = 30.0

    @property
    def retry(self) -> RetryPolicy:
        return RetryPolicy(self.backoff_s, self.backoff_max_s, self.max_attempts)


@dataclass(slots=True)
class Shared:
    """What the dispatcher and every channel worker share."""

    store: Store
    policies: Callable[[], PolicySet]
    clock: Clock
    metrics: Metrics
    config: DeliveryConfig
    notifiers: Mapping[str, Notifier]  # replaced as a whole when channels are rebuilt
    breakers: Breakers = field(default_factory=Breakers)
    limits: RateLimits = field(default_factory=RateLimits)
    link_secret: LinkSecret | None = None
    wake: Callable[[str], None] = lambda channel: None  # wake the consumer of a stream
    _bulk_slots: dict[str, asyncio.Semaphore] = field(default_factory=dict)

    def send_slot(self, channel: str, urgent: bool) -> contextlib.AbstractAsyncContextManager[object]:
        """What a send holds while it goes: for the bulk lane, one of the channel kind's
        `bulk_sends` slots; an urgent send takes none (the connections left are its)."""
        if urgent:
            return contextlib.nullcontext()
        slots = self._bulk_slots.get(channel)
        if slots is None:
            slots = self._bulk_slots[channel] = asyncio.Semaphore(self.config.bulk_sends)
        return slots

    async def note(self, incident_id: str, kind: EntryKind, actor: str, text: str) -> None:
        await self.store.append_timeline(incident_id, TimelineEntry(self.clock.now_ms(), kind, actor, text))


Ref = tuple[int, bool, str]


def _ref(entry: Pending) -> Ref:
    """An entry in hand, by its stream and id: ids are unique only within one stream (two
    shards' streams written in the same millisecond give the same id)."""
    return entry.shard, entry.urgent, entry.entry_id


class Consumer(abc.ABC):
    """Consumes one stream: `channel` is a channel kind, or keys.DISPATCH."""

    def __init__(self, shared: Shared, channel: str) -> None:
        self.shared = shared
        self.channel = channel
        self.label = channel or DISPATCH_QUEUE
        self.wake = asyncio.Event()
        self._stopping = False
        # entries read and not finished, and per incident the task handling its entries in order:
        # a slow send holds its own incident's later entries, never another incident's
        self._unfinished: dict[Ref, Pending] = {}
        self._chains: dict[str, asyncio.Task[None]] = {}
        self._keeper: asyncio.Task[None] | None = None
        self._full = False

    def stop(self) -> None:
        """Finish the entries in hand, then return from run()."""
        self._stopping = True
        self.wake.set()

    async def run(self) -> None:
        config = self.shared.config
        await self._ensure_group()
        last_claim = 0.0
        try:
            while not self._stopping:
                self.wake.clear()  # before the step: a wake that arrives during it is not lost
                try:
                    self._full = len(self._unfinished) >= config.in_hand
                    # full, the urgent lanes are still read, up to as many urgent entries in
                    # hand: the storm's must not hold back a P0 page or an escalation
                    urgent = sum(1 for _, lane, _ in self._unfinished if lane)
                    if not self._full or urgent < config.in_hand:
                        claim = time.monotonic() - last_claim > config.claim_idle_s / 4
                        if claim:
                            last_claim = time.monotonic()
                        if await self.step(claim, wait=False, urgent_only=self._full):
                            continue
                except StoreError as exc:
                    log.warning("delivery_store_unavailable", queue=self.label, error=str(exc))
                except Exception as exc:  # the loop must outlive any one bad entry
                    log.exception("delivery_loop_error", queue=self.label, error=repr(exc))
                try:  # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation
                    async with asyncio.timeout(config.poll_s):
                        await self.wake.wait()
                except TimeoutError:
                    pass
        finally:
            await asyncio.gather(*self._chains.values(), return_exceptions=True)
            await self._stop_keeper()

    async def step(self, claim: bool = False, wait: bool = True, urgent_only: bool = False) -> int:
        """One pass: move due retries back onto the stream (first: a busy stream must not starve
        them), then read (and claim stale) entries, the urgent lanes' first, and start handling
        them; with `wait`, until they are handled. Returns how many entries it moved or read (0:
        nothing to do)."""
        s, config = self.shared, self.shared.config
        pumped = await s.store.pump_retries(s.clock.now_ms(), channel=self.channel)
        entries = await s.store.read_outbox(config.consumer, config.batch, self.channel, urgent_only)
        if claim:
            idle_ms = int(config.claim_idle_s * 1000)
            entries += await s.store.claim_stale(
                config.consumer, idle_ms, config.batch, self.channel, urgent_only
            )
        entries = [e for e in entries if _ref(e) not in self._unfinished]  # already in hand
        if entries:
            started = self._start(entries)
            if wait:
                results = await asyncio.gather(*started, return_exceptions=True)
                if not self._unfinished:
                    await self._stop_keeper()
                for result in results:
                    if isinstance(result, BaseException):
                        raise result
        return pumped + len(entries)

    async def _ensure_group(self) -> None:
        while not self._stopping:
            try:
                await self.shared.store.ensure_groups([self.channel])
                return
            except StoreError as exc:
                log.warning("delivery_store_unavailable", queue=self.label, error=str(exc))
                await asyncio.sleep(self.shared.config.poll_s)

    def _start(self, entries: list[Pending]) -> list[asyncio.Task[None]]:
        """Incidents in parallel; one incident's entries in order, after those it has in hand
        already, so an acknowledgement never overtakes its page."""
        by_incident: dict[str, list[Pending]] = {}
        for e in entries:
            key = e.message.incident_id if isinstance(e, OutboxEntry) else str(_ref(e))
            by_incident.setdefault(key, []).append(e)
        started = []
        for key, group in by_incident.items():
            self._unfinished.update((_ref(e), e) for e in group)
            task = asyncio.create_task(self._in_order(self._chains.get(key), group))
            self._chains[key] = task
            task.add_done_callback(functools.partial(self._finished, key))
            started.append(task)
        if self._keeper is None or self._keeper.done():
            self._keeper = asyncio.create_task(self._keep_alive())
        return started

    async def _in_order(self, previous: "asyncio.Task[None] | None", group: list[Pending]) -> None:
        if previous is not None:
            await asyncio.wait([previous])  # its outcome is its own; only the order matters here
        try:
            for e in group:
                await self.handle(e)
                self._unfinished.pop(_ref(e), None)
        finally:  # after a store error the rest stay pending in Redis, claimed again once idle
            for e in group:
                self._unfinished.pop(_ref(e), None)

    def _finished(self, key: str, task: "asyncio.Task[None]") -> None:
        if self._chains.get(key) is task:
            del self._chains[key]
        error = None if task.cancelled() else task.exception()
        if isinstance(error, StoreError):
            log.warning("delivery_store_unavailable", queue=self.label, error=str(error))
        elif error is not None:
            log.error("delivery_loop_error", queue=self.label, error=repr(error))
        if self._full and len(self._unfinished) < self.shared.config.in_hand:
            self._full = False
            self.wake.set()  # room again: read on

    async def _keep_alive(self) -> None:
        """While entries are in hand (a slow send, a rate-limit wait), claim them again for this
        consumer every third of the claim window: only a dead replica's entries ever look idle,
        so the window can be seconds without another replica sending the same page meanwhile."""
        s = self.shared
        while self._unfinished:
            await asyncio.sleep(s.config.claim_idle_s / 3)
            if self._unfinished:
                try:
                    await s.store.keep(s.config.consumer, list(self._unfinished.values()), self.channel)
                except StoreError as exc:
                    log.warning("delivery_keepalive_failed", queue=self.label, error=str(exc))

    async def _stop_keeper(self) -> None:
        if self._keeper is not None:
            self._keeper.cancel()
            await asyncio.gather(self._keeper, return_exceptions=True)
            self._keeper = None

    async def handle(self, entry: Pending) -> None:
        """Deliver one entry; an error that is not a delivery outcome (a bug, bad data) is retried
        with backoff like a failed send, then dead-lettered: never left to be reclaimed forever."""
        if isinstance(entry, UnreadableEntry):
            await self.dead_letter(entry, "unreadable", f"unreadable outbox entry: {entry.problem}")
            return
        try:
            await self.deliver(entry)
        except StoreError:
            raise
        except Exception as exc:
            log.exception("delivery_crashed", entry=entry.entry_id, incident_id=entry.message.incident_id)
            await self._crashed(entry, exc)

    @abc.abstractmethod
    async def deliver(self, entry: OutboxEntry) -> None:
        """Act on one readable entry of this consumer's stream (dispatch it, or send it)."""

    async def _crashed(self, entry: OutboxEntry, exc: Exception) -> None:
        msg, retry = entry.message, self.shared.config.retry
        if msg.attempt + 1 >= retry.max_attempts:
            why = f"{msg.action} to {msg.target} failed {msg.attempt + 1} times: {type(exc).__name__}: {exc}"
            await self.dead_letter(entry, "crashed", why)
            return
        delay_s = backoff_s(msg.attempt, retry.backoff_s, retry.backoff_max_s)
        due_ms = self.shared.clock.now_ms() + int(delay_s * 1000)
        await self.shared.store.move(entry, [], [(due_ms, msg.again())])

    async def dead_letter(
        self, entry: Pending, reason: str, why: str, failover: OutboxMessage | None = None
    ) -> None:
        s = self.shared
        dead_id = await s.store.dead_letter(entry, why, s.clock.now_ms(), failover)
        if dead_id is None:  # another replica took the entry over and finished it
            return
        s.metrics.dead_letters.labels(reason, self.label).inc()
        log.error("delivery_dead_lettered", entry=entry.entry_id, queue=self.label, reason=reason, detail=why)
        if failover is not None and failover.address is not None:
            s.wake(failover.address.channel)
        if isinstance(entry, OutboxEntry):
            try:  # best effort: the incident itself may be what cannot be read
                what = f"{entry.message.action} to {entry.message.target}"
                if reason != "failed":  # a failed send's timeline entry says why already
                    what = why
                text = f"{what}: kept as dead letter {dead_id} (POST /api/v1/deadletters/{dead_id}/redrive)"
                await s.note(entry.message.incident_id, EntryKind.DEAD_LETTER, "engine", text)
            except Exception as exc:
                log.warning("dead_letter_note_failed", entry=entry.entry_id, error=repr(exc))
