"""Communication templates: runbook-shaped defaults, overrides, load-time errors, the sandbox."""

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from engine.alerts import AlertStatus
from engine.incident import AlertState, Incident, Status
from engine.policy.templates import KINDS, TemplateSet, context, human_duration, render, sample_context

T0 = 1_700_000_000_000
RUNBOOK_FIELDS = {
    "trigger": ["Status: ", "Impact: ", "Start Time: ", "Next update in: "],
    "escalation": ["Status: ", "Impact: ", "Start Time: ", "escalating to level 2", "Next update in: "],
    "update": [
        "UPDATE #1\nStatus: Identified\n",
        "Impact: ",
        "Duration: 1h 5m",
        "\nRolled back the release.\n",
        "Next update in: ",
    ],
    "acknowledge": ["Status: Acknowledged", "Acknowledged by: alice", "Duration: ", "Next update in: "],
    "resolve": [
        "Status: Resolved",
        "Duration: 1h 5m",
        "Impact: ",
        "Resolved by: bob",
        "Summary:",
        "Post-incident review due: P1 incident",
    ],
}


def incident(labels: dict[str, str] | None = None, annotations: dict[str, str] | None = None) -> Incident:
    alert = AlertState(
        "f1",
        AlertStatus.FIRING,
        T0,
        labels if labels is not None else {"alertname": "DiskFull", "job": "db"},
        annotations if annotations is not None else {"summary": "disk 95% full"},
    )
    return Incident(
        id="inc-1",
        key="k",
        title="DiskFull db",
        severity="P0",
        policy="p",
        rule="r",
        status=Status.TRIGGERED,
        created_ms=T0,
        anchor_ms=T0,
        timer_ms=T0 + 15 * 60_000,
        alerts={"f1": alert},
        paged=["user:alice"],
    )


def load(source: str, part: str = "body") -> TemplateSet:
    return TemplateSet.model_validate({"trigger": {part: source}})


def plain(value: object) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(plain(v) for v in value)
    return type(value) in (str, int)


@pytest.mark.parametrize("kind", KINDS)
def test_defaults_render_every_kind_with_the_runbook_fields(kind: str) -> None:
    subject, body = render(None, kind, sample_context(kind))
    assert "\n" not in subject and "checkout" in subject
    for field in RUNBOOK_FIELDS[kind]:
        assert field in body, (field, body)
    assert "{{" not in body and "{%" not in body


def test_default_trigger_on_a_real_incident() -> None:
    ctx = context(inc := incident(), kind="trigger", level=0, now_ms=T0 + 65 * 60_000)
    subject, body = render(TemplateSet(), "trigger", ctx)
    assert subject == "[P0] db - disk 95% full"
    assert "Status: Triggered\nImpact: unknown\nStart Time: 2023-11-14T22:13:20.000Z\n" in body
    assert "paging escalation level 1" in body and "Next update in: when the status changes" in body
    inc.timer_ms = T0 + 80 * 60_000
    assert (
        "Next update in: 15m"
        in render(None, "trigger", context(inc, kind="trigger", level=0, now_ms=T0 + 65 * 60_000))[1]
    )


def test_context_is_plain_data_of_the_documented_shape() -> None:
    ctx = context(
        incident(),
        kind="update",
        level=2,
        now_ms=T0 + 3_900_000,
        updates=[{"at_ms": T0, "by": "bob", "text": "x"}],
    )
    assert plain(ctx)
    assert set(ctx) == {
        "kind",
        "now",
        "severity",
        "service",
        "brief",
        "impact",
        "incident",
        "alerts",
        "labels",
        "external_url",
        "update",
        "ack_url",
        "note",
        "review",
        "resolve_url",
    }
    assert (ctx["ack_url"], ctx["resolve_url"]) == ("", "")
    assert ctx["update"] == {"number": 1, "status": "", "message": "x"}
    inc = ctx["incident"]
    assert inc["started_at"] == inc["started"] and inc["alerts"] == ctx["alerts"]
    assert (inc["duration"], inc["level"], inc["started"]) == ("1h 5m", 3, "2023-11-14T22:13:20.000Z")
    assert inc["status_updates"] == [{"at": "2023-11-14T22:13:20.000Z", "actor": "bob", "text": "x"}]
    assert inc["acknowledged_by"] == "" and inc["paged"] == ["user:alice"]
    assert set(ctx["alerts"][0]) >= {"status", "labels", "annotations", "starts_at", "generator_url"}
    assert ctx["labels"] == {"alertname": "DiskFull", "job": "db"}


