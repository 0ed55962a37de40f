"""Every metric the engine exports, built against an injected registry (tests pass a fresh one).

Names follow Prometheus' conventions (base units, `_total` counters, `_timestamp_seconds`);
every label has a bounded set of values: channels, actions, outcomes, the policies' severities,
ladder levels, store operations, heartbeat rule names. No incident ids, no free text.
"""

import platform
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, disable_created_metrics

from engine import __version__
from engine.events import Action
from engine.incident import Status
from engine.policy.channels import CHANNEL_KINDS

STATES = tuple(s.value for s in Status if s is not Status.RESOLVED)  # the gauge counts open incidents
OUTCOMES = ("success", "retry", "failed")  # engine.delivery.retry.Outcome
DEAD_LETTER_REASONS = ("unreadable", "crashed", "failed")  # engine.delivery
DISPATCH_QUEUE = "dispatch"  # the `channel` label of the decided outbox, before the channel split
DEFER_REASONS = ("rate_limit", "breaker_open")
MAX_LEVEL_LABEL = 10  # ladder levels above this share the label "10+"
# minutes to hours (MTTA) and to days (MTTR): the runbooks' targets are 5m..24h
ACK_BUCKETS_S = (30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 43200, 86400)
RESOLVE_BUCKETS_S = (60, 300, 900, 1800, 3600, 7200, 14400, 28800, 86400, 259200, 604800)
STORE_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5)
# the store's steps grouped by what they serve: few enough series for a histogram each
STORE_OPERATIONS = {
    "load incident": "load",
    "load incident by key": "load",
    "commit decision": "commit",
    "commit decisions": "commit",  # a batch of fired timers, side by side
    "count duplicates": "commit",
    "count repeats": "commit",  # the duplicate fast path: a write, WAITed for like a commit
    "read timeline": "timeline",
    "append timeline": "timeline",
    "read due timers": "timers",
    "read next timer": "timers",
    "repair timer": "timers",
    "drop dangling pointer": "timers",
    "record heartbeat": "timers",
    "read outbox": "outbox",
    "claim stale deliveries": "outbox",
    "ack delivery": "outbox",
    "schedule delivery retry": "outbox",
    "move due retries": "outbox",
    "dead-letter delivery": "outbox",
    "keep deliveries": "outbox",
    "move delivery": "outbox",
}
OTHER_STORE_OPERATION = "read"  # listing, counts, stats, heartbeats, ping: reads for people and gauges

# Prometheus 2.x ignores the `_created` series client_python adds to every counter and histogram
# in the text format; they would double the series count for nothing.
disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped in client_python


def operation_label(step: str) -> str:
    """A store step ("load incident by key") as its operation label ("load")."""
    return STORE_OPERATIONS.get(step, OTHER_STORE_OPERATION)


