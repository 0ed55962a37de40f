"""Which rules an alert falls under, and which incident it belongs to. Pure: no I/O, no clock."""

from dataclasses import dataclass
from typing import Literal

from engine.alerts import Alert
from engine.policy.models import PolicySet, Rule

GroupBy = Literal["alertmanager", "alert"] | tuple[str, ...]
CACHED_LABEL_SETS = 10_000  # routed value sets kept; senders choose labels, so bounded


@dataclass(frozen=True, slots=True)
class Route:
    rule: str  # rule name, or "default"
    severity: str
    policy: str
    group_by: GroupBy
    lane: str  # "" for the terminal match; the rule name for a rule with continue: true
    heartbeat_ms: int | None = None  # set: the alert is this rule's heartbeat, not an incident


def route(policies: PolicySet, labels: dict[str, str]) -> list[Route]:
    """Every route for `labels`, in rule order; always ends with exactly one terminal (lane "") route.

    A matching `continue: true` rule opens its own lane and the walk goes on; the first matching
    rule without it ends the walk; when none does, the default applies. Kept per values of the
    labels the rules read (a missing label reads as ""): matching is regexes, and alerts of a
    storm differ in instance or service far more often than in what the rules route on.
    """
    names, cache = policies.route_cache()
    key = tuple([labels.get(name, "") for name in names])
    found: tuple[Route, ...] | None = cache.get(key)
    if found is None:
        if len(cache) >= CACHED_LABEL_SETS:
            cache.clear()
        found = cache[key] = tuple(_walk(policies, labels))
    return list(found)


def _walk(policies: PolicySet, labels: dict[str, str]) -> list[Route]:
    routes: list[Route] = []
    for rule in policies.rules:
        if not rule.matches(labels):
            continue
        if rule.continue_:
            routes.append(_route(rule, lane=rule.name))
        else:
            routes.append(_route(rule, lane=""))
            return routes
    default = policies.default
    routes.append(Route("default", default.severity, default.policy, "alertmanager", ""))
    return routes


def _route(rule: Rule, lane: str) -> Route:
    group_by = rule.group_by if isinstance(rule.group_by, str) else tuple(rule.group_by)
    return Route(rule.name, rule.severity, rule.policy, group_by, lane, rule.heartbeat)


def incident_key(route: Route, alert: Alert) -> str:
    """The identity of the incident `alert` joins under `route`: lane plus the rule's grouping."""
    if route.group_by == "alertmanager" and alert.group_key:
        return f"{route.lane}|am:{alert.group_key}"
    if isinstance(route.group_by, str):  # "alert", or "alertmanager" from a sender without groups
        return f"{route.lane}|fp:{alert.fingerprint}"
    return f"{route.lane}|lb:" + ",".join(f"{k}={alert.labels.get(k, '')}" for k in route.group_by)
