"""A small policy set and event builders shared by the state-machine tests."""

from engine.alerts import Alert, AlertStatus
from engine.escalation import decide
from engine.events import Action, AlertsReceived, Decision, Event, Notify, RoutedAlert
from engine.incident import Incident
from engine.policy.models import PolicySet
from engine.policy.routing import Route

MIN = 60_000
T0 = 1_800_000_000_000  # an arbitrary epoch ms

POLICIES = PolicySet.model_validate(
    {
        "severities": {"P0": {"description": "outage"}, "P1": {}, "P2": {}, "P3": {}},
        "default": {"severity": "P3", "policy": "std"},
        "escalation_policies": {
            "crit": {
                "until": "acknowledged",
                "ack_timeout": "30m",
                "repeat": 1,
                "repeat_after": "15m",
                "levels": [
                    {"after": "0s", "notify": ["user:a", "pagerduty:p"]},
                    {"after": "15m", "notify": ["user:b"]},
                    {"after": "30m", "notify": ["user:c"]},
                ],
            },
            "std": {
                "until": "resolved",
                "levels": [
                    {"after": "0s", "notify": ["user:a"]},
                    {"after": "30m", "notify": ["user:b"]},
                ],
            },
        },
        "users": {"a": {"email": "a@x"}, "b": {"email": "b@x"}, "c": {"email": "c@x"}},
        "channels": {"pagerduty": {"services": {"p": {"routing_key_env": "PD"}}}},
    }
)

CRIT = Route(rule="crit-rule", severity="P0", policy="crit", group_by="alertmanager", lane="")
STD = Route(rule="std-rule", severity="P1", policy="std", group_by="alertmanager", lane="")


def alert(
    fp: str = "aaaaaaaaaaaaaaa1", status: str = "firing", starts: int = T0, name: str = "Down"
) -> Alert:
    return Alert(
        fingerprint=fp,
        status=AlertStatus(status),
        labels={"alertname": name, "service": "checkout"},
        starts_at_ms=starts,
        annotations={"summary": "it broke"},
        group_key='{}:{alertname="Down"}',
    )


def received(*alerts: Alert, route: Route = CRIT, new_id: str = "0-new") -> AlertsReceived:
    return AlertsReceived(tuple(RoutedAlert(a, route) for a in alerts), "k", new_id)


def run(inc: Incident | None, event: Event, now: int) -> Decision:
    return decide(inc, event, now, POLICIES)


def pages(d: Decision) -> list[tuple[str, ...]]:
    return [e.targets for e in d.effects if isinstance(e, Notify) and e.action is Action.TRIGGER]


def mirrors(d: Decision, action: Action) -> list[tuple[str, ...]]:
    return [e.targets for e in d.effects if isinstance(e, Notify) and e.action is action]


def opened(route: Route = CRIT, now: int = T0) -> Incident:
    d = run(None, received(alert(), route=route), now)
    assert d.incident is not None
    return d.incident