def level_label(level: int) -> str:
    """A 0-based ladder level as the 1-based label people read; bounded."""
    return str(level + 1) if level + 1 < MAX_LEVEL_LABEL else f"{MAX_LEVEL_LABEL}+"


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        Info("escalation_build", "Engine version", registry=registry).info(
            {"version": __version__, "python_version": platform.python_version()}
        )
        # ingest
        self.webhooks = Counter(
            "escalation_webhook_requests_total",
            "Alertmanager webhook requests by HTTP status code",
            ["code"],
            registry=registry,
        )
        self.webhooks_shed = Counter(
            "escalation_webhooks_shed_total",
            "Webhooks answered 503 with Retry-After at once because too many were in flight",
            registry=registry,
        )
        self.alerts = Counter(
            "escalation_alerts_received_total", "Alerts received by status", ["status"], registry=registry
        )
        self.duplicates = Counter(
            "escalation_duplicate_alerts_total",
            "Alert occurrences already known (HA pair, retry, repeat_interval), counted and not re-applied",
            registry=registry,
        )
        # incidents
        self.incidents_opened = Counter(
            "escalation_incidents_opened_total",
            "Incidents opened by severity",
            ["severity"],
            registry=registry,
        )
        self.incidents = Gauge(
            "escalation_incidents",
            "Open incidents by state and severity (all replicas, read from the store)",
            ["state", "severity"],
            registry=registry,
        )
        self.escalations = Counter(
            "escalation_escalations_total",
            "Ladder levels paged (first page, escalations, repeats), by severity and 1-based level",
            ["severity", "level"],
            registry=registry,
        )
        self.time_to_ack = Histogram(
            "escalation_time_to_acknowledge_seconds",
            "From trigger to first acknowledgement, by severity (MTTA = sum / count)",
            ["severity"],
            buckets=ACK_BUCKETS_S,
            registry=registry,
        )
        self.time_to_resolve = Histogram(
            "escalation_time_to_resolve_seconds",
            "From trigger to resolution, by severity (MTTR = sum / count)",
            ["severity"],
            buckets=RESOLVE_BUCKETS_S,
            registry=registry,
        )
        self.ack_target = Gauge(
            "escalation_severity_ack_target_seconds",
            "Each severity's target time to acknowledge (ack_within in the policies)",
            ["severity"],
            registry=registry,
        )
        # delivery
        self.notifications = Counter(
            "escalation_notifications_total",
            "Notification delivery attempts by channel, action and outcome",
            ["channel", "action", "outcome"],
            registry=registry,
        )
        self.notification_seconds = Histogram(
            "escalation_notification_duration_seconds",
            "Time spent sending one notification",
            ["channel"],
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=registry,
        )
        self.dead_letters = Counter(
            "escalation_dead_letters_total",
            "Notifications given up on for good and kept as dead letters, by reason and channel",
            ["reason", "channel"],
            registry=registry,
        )
        self.outbox_depth = Gauge(
            "escalation_outbox_depth",
            "Notifications waiting per queue (dispatch, then one per channel): pending (to send or "
            "in flight) and retry (parked until due)",
            ["channel", "queue"],
            registry=registry,
        )
        self.outbox_oldest_age = Gauge(
            "escalation_outbox_oldest_age_seconds",
            "Age of the oldest pending entry of each queue (0 when none)",
            ["channel"],
            registry=registry,
        )
        self.delivery_latency = Histogram(
            "escalation_delivery_latency_seconds",
            "From the decision to page to the provider's answer, per channel (retries included)",
            ["channel"],
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=registry,
        )
        self.store_state_lost = Gauge(
            "escalation_store_state_lost",
            "1 when Redis no longer holds this engine's state (restarted empty, flushed)",
            registry=registry,
        )
        self.breaker_state = Gauge(
            "escalation_breaker_state",
            "Circuit breaker per channel endpoint: 0 closed, 1 open, 2 half-open",
            ["channel", "endpoint"],
            registry=registry,
        )
        self.failovers = Counter(
            "escalation_failovers_total",
            "Notifications handed to a person's next contact method, from and to channel",
            ["from_channel", "to_channel"],
            registry=registry,
        )
        self.deferred = Counter(
            "escalation_notifications_deferred_total",
            "Sends held back before trying: rate limit (or a provider's Retry-After), breaker open",
            ["channel", "reason"],
            registry=registry,
        )
        # timers, store, config
        self.timer_lateness = Histogram(
            "escalation_timer_lateness_seconds",
            "How late escalation timers fired after their due time",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60),
            registry=registry,
        )
        self.store_seconds = Histogram(
            "escalation_store_operation_duration_seconds",
            "Time of one store operation (one Redis round trip or script), by operation",
            ["operation"],
            buckets=STORE_BUCKETS_S,
            registry=registry,
        )
        self._store_timers: dict[str, Any] = {}
        self.store_errors = Counter(
            "escalation_store_errors_total",
            "Store operations that failed (Redis unreachable or erroring), by operation",
            ["operation"],
            registry=registry,
        )
        self.commit_conflicts = Counter(
            "escalation_commit_conflicts_total",
            "Decisions re-read and re-decided after losing a race with another writer",
            registry=registry,
        )
        self.worker_restarts = Counter(
            "escalation_worker_restarts_total",
            "Times serve restarted its worker process (timers, delivery) after it exited",
            registry=registry,
        )
        self.config_ok = Gauge(
            "escalation_config_last_reload_successful",
            "1 when the last policy load or reload succeeded",
            registry=registry,
        )
        self.config_loaded_at = Gauge(
            "escalation_config_last_reload_success_timestamp_seconds",
            "When the policies in force were loaded",
            registry=registry,
        )
        self.heartbeat_seen = Gauge(
            "escalation_heartbeat_last_seen_timestamp_seconds",
            "When the heartbeat alert of each heartbeat rule was last received (0: never)",
            ["rule"],
            registry=registry,
        )
        self.heartbeat_interval = Gauge(
            "escalation_heartbeat_interval_seconds",
            "How long each heartbeat rule may stay silent before an incident opens",
            ["rule"],
            registry=registry,
        )
        self._precreate()

    def _precreate(self) -> None:
        """Known label combinations exist from the start, at 0, so rate() and alerts see them."""
        # each webhook counts its alerts: labels() hashes and locks on every call, so kept once
        self.alerts_firing, self.alerts_resolved = (self.alerts.labels(s) for s in ("firing", "resolved"))
        for kind in CHANNEL_KINDS:
            self.notification_seconds.labels(kind.name)
            for action in Action:
                for outcome in OUTCOMES:
                    self.notifications.labels(kind.name, action.value, outcome)
        queues = [DISPATCH_QUEUE, *(kind.name for kind in CHANNEL_KINDS)]
        for channel in queues:
            for reason in DEAD_LETTER_REASONS:
                self.dead_letters.labels(reason, channel)
            for queue in ("pending", "retry"):
                self.outbox_depth.labels(channel, queue)
            self.outbox_oldest_age.labels(channel)
        for kind in CHANNEL_KINDS:
            self.delivery_latency.labels(kind.name)
            for why in DEFER_REASONS:
                self.deferred.labels(kind.name, why)
        for operation in {*STORE_OPERATIONS.values(), OTHER_STORE_OPERATION}:
            self.store_errors.labels(operation)

    def set_policies(
        self, severities: dict[str, int | None], heartbeats: dict[str, int], now_s: float
    ) -> None:
        """What the policies in force say: targets per severity, heartbeat intervals; loaded now."""
        for severity, target_ms in severities.items():
            self.incidents_opened.labels(severity)
            if target_ms is not None:
                self.ack_target.labels(severity).set(target_ms / 1000)
        for rule, interval_ms in heartbeats.items():
            self.heartbeat_interval.labels(rule).set(interval_ms / 1000)
            self.heartbeat_seen.labels(rule)
        self.config_ok.set(1)
        self.config_loaded_at.set(now_s)

    def set_open_counts(self, counts: dict[tuple[str, str], int], severities: list[str]) -> None:
        for state in STATES:
            for severity in {*severities, *(s for _, s in counts)}:
                self.incidents.labels(state, severity).set(counts.get((state, severity), 0))

    def observe_store(self, step: str, seconds: float, ok: bool) -> None:
        operation = operation_label(step)
        timed = self._store_timers.get(operation)
        if timed is None:  # labels() hashes and locks on every call: keep each child once
            timed = self._store_timers[operation] = self.store_seconds.labels(operation)
        timed.observe(seconds)
        if not ok:
            self.store_errors.labels(operation).inc()
