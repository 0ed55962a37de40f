"""build_message: every notification's words come from the communication templates."""

import email
import email.policy
from email.message import EmailMessage
from typing import Any

import pytest

from engine.alerts import AlertStatus
from engine.events import Action
from engine.incident import AlertState, Incident, Status
from engine.messages import Message, build_message, template_kind
from engine.notifiers.email import build_email
from engine.policy.models import PolicySet

MIN = 60_000
T0 = 1_800_000_000_000
PUBLIC = "https://esc.example"
URL = f"{PUBLIC}/api/v1/incidents/inc-1"


def policy_set(top: dict[str, Any] | None = None, crit: dict[str, Any] | None = None) -> PolicySet:
    """Two policies, `crit` (P0) and `std`; `top` is the set named "default" and `crit` the set
    named "crit" that policy `crit` picks, when given."""
    levels = [{"after": "0s", "notify": ["user:a"]}, {"after": "15m", "notify": ["user:b"]}]
    raw: dict[str, Any] = {
        "severities": {"P0": {"description": "Complete outage"}, "P1": {}},
        "default": {"severity": "P1", "policy": "std"},
        "escalation_policies": {"crit": {"levels": levels}, "std": {"levels": levels}},
        "users": {"a": {"email": "a@example.com"}, "b": {"email": "b@example.com"}},
    }
    sets = {}
    if top is not None:
        sets["default"] = top
    if crit is not None:
        sets["crit"] = crit
        raw["escalation_policies"]["crit"]["templates"] = "crit"
    raw["templates"] = sets
    return PolicySet.model_validate(raw)


POLICIES = policy_set()


def incident(
    labels: dict[str, str] | None = None, summary: str = "5xx ratio above 5%", **kw: Any
) -> Incident:
    labels = labels if labels is not None else {"alertname": "HighErrorRate", "service": "checkout"}
    alert = AlertState("f1", AlertStatus.FIRING, T0, labels, {"summary": summary})
    fields: dict[str, Any] = {
        "id": "inc-1",
        "key": "k",
        "title": "HighErrorRate checkout",
        "severity": "P0",
        "policy": "crit",
        "rule": "r",
        "status": Status.TRIGGERED,
        "created_ms": T0,
        "anchor_ms": T0,
        "timer_ms": T0 + 15 * MIN,
        "alerts": {"f1": alert},
        "paged": ["user:a"],
    }
    return Incident(**{**fields, **kw})


def message(
    inc: Incident | None = None,
    action: Action = Action.TRIGGER,
    level: int = 0,
    policies: PolicySet = POLICIES,
    **kw: Any,
) -> Message:
    return build_message(
        inc or incident(),
        action,
        level=level,
        target="user:a",
        address="a@example.com",
        policies=policies,
        public_url=PUBLIC,
        **kw,
    )


def test_default_trigger_reads_like_the_runbook() -> None:
    msg = message(decided_ms=T0 + 2_000)

    assert msg.title == "[P0] checkout - 5xx ratio above 5%"
    assert msg.body.startswith("Status: Triggered\nImpact: Complete outage\nStart Time: ")
    assert "paging escalation level 1" in msg.body
    assert "Severity: P0 (Complete outage)" in msg.body
    assert "[firing] HighErrorRate: 5xx ratio above 5%" in msg.body
    assert f"Details: {URL}" in msg.body  # the link to the incident, from public_url
    assert "Next update in: 14m" in msg.body  # the next level is due at T0 + 15m
    assert msg.incident_url == URL and msg.html  # the other fields as before, plus the HTML body


@pytest.mark.parametrize(
    ("action", "level", "kind"),
    [
        (Action.TRIGGER, 0, "trigger"),
        (Action.TRIGGER, 1, "escalation"),
        (Action.TRIGGER, 2, "escalation"),
        (Action.ACKNOWLEDGE, 0, "acknowledge"),
        (Action.RESOLVE, 0, "resolve"),
    ],
)
def test_the_kind_follows_action_and_level(action: Action, level: int, kind: str) -> None:
    kinds = ("trigger", "escalation", "acknowledge", "resolve")
    every_kind = {k: {"subject": "{{ kind }} at level {{ incident.level }}"} for k in kinds}

    msg = message(action=action, level=level, policies=policy_set(top=every_kind))

    assert template_kind(action, level) == kind
    assert msg.title == f"{kind} at level {level + 1}"


