"""Every event takes one path: load, decide, commit guarded by the version; a lost race re-reads."""

import asyncio
import contextlib
import secrets
from collections import defaultdict
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import structlog

from engine.alerts import Alert, AlertStatus
from engine.clock import Clock
from engine.errors import ConflictError, IncidentNotFound, IngestError, StoreError
from engine.escalation import decide
from engine.events import Action, AlertsReceived, Decision, Event, Notify, RoutedAlert, TimerFired
from engine.incident import Incident, Status
from engine.manual import ManualIncident, routed_alert
from engine.manual import problems as manual_problems
from engine.metrics import Metrics, level_label
from engine.outbox import OutboxMessage, urgent
from engine.policy.heartbeats import silence_alert
from engine.policy.models import PolicySet
from engine.policy.routing import incident_key, route
from engine.repeats import Held
from engine.store import keys
from engine.store.base import DueTimer, Store

log = structlog.get_logger(__name__)
MAX_ATTEMPTS = 20
# key decisions of webhooks in flight at once, all webhooks together: a webhook with thousands
# of alerts is worked through in bounded batches. On a Cluster each holds a connection of its
# node's pool while it runs (redis-py's, 100 per node by default). Standalone,
# the decisions of one loop turn share a pipeline: more at once means more per round trip and
# fsync (24 -> 48: the shipped mix +16 % webhooks/s, all-new +5 %, same CPU per webhook).
INGEST_SLOTS = 48
T = TypeVar("T")
Outcome = tuple[str | None, bool, int]  # a key's incident id, opened, duplicates


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
        self._ingest_slots = asyncio.Semaphore(INGEST_SLOTS)
        self._timers_firing = 0
        self._ingest_open = asyncio.Event()
        self._ingest_open.set()
        self._turns: dict[str, list[Any]] = {}  # incident key -> [lock, holders and waiters]
        self._held = Held()  # the duplicate fast path's hint

    async def _slot(self, step: Callable[[], Awaitable[T]]) -> T:
        async with self._ingest_slots:
            # due timers go first: an open incident's deadline beats a new alert (checked with
            # the slot held, so that decisions already queued for a slot wait too)
            await self._ingest_open.wait()
            return await step()

    async def _in_turn(self, key: str, step: Callable[[], Awaitable[T]]) -> T:
        """One decision per incident key at a time in this process, the others queued in order:
        concurrent webhooks for one big incident would otherwise lose most of their guarded
        commits to each other and some run out of attempts (a 503). Taken before an ingest slot,
        so a queue on one key holds no slot another key could use."""
        turn = self._turns.get(key)
        if turn is None:
            turn = self._turns[key] = [asyncio.Lock(), 0]
        turn[1] += 1
        try:
            async with turn[0]:
                return await step()
        finally:
            turn[1] -= 1
            if not turn[1]:
                del self._turns[key]

    @contextlib.contextmanager
    def timers_first(self) -> Iterator[None]:
        """While due timers fire, no new ingest decision starts (those under way finish): on one
        event loop, the ladders of open incidents keep their deadlines whatever the alert load."""
        self._timers_firing += 1
        self._ingest_open.clear()
        try:
            yield
        finally:
            self._timers_firing -= 1
            if not self._timers_firing:
                self._ingest_open.set()

    async def ingest(self, alerts: Sequence[Alert]) -> IngestResult:
        """Route each alert, group by incident key, and run one decision per key."""
        policies = self.policies()
        by_key: dict[str, list[RoutedAlert]] = defaultdict(list)
        beats: dict[str, int] = {}
        for alert in alerts:
            for r in route(policies, alert.labels):
                if r.heartbeat_ms is None:
                    by_key[incident_key(r, alert)].append(RoutedAlert(alert, r))
                elif alert.status is AlertStatus.FIRING:  # a resolved Watchdog is no sign of life
                    beats[r.rule] = r.heartbeat_ms
        occurrences = {key: self._held.occurrences(key, routed) for key, routed in by_key.items()}
        outcomes = await self._count_repeats(by_key, occurrences)
        if rest := [key for key in by_key if key not in outcomes]:
            # incident keys are independent: decide them side by side (each is its own atomic
            # step), at most INGEST_SLOTS at a time across all webhooks (see there)
            steps = [partial(self._decide_key, key, by_key[key], occurrences[key], policies) for key in rest]
            decided = await _all(
                [self._in_turn(key, partial(self._slot, step)) for key, step in zip(rest, steps, strict=True)]
            )
            outcomes.update(zip(rest, decided, strict=True))
        if beats:
            await _all([self._slot(partial(self._beat, rule, ms, policies)) for rule, ms in beats.items()])
        result = IngestResult()
        for key in by_key:
            incident_id, opened, duplicates = outcomes[key]
            result.duplicates += duplicates
            result.opened += int(opened)
            if incident_id is not None:
                result.incidents.append(incident_id)
        return result

    async def _count_repeats(
        self, by_key: dict[str, list[RoutedAlert]], occurrences: dict[str, list[int]]
    ) -> dict[str, Outcome]:
        """The keys whose alerts are all held, offered to the store's duplicate fast path in one
        step: those it counted, as outcomes. It needs no turn on the key: it changes no version,
        and counts only what the incident holds at that instant."""
        tried = [key for key, occ in occurrences.items() if self._held.all_held(occ)]
        if not tried:
            return {}
        groups = [(key, [ra.alert for ra in by_key[key]]) for key in tried]
        found = await self._slot(partial(self.store.count_repeats, groups))
        outcomes: dict[str, Outcome] = {}
        for key, incident_id in zip(tried, found, strict=True):
            if incident_id is None:  # no longer repeats (the incident closed, say): in full
                self._held.forget(occurrences[key])
            else:
                outcomes[key] = (incident_id, False, len(by_key[key]))
        return outcomes

    async def _decide_key(
        self, key: str, routed: list[RoutedAlert], occurrences: list[int], policies: PolicySet
    ) -> Outcome:
        d = await self._ingest_key(key, routed, policies)
        self._held.saw(occurrences, routed, d.incident)
        return (None if d.incident is None else d.incident.id), d.opened, d.duplicates

    async def _ingest_key(self, key: str, routed: list[RoutedAlert], policies: PolicySet) -> Decision:
        shard = keys.shard_of_key(key)
        fingerprints = [ra.alert.fingerprint for ra in routed]  # only these alerts are read: O(k)
        return await self._run(
            lambda: self.store.load_by_key(key, fingerprints),
            lambda: AlertsReceived(tuple(routed), key, keys.new_incident_id(shard)),
            policies,
        )

    async def _beat(self, rule: str, interval_ms: int, policies: PolicySet) -> None:
        """A heartbeat: push the silence deadline out, and resolve a silence incident if one is open."""
        now = self.clock.now_ms()
        await self.store.beat(rule, now, now + interval_ms)
        back = silence_alert(rule, policies, AlertStatus.RESOLVED, now, now)
        if back is not None:
            await self._ingest_key(keys.heartbeat_key(rule), [back], policies)

    async def _silent(self, rule: str, due_ms: int) -> Decision:
        """A heartbeat's deadline passed: open "alerting pipeline silent" (once, on any replica)."""
        policies = self.policies()
        lost = silence_alert(rule, policies, AlertStatus.FIRING, due_ms, self.clock.now_ms())
        d = Decision(None)
        if lost is not None:  # starts at the deadline: every replica raises the same occurrence
            d = await self._ingest_key(keys.heartbeat_key(rule), [lost], policies)
        # done with this deadline; a heartbeat that moved it meanwhile is left alone
        await self.store.repair_timer(keys.heartbeat_timer(rule), due_ms, None)
        return d

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
        """A due timer: an incident's next step, or a heartbeat's deadline."""
        if (rule := keys.heartbeat_rule(incident_id)) is not None:
            return await self._silent(rule, due_ms)
        # a timer's decision reads no alert: the record and its aggregate are enough
        load = partial(self.store.load, incident_id, alerts=False)
        d = await self._run(load, lambda: TimerFired(due_ms), self.policies())
        if not d.changed:
            # stale, or the incident is gone or closed: make the timers set agree with the incident
            inc = d.incident
            wanted = inc.timer_ms if inc is not None and inc.is_open else None
            if wanted != due_ms:
                await self.store.repair_timer(incident_id, due_ms, wanted)
        return d

    async def fire_due(self, due: list[DueTimer]) -> tuple[list[tuple[DueTimer, Decision]], list[DueTimer]]:
        """Due timers read with their incidents (Store.due_incidents), decided and committed as
        one batch: a storm's thousands of timers take one pipeline, not a task and a read each.
        Returns the (timer, decision) pairs committed, and the timers left to `fire` one by one:
        heartbeats, stale or gone incidents, a commit lost to a concurrent writer, a failure."""
        policies = self.policies()
        now = self.clock.now_ms()
        commits: list[tuple[DueTimer, Incident, Decision, TimerFired]] = []
        rest: list[DueTimer] = []
        for t in due:
            if t.incident is None:
                rest.append(t)
                continue
            event = TimerFired(t.due_ms)
            try:
                d = decide(t.incident, event, now, policies)
            except Exception:  # fire() decides it again alone, where the scheduler reports it
                rest.append(t)
                continue
            if d.changed and d.incident is not None:
                commits.append((t, t.incident, d, event))
            else:  # stale: fire() makes the timers set agree with the incident
                rest.append(t)
        if not commits:
            return [], rest
        try:
            results = await self.store.commit_many(
                [(p, d, now, _outbox(d, now, policies)) for _, p, d, _ in commits]
            )
        except Exception:  # a record that cannot be written (nothing was sent): fire() finds which
            return [], due
        done = []
        for (t, previous, d, event), written in zip(commits, results, strict=True):
            if written is True:
                self._observe(previous, d, event)
                self.on_commit(d)
                done.append((t, d))
                continue
            if written is False:
                self.metrics.commit_conflicts.inc()
            rest.append(t)
        return done, rest

    async def open_manual(self, req: ManualIncident) -> Incident:
        """Open an incident by hand; raises IngestError (422) naming a bad field."""
        policies = self.policies()
        if found := manual_problems(req, policies):
            raise IngestError(f"invalid body: {found[0]}", [{"message": p} for p in found])
        fingerprint = secrets.token_hex(8)
        routed = routed_alert(req, policies, fingerprint, self.clock.now_ms())
        key = f"manual|{fingerprint}"
        new_id = keys.new_incident_id(keys.shard_of_key(key))
        d = await self._run(
            lambda: self.store.load_by_key(key),
            lambda: AlertsReceived((routed,), key, new_id, title=req.title, opened_by=req.reporter),
            policies,
        )
        assert d.incident is not None
        return d.incident

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
                else:  # what it rests on may be a refused commit's write: replicated before "done"
                    await self.store.settled(d.incident.id)
                return d
            try:
                await self.store.commit(previous, d, now, _outbox(d, now, policies))
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
        triggers = [e for e in d.effects if isinstance(e, Notify) and e.action is Action.TRIGGER]
        for e in triggers:
            self.metrics.escalations.labels(inc.severity, level_label(e.level)).inc()
        was = previous if previous is not None and not d.opened else None
        if inc.first_acked_ms is not None and (was is None or was.first_acked_ms is None):
            self.metrics.time_to_ack.labels(inc.severity).observe(
                (inc.first_acked_ms - inc.created_ms) / 1000
            )
        if inc.status is Status.RESOLVED and inc.resolved_ms is not None:
            self.metrics.time_to_resolve.labels(inc.severity).observe(
                (inc.resolved_ms - inc.created_ms) / 1000
            )
        pages = sum(len(e.targets) for e in triggers)
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


async def _all(steps: list[Coroutine[Any, Any, T]]) -> list[T]:
    """Every step's result; on the first failure the others are cancelled before it is raised,
    so a webhook answered 503 leaves no decisions of its own queued or running behind it."""
    tasks = [asyncio.ensure_future(step) for step in steps]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def _outbox(d: Decision, now_ms: int, policies: PolicySet) -> list[OutboxMessage]:
    inc = d.incident
    assert inc is not None
    rank, ranks = policies.severity_rank(inc.severity), len(policies.severities)
    return [
        OutboxMessage(
            inc.id,
            e.action,
            t,
            e.level,
            now_ms,
            note=e.note,
            update=e.update,
            urgent=urgent(e.action, e.level, rank, ranks),
        )
        for e in d.effects
        if isinstance(e, Notify)
        for t in e.targets
    ]
