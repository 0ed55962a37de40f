"""The outbox consumer: at least once, incidents in parallel, outcomes on the timeline."""

import asyncio
import dataclasses
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import structlog

from engine.clock import Clock
from engine.delivery.plan import plan
from engine.delivery.retry import Outcome, RetryPolicy, backoff_s, judge
from engine.errors import DeliveryError, PermanentDeliveryError, StoreError
from engine.incident import Incident
from engine.messages import Message, build_message
from engine.metrics import Metrics
from engine.notifiers.base import Notifier
from engine.outbox import OutboxMessage
from engine.policy.models import PolicySet
from engine.policy.targets import Address
from engine.store.base import OutboxEntry, Pending, Store, UnreadableEntry
from engine.timeline import EntryKind, TimelineEntry

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class DeliveryConfig:
    consumer: str
    poll_s: float = 1.0
    claim_idle_s: float = 60.0
    timeout_s: float = 10.0
    backoff_s: float = 2.0
    backoff_max_s: float = 300.0
    max_attempts: int = 12
    public_url: str = ""
    batch: int = 50

    @property
    def retry(self) -> RetryPolicy:
        return RetryPolicy(self.backoff_s, self.backoff_max_s, self.max_attempts)


class Delivery:
    """Owns the outbox consumer group: reads entries (and claims a dead replica's), plans each
    against the incident as it is now, sends through the notifiers, and acks or parks retries."""

    def __init__(
        self,
        store: Store,
        notifiers: Mapping[str, Notifier],
        policies: Callable[[], PolicySet],
        clock: Clock,
        metrics: Metrics,
        config: DeliveryConfig,
    ) -> None:
        self.store = store
        self.notifiers = notifiers  # replaced as a whole when channels are rebuilt
        self.policies = policies
        self.clock = clock
        self.metrics = metrics
        self.config = config
        self.wake = asyncio.Event()
        self._stopping = False

    def stop(self) -> None:
        """Finish the batch in hand, then return from run()."""
        self._stopping = True
        self.wake.set()

    async def run(self) -> None:
        await self._ensure_groups()
        last_claim = 0.0
        while not self._stopping:
            try:
                entries = await self.store.read_outbox(self.config.consumer, self.config.batch)
                if time.monotonic() - last_claim > self.config.claim_idle_s / 4:
                    last_claim = time.monotonic()
                    entries += await self.store.claim_stale(
                        self.config.consumer, int(self.config.claim_idle_s * 1000), self.config.batch
                    )
                if entries:
                    await self._handle_batch(entries)
                    continue
                await self.store.pump_retries(self.clock.now_ms())
            except StoreError as exc:
                log.warning("delivery_store_unavailable", error=str(exc))
            except Exception as exc:  # the loop must outlive any one bad entry
                log.exception("delivery_loop_error", error=repr(exc))
            self.wake.clear()
            try:  # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation
                async with asyncio.timeout(self.config.poll_s):
                    await self.wake.wait()
            except TimeoutError:
                pass

    async def _ensure_groups(self) -> None:
        while True:
            try:
                await self.store.ensure_groups()
                return
            except StoreError as exc:
                log.warning("delivery_store_unavailable", error=str(exc))
                await asyncio.sleep(self.config.poll_s)

    async def _handle_batch(self, entries: list[Pending]) -> None:
        """Incidents in parallel; one incident's entries in order, so an ack never overtakes its page."""
        by_incident: dict[str, list[Pending]] = {}
        for e in entries:
            key = e.message.incident_id if isinstance(e, OutboxEntry) else e.entry_id
            by_incident.setdefault(key, []).append(e)

        async def in_order(group: list[Pending]) -> None:
            for e in group:
                await self.handle(e)

        await asyncio.gather(*(in_order(g) for g in by_incident.values()))

    async def handle(self, entry: Pending) -> None:
        """Deliver one entry; an error that is not a delivery outcome (a bug, bad data) is retried
        with backoff like a failed send, then dead-lettered: never left to be reclaimed forever."""
        if isinstance(entry, UnreadableEntry):
            await self._dead_letter(entry, "unreadable", f"unreadable outbox entry: {entry.problem}")
            return
        try:
            await self._deliver(entry)
        except StoreError:
            raise
        except Exception as exc:
            log.exception("delivery_crashed", entry=entry.entry_id, incident_id=entry.message.incident_id)
            await self._crashed(entry, exc)

    async def _crashed(self, entry: OutboxEntry, exc: Exception) -> None:
        msg, retry = entry.message, self.config.retry
        if msg.attempt + 1 >= retry.max_attempts:
            why = f"{msg.action} to {msg.target} failed {msg.attempt + 1} times: {type(exc).__name__}: {exc}"
            await self._dead_letter(entry, "crashed", why)
            return
        delay_s = backoff_s(msg.attempt, retry.backoff_s, retry.backoff_max_s)
        await self.store.retry_later(entry, [(self.clock.now_ms() + int(delay_s * 1000), msg.again())])

    async def _dead_letter(self, entry: Pending, reason: str, why: str) -> None:
        await self.store.dead_letter(entry, why, self.clock.now_ms())
        self.metrics.dead_letters.labels(reason).inc()
        log.error("delivery_dead_lettered", entry=entry.entry_id, reason=reason, detail=why)
        if isinstance(entry, OutboxEntry):
            try:  # best effort: the incident itself may be what cannot be read
                text = f"{why}; kept as a dead letter"
                await self._note(entry.message.incident_id, EntryKind.DELIVERY_FAILED, "engine", text)
            except Exception as exc:
                log.warning("dead_letter_note_failed", entry=entry.entry_id, error=repr(exc))

    async def _deliver(self, entry: OutboxEntry) -> None:
        """Send one outbox entry to every address its target reaches now; ack or park retries."""
        msg = entry.message
        policies = self.policies()
        inc = await self.store.load(msg.incident_id)
        if inc is None:
            await self.store.ack(entry)
            return
        todo = plan(msg, inc, policies, self.notifiers.keys(), self.clock.now_ms())
        if todo.note:
            await self._note(inc.id, EntryKind.NOBODY_ON_CALL, "engine", todo.note)
        if todo.skipped:
            text = f"{msg.action} to {msg.target} skipped: {todo.skipped}"
            await self._note(inc.id, EntryKind.PAGE_SKIPPED, "engine", text)
        elif todo.unreachable:
            await self._note(inc.id, EntryKind.DELIVERY_FAILED, "engine", todo.unreachable)
        retries: list[tuple[int, OutboxMessage]] = []
        # the words do not depend on the address: render the templates once for every send
        message = self._message(inc, msg, policies) if todo.sends else None
        for address in todo.sends:
            assert message is not None
            retry_in_s = await self._send(
                inc.id, msg, address, dataclasses.replace(message, address=address.name)
            )
            if retry_in_s is not None:
                retries.append((self.clock.now_ms() + int(retry_in_s * 1000), msg.retry(address)))
        # people's own later steps wait in the retry set, parked in the same step as the ack
        retries += [(msg.decided_ms + after, msg.followup_to(address)) for after, address in todo.later]
        if retries:
            await self.store.retry_later(entry, retries)
        else:
            await self.store.ack(entry)

    async def _send(
        self, incident_id: str, msg: OutboxMessage, address: Address, message: Message
    ) -> float | None:
        """One attempt at one address; returns the delay before a retry, or None when done."""
        where = f"{msg.action} to {address.channel}:{address.name} ({msg.target})"
        notifier = self.notifiers.get(address.channel)
        started = time.monotonic()
        error: Exception | None = None
        try:
            if notifier is None:
                raise PermanentDeliveryError(f"channel {address.channel} is not configured")
            async with asyncio.timeout(self.config.timeout_s):
                await notifier.send(message)
        except (DeliveryError, TimeoutError) as exc:  # anything else is a bug: delivery_crashed
            error = exc
        finally:
            self.metrics.notification_seconds.labels(address.channel).observe(time.monotonic() - started)
        result = judge(where, error, msg.attempt, self.config.retry, self.config.timeout_s)
        self.metrics.notifications.labels(address.channel, msg.action, result.outcome).inc()
        log_at = {Outcome.SUCCESS: log.info, Outcome.RETRY: log.warning, Outcome.FAILED: log.error}
        log_at[result.outcome](
            "notification_" + result.outcome,
            incident_id=incident_id,
            channel=address.channel,
            attempt=msg.attempt,
            detail=result.text,
        )
        await self._note(incident_id, result.outcome.timeline_kind, address.channel, result.text)
        return result.retry_in_s

    def _message(self, inc: Incident, msg: OutboxMessage, policies: PolicySet) -> Message:
        return build_message(
            inc,
            msg.action,
            level=msg.level,
            target=msg.target,
            address="",
            policies=policies,
            public_url=self.config.public_url,
            decided_ms=msg.decided_ms,
        )

    async def _note(self, incident_id: str, kind: EntryKind, actor: str, text: str) -> None:
        await self.store.append_timeline(incident_id, TimelineEntry(self.clock.now_ms(), kind, actor, text))