def test_default_subjects_per_kind() -> None:
    acked = incident(status=Status.ACKNOWLEDGED, acked_by="alice", acked_ms=T0 + 5 * MIN)
    resolved = incident(status=Status.RESOLVED, resolved_by="alertmanager", resolved_ms=T0 + 65 * MIN)

    escalation = message(level=1, decided_ms=T0 + 15 * MIN)
    ack = message(acked, Action.ACKNOWLEDGE)
    resolve = message(resolved, Action.RESOLVE)

    assert escalation.title == "[P0] checkout - 5xx ratio above 5% (escalated to level 2)"
    assert "Not acknowledged after 15m: escalating to level 2." in escalation.body
    assert ack.title == "[P0] checkout - 5xx ratio above 5% (acknowledged by alice)"
    assert "Status: Acknowledged\nAcknowledged by: alice\n" in ack.body
    assert resolve.title == "[RESOLVED] checkout - 5xx ratio above 5%"
    assert (
        "Status: Resolved\nDuration: 1h 5m\n" in resolve.body and "Resolved by: alertmanager" in resolve.body
    )


def test_now_is_the_decision_time_unless_given() -> None:
    assert "Not acknowledged after 0s" in message(level=1).body  # neither: the incident's creation
    assert "Not acknowledged after 15m" in message(level=1, decided_ms=T0 + 15 * MIN).body
    assert (
        "Not acknowledged after 20m" in message(level=1, decided_ms=T0 + 15 * MIN, now_ms=T0 + 20 * MIN).body
    )


def test_a_policy_template_set_wins_over_the_top_level_one() -> None:
    policies = policy_set(
        top={"trigger": {"subject": "top: {{ brief }}", "body": "top body"}},
        crit={"trigger": {"subject": "crit: {{ brief }}"}},
    )

    on_crit = message(policies=policies)
    on_std = message(incident(policy="std"), policies=policies)
    on_removed = message(incident(policy="gone"), policies=policies)  # pages on the default policy

    assert on_crit.title == "crit: 5xx ratio above 5%"
    assert on_crit.body.startswith("Status: Triggered")  # the policy's set, whole: no top-level body
    assert (on_std.title, on_std.body) == ("top: 5xx ratio above 5%", "top body")
    assert on_removed.title == "top: 5xx ratio above 5%"


def test_alert_text_is_printed_never_evaluated() -> None:
    labels = {"alertname": "Evil{{ 7*7 }}", "service": "{{ 7*7 }}<b>"}

    msg = message(incident(labels, summary="{% raw %}{{ 7*7 }}"))

    assert msg.title == "[P0] {{ 7*7 }}<b> - {% raw %}{{ 7*7 }}"
    assert "affecting {{ 7*7 }}<b> and" in msg.body
    assert "[firing] Evil{{ 7*7 }}: {% raw %}{{ 7*7 }}" in msg.body
    assert "49" not in msg.body
    assert "affecting {{ 7*7 }}&lt;b&gt; and" in msg.html and "<b>" not in msg.html


def test_a_custom_template_that_fails_on_this_incident_still_pages() -> None:
    policies = policy_set(top={"trigger": {"body": "second: {{ alerts[1].name }}"}})  # the sample has two

    msg = message(policies=policies)

    assert msg.body.startswith("Status: Triggered")
    assert "the custom trigger body template failed, the default was used" in msg.body


def parse(mail: EmailMessage) -> EmailMessage:
    return email.message_from_bytes(mail.as_bytes(), policy=email.policy.default)


def test_the_email_carries_the_rendered_subject_and_bodies() -> None:
    msg = message(incident({"alertname": "HighErrorRate", "service": "checkout<&>"}), decided_ms=T0)

    mail = parse(build_email(msg, "alerts@example.com", hostname_for_ids="example.com"))

    assert mail["Subject"] == msg.title == "[P0] checkout<&> - 5xx ratio above 5%"
    text_part, html_part = mail.get_body(("plain",)), mail.get_body(("html",))
    assert text_part is not None and html_part is not None
    text, page = (p.get_content().replace("\r\n", "\n") for p in (text_part, html_part))
    assert text.startswith(msg.body + "\n")
    assert text.count(f"{URL}\n") == 1  # linked once in the body: no second "Incident:" line
    assert f"Acknowledge: POST {URL}/ack" in text
    assert msg.html in page and "checkout&lt;&amp;&gt;" in page and "&amp;lt;" not in page


def test_retries_of_one_delivery_read_the_same() -> None:
    first = message(decided_ms=T0 + 1_000)
    retry = message(decided_ms=T0 + 1_000)  # built again later from the same outbox entry

    assert first == retry
