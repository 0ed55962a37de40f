"""Outbox -> notifiers: at least once, retries with backoff and jitter, outcomes on the timeline."""

import asyncio
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from engine.clock import Clock
from engine.errors import PermanentDeliveryError, RetryableDeliveryError, StoreError
from engine.escalation import policy_of
from engine.incident import Incident, Status
from engine.messages import build_message
from engine.metrics import Metrics
from engine.notifiers.base import Action, Notifier
from engine.policy.models import PolicySet
from engine.store.redis import OutboxEntry, RedisStore

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


def expand_target(target: str, policies: PolicySet) -> list[tuple[str, str]]:
    """A policy target -> the (channel, address) pairs to send to, resolved at send time."""
    kind, _, name = target.partition(":")
    if kind in ("pagerduty", "webhook", "email", "slack"):
        return [(kind, name)]
    if kind == "user":
        user = policies.users.get(name)
        if user is None:
            return []
        methods = [("email", user.email), ("slack", user.slack), ("pagerduty", user.pagerduty)]
        return [(channel, address) for channel, address in methods if address]
    return []  # schedule:, team: arrive with on-call schedules


_KIND = {"success": "delivered", "retry": "delivery_retry", "failed": "delivery_failed"}


def _stale(inc: Incident, action: Action, policies: PolicySet) -> str:
    """Why a decided notification no longer applies by the time it is sent ("" when it does)."""
    if action is Action.TRIGGER:
        if inc.status is Status.RESOLVED:
            return "already resolved"
        if inc.status is Status.SNOOZED:
            return "snoozed"
        if inc.status is Status.ACKNOWLEDGED and policy_of(inc, policies).until == "acknowledged":
            return "already acknowledged"
    if action is Action.ACKNOWLEDGE and inc.status is not Status.ACKNOWLEDGED:
        return f"incident is {inc.status} now"
    return ""


def _unreachable(target: str, policies: PolicySet) -> str:
    kind, _, name = target.partition(":")
    if kind == "user":
        if name not in policies.users:
            return f"{target}: no such user"
        return f"{target}: no contact method on a configured channel (email, slack, pagerduty)"
    return f"{target}: {kind} targets cannot be delivered by this release yet"


def backoff_s(attempt: int, base_s: float, max_s: float) -> float:
    """Full jitter: uniform in [base/2, min(max, base * 2**attempt)]."""
    ceiling = min(max_s, base_s * 2**attempt)
    return random.uniform(min(base_s / 2, ceiling), ceiling)  # noqa: S311 - jitter, not security


class Delivery:
    def __init__(
        self,
        store: RedisStore,
        notifiers: Mapping[str, Notifier],
        policies: Callable[[], PolicySet],
        clock: Clock,
        metrics: Metrics,
        config: DeliveryConfig,
    ) -> None:
        self.store = store
        self.notifiers = notifiers
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

    async def _handle_batch(self, entries: list[OutboxEntry]) -> None:
        """Incidents in parallel; one incident's entries in order, so an ack never overtakes its page."""
        by_incident: dict[str, list[OutboxEntry]] = {}
        for e in entries:
            by_incident.setdefault(str(e.message.get("incident_id")), []).append(e)

        async def in_order(group: list[OutboxEntry]) -> None:
            for e in group:
                try:
                    await self.handle(e)
                except StoreError:
                    raise
                except Exception as exc:  # left pending: claimed again after claim_idle_s
                    log.exception("delivery_crashed", entry=e.entry_id, error=repr(exc))

        await asyncio.gather(*(in_order(g) for g in by_incident.values()))

    async def handle(self, entry: OutboxEntry) -> None:
        """Send one outbox entry to every address its target expands to; ack or park retries."""
        msg = entry.message
        policies = self.policies()
        inc = await self.store.load(msg["incident_id"])
        action = Action(msg["action"])
        if inc is None:
            await self.store.ack(entry)
            return
        stale = _stale(inc, action, policies)
        if stale:
            await self._note(
                inc.id, "page_skipped", "engine", f"{action} to {msg['target']} skipped: {stale}"
            )
            await self.store.ack(entry)
            return
        if "channel" in msg:
            pairs = [(msg["channel"], msg["address"])]
        else:
            pairs = expand_target(msg["target"], policies)
            if msg["target"].startswith("user:"):
                # a person is reached through the channels this engine has; others are not errors
                pairs = [(c, a) for c, a in pairs if c in self.notifiers]
            if not pairs:
                await self._note(inc.id, "delivery_failed", "engine", _unreachable(msg["target"], policies))
        retries: list[tuple[int, dict[str, Any]]] = []
        for channel, address in pairs:
            attempt = int(msg.get("attempt", 0))
            message = build_message(
                inc,
                action,
                level=int(msg["level"]),
                target=msg["target"],
                address=address,
                policies=policies,
                public_url=self.config.public_url,
                decided_ms=int(msg.get("at_ms", 0)),
            )
            retry_after = await self._send(inc.id, channel, address, message, attempt)
            if retry_after is not None:
                retries.append(
                    (
                        self.clock.now_ms() + int(retry_after * 1000),
                        {**msg, "channel": channel, "address": address, "attempt": attempt + 1},
                    )
                )
        if retries:
            await self.store.retry_later(entry, retries)
        else:
            await self.store.ack(entry)

    async def _send(
        self, incident_id: str, channel: str, address: str, message: Any, attempt: int
    ) -> float | None:
        """Returns the delay before a retry, or None when done (delivered or given up)."""
        where = f"{message.action} to {channel}:{address} ({message.target})"
        notifier = self.notifiers.get(channel)
        started = time.monotonic()
        outcome, text, delay = "success", f"{where} delivered", None
        try:
            if notifier is None:
                raise PermanentDeliveryError(f"channel {channel} is not configured")
            async with asyncio.timeout(self.config.timeout_s):
                await notifier.send(message)
        except (RetryableDeliveryError, TimeoutError) as exc:
            reason = str(exc) or f"no answer within {self.config.timeout_s:g}s"
            if attempt + 1 >= self.config.max_attempts:
                outcome, text = "failed", f"{where} gave up after {attempt + 1} attempts: {reason}"
            else:
                retry_after = exc.retry_after_s if isinstance(exc, RetryableDeliveryError) else None
                delay = max(
                    retry_after or 0.0, backoff_s(attempt, self.config.backoff_s, self.config.backoff_max_s)
                )
                outcome, text = "retry", f"{where} failed ({reason}); retry in {delay:.1f}s"
        except PermanentDeliveryError as exc:
            outcome, text = "failed", f"{where} failed: {exc}"
        finally:
            self.metrics.notification_seconds.labels(channel).observe(time.monotonic() - started)
        self.metrics.notifications.labels(channel, message.action, outcome).inc()
        log_at = log.info if outcome == "success" else log.warning if outcome == "retry" else log.error
        log_at(
            "notification_" + outcome, incident_id=incident_id, channel=channel, attempt=attempt, detail=text
        )
        await self._note(incident_id, _KIND[outcome], channel, text)
        return delay

    async def _note(self, incident_id: str, kind: str, actor: str, text: str) -> None:
        entry = {"at_ms": self.clock.now_ms(), "kind": kind, "actor": actor, "text": text}
        await self.store.append_timeline(incident_id, entry)
