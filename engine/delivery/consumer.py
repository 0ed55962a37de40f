"""One stream consumer loop: read (and claim a dead replica's entries), handle incidents in
parallel, park retries, dead-letter what cannot be done. The dispatcher and each channel's
worker are consumers of their own streams."""

import abc
import asyncio
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
    batch: int = 50
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

    async def note(self, incident_id: str, kind: EntryKind, actor: str, text: str) -> None:
        await self.store.append_timeline(incident_id, TimelineEntry(self.clock.now_ms(), kind, actor, text))


class Consumer(abc.ABC):
    """Consumes one stream: `channel` is a channel kind, or keys.DISPATCH."""

    def __init__(self, shared: Shared, channel: str) -> None:
        self.shared = shared
        self.channel = channel
        self.label = channel or DISPATCH_QUEUE
        self.wake = asyncio.Event()
        self._stopping = False

    def stop(self) -> None:
        """Finish the batch in hand, then return from run()."""
        self._stopping = True
        self.wake.set()

    async def run(self) -> None:
        config = self.shared.config
        await self._ensure_group()
        last_claim = 0.0
        while not self._stopping:
            self.wake.clear()  # before the step: a wake that arrives during it is not lost
            try:
                claim = time.monotonic() - last_claim > config.claim_idle_s / 4
                if claim:
                    last_claim = time.monotonic()
                if await self.step(claim):
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

    async def step(self, claim: bool = False) -> int:
        """One pass: move due retries back onto the stream (first: a busy stream must not starve
        them), then read (and claim stale) entries and handle them. Returns how many entries it
        moved or handled (0: nothing to do)."""
        s, config = self.shared, self.shared.config
        pumped = await s.store.pump_retries(s.clock.now_ms(), channel=self.channel)
        entries = await s.store.read_outbox(config.consumer, config.batch, self.channel)
        if claim:
            idle_ms = int(config.claim_idle_s * 1000)
            entries += await s.store.claim_stale(config.consumer, idle_ms, config.batch, self.channel)
        if entries:
            await self._handle_batch(entries)
        return pumped + len(entries)

    async def _ensure_group(self) -> None:
        while not self._stopping:
            try:
                await self.shared.store.ensure_groups([self.channel])
                return
            except StoreError as exc:
                log.warning("delivery_store_unavailable", queue=self.label, error=str(exc))
                await asyncio.sleep(self.shared.config.poll_s)

    async def _handle_batch(self, entries: list[Pending]) -> None:
        """Incidents in parallel; one incident's entries in order, so an ack never overtakes its page."""
        by_incident: dict[str, list[Pending]] = {}
        for e in entries:
            key = e.message.incident_id if isinstance(e, OutboxEntry) else e.entry_id
            by_incident.setdefault(key, []).append(e)

        unfinished = {e.entry_id: e for e in entries}

        async def in_order(group: list[Pending]) -> None:
            for e in group:
                try:
                    await self.handle(e)
                finally:
                    unfinished.pop(e.entry_id, None)

        keeper = asyncio.create_task(self._keep_alive(unfinished))
        try:
            # every group runs to its end before the next read, even when one fails: a group
            # still running would race the next batch (an acknowledgement overtaking its page)
            results = await asyncio.gather(
                *(in_order(g) for g in by_incident.values()), return_exceptions=True
            )
        finally:
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _keep_alive(self, unfinished: dict[str, Pending]) -> None:
        """While entries are in hand (a slow send, a rate-limit wait), claim them again for this
        consumer every third of the claim window: only a dead replica's entries ever look idle,
        so the window can be seconds without another replica sending the same page meanwhile."""
        s = self.shared
        while True:
            await asyncio.sleep(s.config.claim_idle_s / 3)
            if unfinished:
                try:
                    await s.store.keep(s.config.consumer, list(unfinished.values()), self.channel)
                except StoreError as exc:
                    log.warning("delivery_keepalive_failed", queue=self.label, error=str(exc))

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
