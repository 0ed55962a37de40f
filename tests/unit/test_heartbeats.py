"""The dead man's switch, pure: heartbeat rules and the alert their silence raises."""

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from engine.alerts import AlertStatus
from engine.policy.heartbeats import SILENCE_ALERTNAME, heartbeat_rules, silence_alert
from engine.policy.models import PolicySet
from engine.policy.routing import route

BASE = {
    "severities": {"P1": {}, "P3": {}},
    "default": {"severity": "P3", "policy": "p"},
    "escalation_policies": {"p": {"levels": [{"after": "0s", "notify": ["user:a"]}]}},
    "users": {"a": {"email": "a@x"}},
}
WATCHDOG = {"name": "wd", "matchers": ['alertname="Watchdog"'], "severity": "P1", "policy": "p"}


def policies(**rule: object) -> PolicySet:
    return PolicySet.model_validate({**BASE, "rules": [{**WATCHDOG, **rule}]})


def test_a_heartbeat_rule_routes_its_alert_as_a_heartbeat() -> None:
    p = policies(heartbeat="5m")
    assert heartbeat_rules(p) == {"wd": 300_000}
    [r] = route(p, {"alertname": "Watchdog"})
    assert (r.rule, r.heartbeat_ms) == ("wd", 300_000)
    [other] = route(p, {"alertname": "Down"})
    assert other.heartbeat_ms is None


def test_the_silence_alert_is_one_occurrence_per_deadline_under_the_rules_severity_and_policy() -> None:
    p = policies(heartbeat="5m")
    lost = silence_alert("wd", p, AlertStatus.FIRING, 1_000, 2_000)
    again = silence_alert("wd", p, AlertStatus.FIRING, 1_000, 9_000)
    assert lost is not None and again is not None
    assert lost.alert == again.alert  # what two replicas raise for one deadline is the same occurrence
    assert lost.alert.labels == {"alertname": SILENCE_ALERTNAME, "heartbeat": "wd", "severity": "P1"}
    assert (lost.route.severity, lost.route.policy) == ("P1", "p")
    assert "for 5m" in lost.alert.annotations["summary"]
    back = silence_alert("wd", p, AlertStatus.RESOLVED, 5_000, 5_000)
    assert (
        back is not None
        and back.alert.fingerprint == lost.alert.fingerprint
        and back.alert.ends_at_ms == 5_000
    )


def test_a_rule_that_is_no_longer_a_heartbeat_raises_nothing() -> None:
    assert silence_alert("wd", policies(), AlertStatus.FIRING, 0, 0) is None
    assert silence_alert("gone", policies(heartbeat="5m"), AlertStatus.FIRING, 0, 0) is None


@pytest.mark.parametrize("rule", [{"heartbeat": "0s"}, {"heartbeat": "5m", "continue": True}])
def test_a_heartbeat_needs_an_interval_and_no_continue(rule: dict[str, object]) -> None:
    with pytest.raises(ValidationError, match="heartbeat"):
        policies(**rule)


def test_the_heartbeat_section_of_the_spec_is_a_heartbeat_rule_matched_first() -> None:
    section = {"matchers": ['alertname="Watchdog"'], "interval": "5m", "severity": "P1", "policy": "p"}
    p = PolicySet.model_validate({**BASE, "rules": [{**WATCHDOG, "name": "catch-all"}], "heartbeat": section})
    assert heartbeat_rules(p) == {"heartbeat": 300_000}
    [r] = route(p, {"alertname": "Watchdog"})
    assert (r.rule, r.heartbeat_ms, r.severity) == ("heartbeat", 300_000, "P1")


def test_the_heartbeat_sections_names_are_cross_checked(tmp_path: Path) -> None:
    from engine.policy.loader import check_policies

    text = yaml.safe_dump(
        {**BASE, "heartbeat": {"matchers": ["a=b"], "interval": "5m", "severity": "P9", "policy": "p"}}
    )
    (tmp_path / "p.yaml").write_text(text)
    [problem] = check_policies(tmp_path)
    assert (
        problem.startswith(f"{tmp_path / 'p.yaml'}:")
        and "heartbeat.severity: undefined severity 'P9'" in problem
    )
