"""Routing: first match wins, `continue: true` lanes, the default, and incident keys per group_by."""

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.alerts import Alert, AlertStatus
from engine.policy.loader import load_policies
from engine.policy.models import PolicySet
from engine.policy.routing import GroupBy, Route, _walk, incident_key, route

ROOT = Path(__file__).resolve().parents[2]


def _rule(name: str, matchers: list[str], severity: str, **extra: object) -> dict[str, object]:
    return {"name": name, "matchers": matchers, "severity": severity, "policy": "page", **extra}


POLICIES = PolicySet.model_validate(
    {
        "severities": {"P0": {}, "P1": {}, "P2": {}, "P3": {}},
        "rules": [
            _rule("audit", ['team=~".+"'], "P3", group_by=["team"], **{"continue": True}),
            _rule("db", ['service="db"', 'env!="staging"'], "P0", group_by="alert"),
            _rule("copy-db", ['service="db"'], "P2", **{"continue": True}),
            _rule("web", ['service=~"web|api"'], "P1", group_by=["alertname", "region"]),
            _rule("db-rest", ['service="db"'], "P2"),
        ],
        "default": {"severity": "P3", "policy": "page"},
        "escalation_policies": {"page": {"levels": [{"after": "0s", "notify": ["email:sre@example.com"]}]}},
    }
)


def r(rule: str, severity: str, group_by: GroupBy = "alertmanager", lane: str = "") -> Route:
    return Route(rule=rule, severity=severity, policy="page", group_by=group_by, lane=lane)


AUDIT = r("audit", "P3", ("team",), lane="audit")
DEFAULT = r("default", "P3")


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        pytest.param({"service": "db"}, [r("db", "P0", "alert")], id="first-match-wins"),
        pytest.param({"service": "db", "env": "prod"}, [r("db", "P0", "alert")], id="all-matchers-match"),
        pytest.param(
            {"service": "db", "env": "staging"},
            [r("copy-db", "P2", lane="copy-db"), r("db-rest", "P2")],
            id="continue-then-next-match",
        ),
        pytest.param({"team": "storage"}, [AUDIT, DEFAULT], id="continue-then-default"),
        pytest.param(
            {"service": "db", "team": "storage"},
            [AUDIT, r("db", "P0", "alert")],
            id="continue-then-terminal",
        ),
        pytest.param(
            {"service": "db", "env": "staging", "team": "storage"},
            [AUDIT, r("copy-db", "P2", lane="copy-db"), r("db-rest", "P2")],
            id="two-lanes",
        ),
        pytest.param({"service": "api"}, [r("web", "P1", ("alertname", "region"))], id="regex"),
        pytest.param({"service": "webapp"}, [DEFAULT], id="regex-is-anchored"),
        pytest.param({}, [DEFAULT], id="no-labels"),
        pytest.param({"team": ""}, [DEFAULT], id="empty-label-is-absent"),
    ],
)
def test_route(labels: dict[str, str], expected: list[Route]) -> None:
    assert route(POLICIES, labels) == expected


def test_route_without_rules_is_the_default() -> None:
    policies = POLICIES.model_copy(update={"rules": []})
    assert route(policies, {"service": "db"}) == [DEFAULT]


SHIPPED = load_policies(ROOT / "policies")


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ({"alertname": "SecurityBreach", "severity": "info"}, ("security", "P0", "critical")),
        ({"alertname": "AuthCompromised"}, ("security", "P0", "critical")),
        ({"alertname": "Security"}, ("security", "P0", "critical")),
        ({"alertname": "NoSecurity"}, ("default", "P3", "low")),
        ({"severity": "critical", "env": "prod"}, ("critical-prod", "P0", "critical")),
        ({"severity": "critical"}, ("critical-prod", "P0", "critical")),
        ({"severity": "critical", "env": "staging"}, ("default", "P3", "low")),
        ({"severity": "error"}, ("errors", "P1", "standard")),
        ({"severity": "page"}, ("errors", "P1", "standard")),
        ({"severity": "pager"}, ("default", "P3", "low")),
        ({"severity": "warning"}, ("warnings", "P2", "slow")),
        ({"severity": "info"}, ("default", "P3", "low")),
    ],
)
def test_shipped_routing(labels: dict[str, str], expected: tuple[str, str, str]) -> None:
    routes = route(SHIPPED, labels)
    assert [(x.rule, x.severity, x.policy, x.lane) for x in routes] == [(*expected, "")]


