"""One channel kind's worker: sends the entries of its own stream, one address each, behind the
endpoint's circuit breaker and rate limit; retries, fails over to the person's next contact
method, and dead-letters what finally fails."""

import asyncio
import time

import structlog

from engine.delivery.breaker import State
from engine.delivery.consumer import Consumer, Shared
from engine.delivery.failover import next_contact
from engine.delivery.plan import plan
from engine.delivery.retry import MAX_RETRY_AFTER_S, Outcome, judge
from engine.errors import DeliveryError, PermanentDeliveryError, RetryableDeliveryError
from engine.incident import Incident
from engine.messages import SHOWN_ALERTS, Message, build_message
from engine.outbox import OutboxMessage
from engine.policy.targets import Address
from engine.store.base import OutboxEntry
from engine.timeline import EntryKind

log = structlog.get_logger(__name__)
# level names, looked up per call: a logger method taken at import time would skip the
# logging configuration `serve` applies later
_LOG_AT = {Outcome.SUCCESS: "info", Outcome.RETRY: "warning", Outcome.FAILED: "error"}


class ChannelWorker(Consumer):
    def __init__(self, shared: Shared, channel: str) -> None:
        super().__init__(shared, channel)

    async def deliver(self, entry: OutboxEntry) -> None:
        s, msg = self.shared, entry.message
        address = msg.address
        if address is None or address.channel != self.channel:  # not this queue's: dispatch decides
            raise ValueError(f"{self.channel} queue holds a message for {address or msg.target}")
        # the record decides whether and when; the alerts are read only for a message that goes
        # (a storm parks most sends for their rate-limit turn: each read every alert for nothing)
        inc = await s.store.load(msg.incident_id, alerts=False)
        if inc is None:
            await s.store.ack(entry)
            return
        policies = s.policies()
        todo = plan(msg, inc, policies, s.notifiers.keys(), s.clock.now_ms())
        if todo.skipped:
            text = f"{msg.action} to {msg.target} skipped: {todo.skipped}"
            await s.note(inc.id, EntryKind.PAGE_SKIPPED, "engine", text)
            await s.store.ack(entry)
            return
        notifier = s.notifiers.get(self.channel)
        endpoint = notifier.endpoint(address.name) if notifier is not None else address.name
        # a send that cannot go at all (no secret, no such endpoint) fails now, without waiting
        # for a rate-limit turn or touching the endpoint's breaker: it was never tried
        cannot = (
            f"channel {self.channel} is not configured"
            if notifier is None
            else notifier.unusable(address.name)
        )
        if cannot is not None:
            await self._outcome(
                entry, inc, address, endpoint, PermanentDeliveryError(cannot), None, tried=False
            )
            return
        assert notifier is not None
        if not await self._may_send(entry, address, endpoint):
            return
        # the alerts the message shows, not all: a page costs the same at 10 alerts as at 10,000
        inc = await s.store.load_shown(msg.incident_id, SHOWN_ALERTS) or inc  # gone: the record will do
        error: Exception | None = None
        ref: str | None = None
        async with s.send_slot(self.channel, msg.urgent):
            started = time.monotonic()
            try:
                thread = await s.store.thread(inc.id, self.channel, address.name)
                message = await self._message(inc, msg, address)
                async with asyncio.timeout(s.config.timeout_s):
                    ref = await notifier.send(message, thread)
            except (DeliveryError, TimeoutError) as exc:  # anything else is a bug: delivery_crashed
                error = exc
            finally:
                s.metrics.notification_seconds.labels(self.channel).observe(time.monotonic() - started)
        await self._outcome(entry, inc, address, endpoint, error, ref)

    async def _may_send(self, entry: OutboxEntry, address: Address, endpoint: str) -> bool:
        """The rate limit, then the breaker; False when the entry was parked or handed on instead."""
        s, msg = self.shared, entry.message
        now_s = s.clock.now_ms() / 1000
        # its turn is reserved now, even a far one: parked sends then come back one turn apart,
        # instead of all at the next free turn, one going and the rest parked again (a backlog
        # of n cost n² moves). A send back from such a park goes without asking again.
        wait_s = 0.0 if msg.paced else s.limits.wait_s(self.channel, endpoint, now_s, urgent=msg.urgent)
        if wait_s > 0:
            s.metrics.deferred.labels(self.channel, "rate_limit").inc()
            if wait_s > s.config.rate_wait_max_s:  # its turn is far: park it, the worker moves on
                held = s.limits.paused(self.channel, endpoint, now_s)  # a pause reserves no turn
                later = msg if held else msg.in_turn()
                await s.store.move(entry, [], [(s.clock.now_ms() + int(wait_s * 1000), later)])
                return False
            await asyncio.sleep(wait_s)  # its turn is reserved
        now = s.clock.now_ms() / 1000
        if s.breakers.allow(self.channel, endpoint, now):
            return True
        s.metrics.deferred.labels(self.channel, "breaker_open").inc()
        where = f"{msg.action} to {address.channel}:{address.name} ({msg.target})"
        down = f"{self.channel} {endpoint} is down (breaker open)"
        alt = self._failover(address)
        if alt is not None:
            if await s.store.move(entry, [msg.to(alt).first_attempt()], []):
                await self._failed_over(msg, address, alt, f"{where} not tried: {down}")
            return False
        # held, not tried: no attempt is used up, and the timeline says so once per incident
        breaker = s.breakers.get(self.channel, endpoint)
        wait_s = breaker.retry_in_s(now)
        await s.store.move(entry, [], [(s.clock.now_ms() + int(wait_s * 1000), msg)])
        if msg.incident_id not in breaker.held:
            breaker.held.add(msg.incident_id)
            text = f"{where} held: {down}; sent when it answers again"
            await s.note(msg.incident_id, EntryKind.DELIVERY_RETRY, self.channel, text)
        return False

    async def _outcome(
        self,
        entry: OutboxEntry,
        inc: Incident,
        address: Address,
        endpoint: str,
        error: Exception | None,
        ref: str | None,
        tried: bool = True,
    ) -> None:
        s, msg = self.shared, entry.message
        where = f"{msg.action} to {address.channel}:{address.name} ({msg.target})"
        result = judge(where, error, msg.attempt, s.config.retry, s.config.timeout_s)
        now = s.clock.now_ms() / 1000
        asked_s = error.retry_after_s if isinstance(error, RetryableDeliveryError) else None
        rate_limited = asked_s is not None
        if asked_s:  # the provider's "retry after" holds every send to this endpoint
            s.limits.pause(self.channel, endpoint, min(asked_s, MAX_RETRY_AFTER_S), now)
        # an outage opens the breaker; a rate limit or a rejected message shows the endpoint is up
        outage = isinstance(error, TimeoutError) or (
            isinstance(error, RetryableDeliveryError) and not rate_limited
        )
        changed = s.breakers.record(self.channel, endpoint, not outage, now) if tried else None
        if changed is not None:
            await self._breaker_changed(inc.id, endpoint, changed)
        s.metrics.notifications.labels(self.channel, msg.action, result.outcome).inc()
        if result.outcome is not Outcome.RETRY:
            s.metrics.delivery_latency.labels(self.channel).observe(
                max(0, s.clock.now_ms() - msg.decided_ms) / 1000
            )
        getattr(log, _LOG_AT[result.outcome])(
            "notification_" + result.outcome,
            incident_id=inc.id,
            channel=self.channel,
            attempt=msg.attempt,
            detail=result.text,
        )
        await s.note(inc.id, result.outcome.timeline_kind, self.channel, result.text)
        if result.outcome is Outcome.SUCCESS:
            await s.store.delivered(entry, ref)  # the thread reference kept in the same step
        elif result.outcome is Outcome.RETRY:
            assert result.retry_in_s is not None
            due_ms = s.clock.now_ms() + int(result.retry_in_s * 1000)
            await s.store.move(entry, [], [(due_ms, msg.retry(address))])
        else:
            await self._give_up(entry, address, "failed", result.text)

    async def _give_up(self, entry: OutboxEntry, address: Address, reason: str, why: str) -> None:
        """A dead letter, and the person's next contact method in the same step."""
        msg = entry.message
        alt = self._failover(address)
        handover = msg.to(alt).first_attempt() if alt is not None else None
        if alt is not None:
            await self._failed_over(msg, address, alt, why)
        await self.dead_letter(entry, reason, why, handover)

    async def _crashed(self, entry: OutboxEntry, exc: Exception) -> None:
        """A send that keeps crashing (bad data, a bug) still reaches the person another way."""
        msg, address = entry.message, entry.message.address
        if address is None or msg.attempt + 1 < self.shared.config.max_attempts:
            await super()._crashed(entry, exc)
            return
        why = f"{msg.action} to {msg.target} failed {msg.attempt + 1} times: {type(exc).__name__}: {exc}"
        await self._give_up(entry, address, "crashed", why)

    def _failover(self, address: Address) -> Address | None:
        s = self.shared
        now = s.clock.now_ms() / 1000

        def usable(a: Address) -> bool:
            notifier = s.notifiers.get(a.channel)
            return notifier is not None and not s.breakers.is_open(a.channel, notifier.endpoint(a.name), now)

        return next_contact(address, s.policies(), s.notifiers.keys(), usable)

    async def _failed_over(self, msg: OutboxMessage, old: Address, new: Address, why: str) -> None:
        s = self.shared
        s.metrics.failovers.labels(old.channel, new.channel).inc()
        text = f"{why}; failing over to {new.channel}:{new.name}, {new.person}'s next contact method"
        log.warning("notification_failover", incident_id=msg.incident_id, channel=old.channel, to=new.channel)
        await s.note(msg.incident_id, EntryKind.FAILOVER, "engine", text)
        s.wake(new.channel)

    async def _breaker_changed(self, incident_id: str, endpoint: str, state: State) -> None:
        s = self.shared
        cfg = s.config
        text = {
            State.OPEN: f"{self.channel} {endpoint}: circuit breaker open after "
            f"{cfg.breaker_failures} failures; sends held or failed over for {cfg.breaker_open_s:g}s",
            State.CLOSED: f"{self.channel} {endpoint}: circuit breaker closed, sends go through again",
            State.HALF_OPEN: f"{self.channel} {endpoint}: circuit breaker half-open, probing",
        }[state]
        log.warning("breaker_" + state.name.lower(), channel=self.channel, endpoint=endpoint)
        await s.note(incident_id, EntryKind.BREAKER, "engine", text)

    async def _message(self, inc: Incident, msg: OutboxMessage, address: Address) -> Message:
        s = self.shared
        links: dict[str, str] = {}
        if s.link_secret is not None and inc.is_open:  # valid from now: a re-driven page's too
            links = await s.link_secret.links(inc.id, s.clock.now_ms())
        return build_message(
            inc,
            msg.action,
            level=msg.level,
            target=msg.target,
            address=address.name,
            policies=s.policies(),
            public_url=s.config.public_url,
            decided_ms=msg.decided_ms,
            links=links,
            note=msg.note,
            update=msg.update,
        )
