"""Every event takes one path: load, decide, commit guarded by the version; a lost race re-reads."""

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import structlog

from engine.alerts import Alert
from engine.clock import Clock
from engine.errors import ConflictError, IncidentNotFound, StoreError
from engine.escalation import decide
from engine.events import Action, AlertsReceived, Decision, Event, Notify, RoutedAlert, TimerFired
from engine.incident import Incident
from engine.metrics import Metrics
from engine.outbox import OutboxMessage
from engine.policy.models import PolicySet
from engine.policy.routing import incident_key, route
from engine.store import keys
from engine.store.base import Store

log = structlog.get_logger(__name__)
MAX_ATTEMPTS = 20


@dataclass(slots=True)
class IngestResult:
    incidents: list[str] = field(default_factory=list)  # ids touched or opened
    opened: int = 0
    duplicates: int = 0


class Processor:
    """Owns the one write path for incidents: alerts, people's actions and fired timers.

    Each call takes one policy snapshot, so routing and deciding see the same policy set even
    when a reload swaps it meanwhile.
    """

    def __init__(
        self,
        store: Store,
        policies: Callable[[], PolicySet],
        clock: Clock,
        metrics: Metrics,
        on_commit: Callable[[Decision], None] = lambda d: None,
    ) -> None:
        self.store = store
        self.policies = policies
        self.clock = clock
        self.metrics = metrics
        self.on_commit = on_commit

    async def ingest(self, alerts: list[Alert]) -> IngestResult:
        """Route each alert, group by incident key, and run one decision per key."""
        policies = self.policies()
        by_key: dict[str, list[RoutedAlert]] = defaultdict(list)
        for alert in alerts:
            for r in route(policies, alert.labels):
                by_key[incident_key(r, alert)].append(RoutedAlert(alert, r))
        # incident keys are independent: decide them side by side (each is its own atomic step)
        decisions = await asyncio.gather(
            *(self._ingest_key(key, routed, policies) for key, routed in by_key.items())
        )
        result = IngestResult()
        for d in decisions:
            result.duplicates += d.duplicates
            result.opened += int(d.opened)
            if d.incident is not None:
                result.incidents.append(d.incident.id)
        return result

    async def _ingest_key(self, key: str, routed: list[RoutedAlert], policies: PolicySet) -> Decision:
        shard = keys.shard_of_key(key)
        return await self._run(
            lambda: self.store.load_by_key(key),
            lambda: AlertsReceived(tuple(routed), key, keys.new_incident_id(shard)),
            policies,
        )

    async def act(self, incident_id: str, event: Event) -> Incident:
        async def load() -> Incident:
            inc = await self.store.load(incident_id)
            if inc is None:
                raise IncidentNotFound(incident_id)
            return inc

        d = await self._run(load, lambda: event, self.policies())
        assert d.incident is not None
        return d.incident

    async def fire(self, incident_id: str, due_ms: int) -> Decision:
        d = await self._run(lambda: self.store.load(incident_id), lambda: TimerFired(due_ms), self.policies())
        if not d.changed:
            # stale, or the incident is gone or closed: make the timers set agree with the incident
            inc = d.incident
            wanted = inc.timer_ms if inc is not None and inc.is_open else None
            if wanted != due_ms:
                await self.store.repair_timer(incident_id, due_ms, wanted)
        return d

    async def _run(
        self,
        load: Callable[[], Awaitable[Incident | None]],
        make_event: Callable[[], Event],
        policies: PolicySet,
    ) -> Decision:
        for _ in range(MAX_ATTEMPTS):
            previous = await load()
            now = self.clock.now_ms()
            event = make_event()
            d = decide(previous, event, now, policies)
            if d.incident is None:
                return d
            if not d.changed:
                if d.duplicates and d.incident.is_open:
                    await self.store.count_duplicates(d.incident.id, d.duplicates)
                return d
            try:
                await self.store.commit(previous, d, now, _outbox(d, now))
            except ConflictError:
                self.metrics.commit_conflicts.inc()
                continue
            self._observe(previous, d, event)
            self.on_commit(d)
            return d
        raise StoreError("commit decision: too many concurrent writers")

    def _observe(self, previous: Incident | None, d: Decision, event: Event) -> None:
        inc = d.incident
        assert inc is not None
        if d.opened:
            self.metrics.incidents_opened.labels(inc.severity).inc()
        pages = sum(len(e.targets) for e in d.effects if isinstance(e, Notify) and e.action is Action.TRIGGER)
        log.info(
            "incident_changed",
            incident_id=inc.id,
            cause=type(event).__name__,
            before=previous.status if previous is not None and not d.opened else None,
            after=inc.status,
            severity=inc.severity,
            policy=inc.policy,
            step=inc.step,
            timer_ms=inc.timer_ms,
            pages=pages,
        )


def _outbox(d: Decision, now_ms: int) -> list[OutboxMessage]:
    inc = d.incident
    assert inc is not None
    return [
        OutboxMessage(inc.id, e.action, t, e.level, now_ms)
        for e in d.effects
        if isinstance(e, Notify)
        for t in e.targets
    ]