def alert(labels: dict[str, str], group_key: str = '{}:{alertname="Down"}') -> Alert:
    return Alert(
        fingerprint="0123456789abcdef",
        status=AlertStatus.FIRING,
        labels=labels,
        starts_at_ms=1_800_000_000_000,
        group_key=group_key,
    )


@pytest.mark.parametrize(
    ("key_route", "incident", "key"),
    [
        pytest.param(r("x", "P1"), alert({}), '|am:{}:{alertname="Down"}', id="alertmanager"),
        pytest.param(
            r("x", "P1"), alert({}, group_key=""), "|fp:0123456789abcdef", id="alertmanager-no-group"
        ),
        pytest.param(r("x", "P1", "alert"), alert({}), "|fp:0123456789abcdef", id="alert"),
        pytest.param(
            r("x", "P1", ("alertname", "region")),
            alert({"alertname": "Down", "region": "eu", "pod": "a"}),
            "|lb:alertname=Down,region=eu",
            id="labels",
        ),
        pytest.param(
            r("x", "P1", ("alertname", "region")),
            alert({"alertname": "Down"}),
            "|lb:alertname=Down,region=",
            id="labels-missing-one",
        ),
        pytest.param(AUDIT, alert({"team": "storage"}), "audit|lb:team=storage", id="lane-prefix"),
        pytest.param(
            r("x", "P1", lane="copy"), alert({}), 'copy|am:{}:{alertname="Down"}', id="lane-alertmanager"
        ),
    ],
)
def test_incident_key(key_route: Route, incident: Alert, key: str) -> None:
    assert incident_key(key_route, incident) == key


def test_lanes_keep_incidents_apart() -> None:
    """One alert under a continue rule and a terminal rule joins two different incidents."""
    labels = {"service": "db", "team": "storage"}
    keys = {incident_key(x, alert(labels)) for x in route(POLICIES, labels)}
    assert keys == {"audit|lb:team=storage", "|fp:0123456789abcdef"}


def test_routes_are_kept_per_label_set_and_a_copy_with_other_rules_does_not_see_them() -> None:
    labels = {"alertname": "Down", "severity": "critical", "env": "prod"}
    first = route(POLICIES, labels)
    assert route(POLICIES, labels) == first and route(POLICIES, dict(labels)) is not first  # a new list
    bare = POLICIES.model_copy(update={"rules": []})
    assert [r.rule for r in route(bare, labels)] == ["default"]
    assert route(POLICIES, labels) == first  # the original's own cache is untouched


# the cache keys on the values of the labels the rules read ----------------------------------

LABEL_VALUES = st.sampled_from(["", "db", "web", "api", "staging", "prod", "storage", "x"])
LABELS = st.dictionaries(
    st.sampled_from(["service", "env", "team", "alertname", "region", "instance", "pod"]), LABEL_VALUES
)


@settings(max_examples=300, deadline=None)
@given(labels=LABELS)
def test_a_cached_route_is_what_walking_the_rules_gives(labels: dict[str, str]) -> None:
    # absent and empty labels, and labels no rule reads, all share entries with other label sets
    assert route(POLICIES, labels) == _walk(POLICIES, labels)


def test_labels_no_rule_reads_do_not_make_a_new_entry() -> None:
    policies = POLICIES.model_copy(update={"rules": list(POLICIES.rules)})
    for i in range(50):
        route(policies, {"service": "db", "env": "prod", "instance": f"host-{i}", "pod": str(i)})
    names, cache = policies.route_cache()
    assert "instance" not in names and "service" in names
    assert len(cache) == 1
