"""Every metric the engine exports, built against an injected registry (tests pass a fresh one)."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from engine import __version__
from engine.events import Action
from engine.incident import Status
from engine.policy.channels import CHANNEL_KINDS

STATES = tuple(s.value for s in Status if s is not Status.RESOLVED)  # the gauge counts open incidents
OUTCOMES = ("success", "retry", "failed")  # engine.delivery.retry.Outcome
DEAD_LETTER_REASONS = ("unreadable", "crashed")  # engine.delivery.loop


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        Info("escalation_build", "Engine version", registry=registry).info({"version": __version__})
        self.webhooks = Counter(
            "escalation_webhook_requests_total",
            "Alertmanager webhook requests by HTTP status code",
            ["code"],
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
        self.timer_lateness = Histogram(
            "escalation_timer_lateness_seconds",
            "How late escalation timers fired after their due time",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60),
            registry=registry,
        )
        self.dead_letters = Counter(
            "escalation_dead_letters_total",
            "Outbox entries given up on for good and kept as dead letters, by reason",
            ["reason"],
            registry=registry,
        )
        for reason in DEAD_LETTER_REASONS:
            self.dead_letters.labels(reason)
        self.commit_conflicts = Counter(
            "escalation_commit_conflicts_total",
            "Decisions re-read and re-decided after losing a race with another writer",
            registry=registry,
        )
        for status in ("firing", "resolved"):
            self.alerts.labels(status)
        for kind in CHANNEL_KINDS:
            for action in Action:
                for outcome in OUTCOMES:
                    self.notifications.labels(kind.name, action.value, outcome)

    def set_open_counts(self, counts: dict[tuple[str, str], int], severities: list[str]) -> None:
        for state in STATES:
            for severity in {*severities, *(s for _, s in counts)}:
                self.incidents.labels(state, severity).set(counts.get((state, severity), 0))