@pytest.mark.parametrize(
    ("ms", "text"),
    [(0, "0s"), (45_000, "45s"), (3_900_000, "1h 5m"), (3_600_000, "1h"), (90_060_000, "1d 1h 1m")],
)
def test_human_duration(ms: int, text: str) -> None:
    assert human_duration(ms) == text


def test_custom_template_overrides_and_the_rest_fall_back() -> None:
    ts = TemplateSet.model_validate({"trigger": {"subject": "PAGE {{ incident.id }} {{ labels.job }}"}})
    subject, body = render(ts, "trigger", context(incident(), kind="trigger", level=0, now_ms=T0))
    assert subject == "PAGE inc-1 db" and "Start Time: " in body
    assert render(ts, "resolve", sample_context("resolve"))[0].startswith("[RESOLVED]")


def test_unknown_field_fails_at_load_and_names_it() -> None:
    with pytest.raises(ValidationError, match=r"has no attribute 'owner'") as info:
        load("line one\n{{ incident.owner }}")
    assert info.value.errors()[0]["loc"] == ("trigger", "body")
    assert "line 2" in str(info.value)
    with pytest.raises(ValidationError, match=r"'nope' is undefined"):
        load("{{ nope }}", "subject")


def test_syntax_error_fails_at_load_with_the_line() -> None:
    with pytest.raises(ValidationError, match=r"syntax error at line 3: unexpected '}'"):
        load("a\nb\n{{ incident.id }\n")


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ lipsum.__globals__['os'] }}",
        "{% set x = incident.__setitem__('id', 1) %}{{ x }}",
        "{{ incident.update({'id': 1}) }}",
        "{{ alerts.append(1) }}",
        "{{ 'x' * 1000000000 }}",
        "{{ 10 ** 100000 }}",
    ],
)
def test_sandbox_escapes_are_refused_at_load(source: str) -> None:
    with pytest.raises(
        ValidationError, match=r"template not allowed \(line 1\): .*(unsafe|too large|more than)"
    ):
        load(source)


def test_alert_data_is_printed_never_evaluated() -> None:
    inc = incident({"alertname": "X", "job": "{{ 7*7 }}"}, {"summary": "{% raw %}{{ cycler }}"})
    ctx = context(inc, kind="trigger", level=0, now_ms=T0)
    subject, body = render(load("{{ labels.job }} {{ alerts[0].summary }}"), "trigger", ctx)
    assert subject == "[P0] {{ 7*7 }} - {% raw %}{{ cycler }}"
    assert body == "{{ 7*7 }} {% raw %}{{ cycler }}"


def test_html_body_escapes_and_text_does_not() -> None:
    ctx = context(incident(annotations={"summary": "<b>x</b>"}), kind="trigger", level=0, now_ms=T0)
    assert "<b>x</b>" in render(None, "trigger", ctx)[1]
    assert "&lt;b&gt;x&lt;/b&gt;" in render(None, "trigger", ctx, html=True)[1]


def test_subject_is_one_line() -> None:
    ctx = context(
        incident(annotations={"summary": "a\r\nBcc: evil@example.com"}), kind="trigger", level=0, now_ms=T0
    )
    assert render(None, "trigger", ctx)[0] == "[P0] db - a Bcc: evil@example.com"


def test_runtime_failure_falls_back_to_the_default_and_says_so() -> None:
    ts = load("{{ alerts[1].name }}")  # the sample has two alerts; this incident has one
    body = render(ts, "trigger", context(incident(), kind="trigger", level=0, now_ms=T0))[1]
    assert body.startswith("Status: Triggered") and "custom trigger body template failed" in body


def test_unknown_kind_and_keys_are_errors() -> None:
    with pytest.raises(ValueError, match="unknown template kind"):
        render(None, "page", sample_context())
    bad: dict[str, Any] = {"trigger": {"subjct": "x"}}
    with pytest.raises(ValidationError, match="subjct"):
        TemplateSet.model_validate(bad)


def test_model_round_trips_and_stays_compiled() -> None:
    ts = load("{{ incident.id }}")
    again = TemplateSet.model_validate(ts.model_dump())
    assert again == ts and render(again, "trigger", sample_context())[1] == "inc-sample"


def test_the_policy_examples_template_set_loads_and_renders() -> None:
    """The runbook set of the spec's policy example (kinds named initial/resolution)."""
    example = {
        "initial": {
            "subject": "[{{ incident.severity }}] {{ incident.labels.service | default('service') }}"
            " - {{ incident.title }}",
            "body": "Status: Investigating\nImpact: {{ incident.annotations.impact"
            " | default(incident.severity_description) }}\nStart Time: {{ incident.started_at }}\n"
            "{% for a in incident.alerts %}- [{{ a.status }}] {{ a.labels.alertname }}"
            " {{ a.annotations.summary }}\n{% endfor %}Next update in: 30 minutes",
        },
        "update": {"subject": "UPDATE #{{ update.number }}", "body": "Status: {{ update.status | title }}"},
        "resolution": {
            "subject": "[RESOLVED] {{ incident.title }}",
            "body": "Resolved by: {{ incident.resolved_by }}",
        },
    }
    loaded = TemplateSet.model_validate(example)
    assert loaded.trigger is not None and loaded.resolve is not None
    subject, body = render(loaded, "trigger", context(incident(), kind="trigger", level=0, now_ms=T0))
    assert subject == "[P0] service - DiskFull db" and "Status: Investigating" in body


def test_a_kind_the_set_leaves_out_uses_the_built_in_subject_and_body() -> None:
    # the shipped `default` set gives initial/escalation/resolution only: the ack mail must still read well
    only_trigger = load("custom trigger body")
    subject, body = render(only_trigger, "acknowledge", sample_context("acknowledge"))
    assert subject == "[P1] checkout - 5xx ratio above 5% (acknowledged by alice)"
    assert "custom trigger body" not in body and "Acknowledged by: alice" in body


LINKS = {
    "acknowledge": "https://esc.example/ack/a.ack.1.x",
    "resolve": "https://esc.example/ack/a.resolve.1.y",
}
API = "https://esc.example/api/v1/incidents/inc-1"


@pytest.mark.parametrize("kind", ["trigger", "escalation"])
def test_pages_show_the_one_click_links_and_the_api_hint_only_without_them(kind: str) -> None:
    inc = incident()
    with_links = context(inc, kind=kind, level=1, now_ms=T0, external_url=API, links=LINKS)
    body = render(None, kind, with_links)[1]
    assert f"Acknowledge: {LINKS['acknowledge']}\nResolve: {LINKS['resolve']}\n" in body
    assert "POST" not in body and f"Details: {API}" in body
    html = render(None, kind, with_links, html=True)[1]
    assert LINKS["acknowledge"] in html and LINKS["resolve"] in html
    without = render(None, kind, context(inc, kind=kind, level=1, now_ms=T0, external_url=API))[1]
    assert f"Acknowledge: POST {API}/ack" in without and "/ack/" not in without
    bare = render(None, kind, context(inc, kind=kind, level=1, now_ms=T0))[1]
    assert "Acknowledge" not in bare and "Resolve" not in bare


def test_the_acknowledge_page_offers_the_resolve_link_only() -> None:
    inc = incident()
    inc.status, inc.acked_by = Status.ACKNOWLEDGED, "alice"
    body = render(None, "acknowledge", context(inc, kind="acknowledge", level=0, now_ms=T0, links=LINKS))[1]
    assert f"Resolve: {LINKS['resolve']}" in body and LINKS["acknowledge"] not in body
    for kind in ("update", "resolve"):
        assert "/ack/" not in render(None, kind, context(inc, kind=kind, level=0, now_ms=T0, links=LINKS))[1]


def test_the_shipped_template_set_shows_the_links() -> None:
    raw = yaml.safe_load((Path(__file__).parents[2] / "policies" / "templates.yaml").read_text())
    shipped = TemplateSet.model_validate(raw["templates"]["default"])
    for kind in ("trigger", "escalation"):
        ctx = context(incident(), kind=kind, level=1, now_ms=T0, external_url=API, links=LINKS)
        body = render(shipped, kind, ctx)[1]
        assert f"Acknowledge: {LINKS['acknowledge']}" in body and f"Resolve: {LINKS['resolve']}" in body
        assert "POST" not in body
        body = render(shipped, kind, context(incident(), kind=kind, level=1, now_ms=T0, external_url=API))[1]
        assert f"Acknowledge: POST {API}/ack" in body
