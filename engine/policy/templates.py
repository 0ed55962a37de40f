"""Communication templates (the runbooks' initial notification, update, escalation, resolution). Pure.

Templates are Jinja2, rendered in an immutable sandbox with StrictUndefined, compiled once when the
policy loads and rendered there against a sample incident: a typo or an unknown field is a `check`
error, not a blank page at 3 a.m. The context is plain data (dicts, lists, str, int), never engine
objects, and alert data is only ever a value: a label "{{ 7*7 }}" is printed, not evaluated.
"""

from collections.abc import Callable
from types import TracebackType
from typing import Annotated, Any

from jinja2 import StrictUndefined, Template, TemplateError, TemplateSyntaxError
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from markupsafe import escape
from pydantic import AfterValidator, AliasChoices, Field

from engine.alerts import AlertStatus
from engine.incident import AlertState, Incident, Status
from engine.policy.base import Model
from engine.times import rfc3339

KINDS = ("trigger", "escalation", "update", "acknowledge", "resolve")
# alerts a message shows (firing first): a fleet-wide outage's incident holds thousands, and a page
# costs the same at 10 as at 10,000 (`alert_count` and `firing` count them all)
SHOWN_ALERTS = 50
_MAX_SEQUENCE = 100_000  # `'x' * n` and `[..] * n` longer than this are refused
_MAX_EXPONENT = 1_000


class _Sandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, plus a bound on the two operators that can allocate without limit."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, int) and abs(right) > _MAX_EXPONENT:
            raise SecurityError(f"exponent {right} is too large")
        if operator == "*":
            seq, n = (left, right) if isinstance(right, int) else (right, left)
            if isinstance(seq, str | list | tuple) and isinstance(n, int) and len(seq) * n > _MAX_SEQUENCE:
                raise SecurityError(f"repeating a sequence to more than {_MAX_SEQUENCE} items")
        return super().call_binop(context, operator, left, right)


_OPTIONS: dict[str, Any] = {"undefined": StrictUndefined, "trim_blocks": True, "lstrip_blocks": True}
_TEXT = _Sandbox(autoescape=False, **_OPTIONS)
_HTML = _Sandbox(autoescape=True, **_OPTIONS)  # for channels that render the body as HTML


class TemplateSource(str):
    """A template's source text carrying its compiled forms (plain text and HTML-escaping)."""

    text: Template
    html: Template


def _compile(source: str) -> TemplateSource:
    out = TemplateSource(source)
    out.text, out.html = _TEXT.from_string(source), _HTML.from_string(source)
    return out


def _template_line(tb: TracebackType | None) -> str:
    line = ""
    while tb is not None:  # jinja rewrites template frames to the template's own line numbers
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = f" (line {tb.tb_lineno})"
        tb = tb.tb_next
    return line


def _check(source: str) -> TemplateSource:
    """Compile and render the sample incident; every failure becomes a validation error."""
    try:
        compiled = _compile(source)
    except TemplateSyntaxError as e:
        raise ValueError(f"template syntax error at line {e.lineno}: {e.message}") from None
    try:
        compiled.text.render(sample_context())
    except SecurityError as e:
        raise ValueError(f"template not allowed{_template_line(e.__traceback__)}: {e}") from None
    except TemplateError as e:  # UndefinedError names the missing field or attribute
        raise ValueError(
            f"template refers to an unknown name{_template_line(e.__traceback__)}: {e}; known names are"
            f" {', '.join(sorted(sample_context()))} (labels and annotations vary per alert:"
            " write `labels.team | default('')`)"
        ) from None
    except Exception as e:  # a template that cannot render the sample fails to load
        raise ValueError(
            f"template fails on a sample incident{_template_line(e.__traceback__)}: {type(e).__name__}: {e}"
        ) from None
    return compiled


TemplateText = Annotated[str, AfterValidator(_check)]


class KindTemplates(Model):
    subject: TemplateText | None = None  # one line: newlines in the output become spaces
    body: TemplateText | None = None


class TemplateSet(Model):
    """Per notification kind, templates that replace the built-in defaults (each part on its own).

    Spelled as the runbooks name them (initial, resolution) or as the engine's actions (trigger,
    resolve): both are accepted."""

    trigger: KindTemplates | None = Field(default=None, validation_alias=AliasChoices("initial", "trigger"))
    escalation: KindTemplates | None = None  # a page to a later level
    update: KindTemplates | None = None  # a status update posted on the incident
    acknowledge: KindTemplates | None = None
    resolve: KindTemplates | None = Field(
        default=None, validation_alias=AliasChoices("resolution", "resolve")
    )


# Context --------------------------------------------------------------------------------------


def human_duration(ms: int) -> str:
    """`1h 5m`, `2d 3h`, `45s`: seconds only under a minute, zero parts left out."""
    s = max(ms, 0) // 1000
    if s < 60:
        return f"{s}s"
    parts = [(s // 86400, "d"), (s % 86400 // 3600, "h"), (s % 3600 // 60, "m")]
    return " ".join(f"{n}{unit}" for n, unit in parts if n)


def _alert(a: AlertState, rfc3339: Callable[[int], str]) -> dict[str, Any]:
    return {
        "fingerprint": a.fingerprint,
        "name": a.labels.get("alertname", a.fingerprint),
        "status": a.status.value,
        "summary": a.annotations.get("summary") or a.annotations.get("description") or "",
        "runbook_url": a.annotations.get("runbook_url", ""),
        "labels": dict(a.labels),
        "annotations": dict(a.annotations),
        "starts_at": rfc3339(a.starts_at_ms),
        "ends_at": rfc3339(a.ends_at_ms) if a.ends_at_ms is not None else "",
        "generator_url": a.generator_url,
    }


def _update(raw: dict[Any, Any], rfc3339: Callable[[int], str]) -> dict[str, str]:
    at = raw.get("at_ms")
    return {
        "at": rfc3339(at) if isinstance(at, int) else str(raw.get("at", "")),
        "actor": str(raw.get("actor", raw.get("by", ""))),
        "text": str(raw.get("text", "")),
    }


def _service(inc: Incident, common: dict[str, str]) -> str:
    if name := common.get("service") or common.get("job"):
        return name
    named = {a.labels.get("service") or a.labels.get("job") for a in inc.alerts.values()} - {None, ""}
    return "multiple services" if named else "unknown service"


def common_labels(inc: Incident) -> dict[str, str]:
    """The labels every alert of the incident shares (kept with it; else from the alerts read,
    which for a record from before it was kept are all of them, see Store.load_shown)."""
    return dict(inc.common) if inc.common is not None else _shared([a.labels for a in inc.alerts.values()])


def common_annotations(inc: Incident) -> dict[str, str]:
    """The annotations the alerts read share (annotations change as alerts are re-sent, so no
    aggregate keeps them): for a message, those of the alerts it shows."""
    return _shared([a.annotations for a in inc.alerts.values()])


def _shared(maps: list[dict[str, str]]) -> dict[str, str]:
    if not maps:
        return {}
    return {k: v for k, v in maps[0].items() if all(m.get(k) == v for m in maps[1:])}


def _latest(updates: list[dict[Any, Any]]) -> dict[str, Any]:
    """The newest status update as `update` ({number, status, message}); empty ones before any."""
    last = updates[-1] if updates else {}
    return {
        "number": len(updates),
        "status": str(last.get("status", "")),
        "message": str(last.get("text", last.get("message", ""))),
    }


def context(
    inc: Incident,
    *,
    kind: str,
    level: int,
    now_ms: int,
    severity_description: str = "",
    external_url: str = "",
    paged: list[str] | None = None,
    updates: list[dict[Any, Any]] | None = None,
    links: dict[str, str] | None = None,
    note: str = "",
    review: str = "",
    shown: list[AlertState] | None = None,
) -> dict[str, Any]:
    """What a template sees: plain data only. `level` is the 0-based ladder level (shown 1-based).
    `shown`: the alerts it lists, when the caller has them (default: Incident.shown)."""
    alerts = inc.shown(SHOWN_ALERTS) if shown is None else shown
    common = common_labels(inc)
    lead = alerts[0] if alerts else None  # a firing one, if any is
    notes = lead.annotations if lead is not None else {}
    end_ms = inc.resolved_ms if inc.status is Status.RESOLVED and inc.resolved_ms is not None else now_ms
    waiting = inc.timer_ms is not None and inc.timer_ms > now_ms and inc.is_open
    # the next status update is due by the severity's update_every; else the next step of the ladder
    next_at = inc.update_due_ms if inc.update_due_ms is not None and inc.is_open else None
    if next_at is None and waiting:
        next_at = inc.timer_ms
    return {
        "kind": kind,
        "now": rfc3339(now_ms),
        "severity": inc.severity,
        "service": _service(inc, common),
        "brief": notes.get("summary") or notes.get("description") or inc.title,
        "impact": notes.get("impact") or severity_description or "unknown",
        "incident": {
            "id": inc.id,
            "title": inc.title,
            "severity": inc.severity,
            "severity_description": severity_description,
            "status": inc.status.value,
            "started": rfc3339(inc.created_ms),
            "duration": human_duration(end_ms - inc.created_ms),
            "level": level + 1,
            "paged": list(inc.paged if paged is None else paged),
            "acknowledged_by": inc.acked_by or "",
            "resolved_by": inc.resolved_by or "",
            "status_updates": [_update(u, rfc3339) for u in updates or []],
            "next_update": human_duration(max(0, next_at - now_ms)) if next_at is not None else "",
            "firing": inc.firing_count(),  # of all its alerts, not only those shown
            "alert_count": inc.alert_total if inc.alert_total is not None else len(inc.alerts),
            # the names the policy example's templates use
            "started_at": rfc3339(inc.created_ms),
            "labels": common,
            "annotations": common_annotations(inc),
            "alerts": [_alert(a, rfc3339) for a in alerts],
        },
        "update": _latest(updates or []),
        "note": note,  # an update that is not a status update: a reassignment, a reminder
        "review": review,  # on a resolution: why the runbooks want a post-incident review ("" if not)
        "alerts": [_alert(a, rfc3339) for a in alerts],
        "labels": common,
        "external_url": external_url,
        # signed one-click links ("" when the engine has no public URL): GET asks, POST acts
        "ack_url": (links or {}).get("acknowledge", ""),
        "resolve_url": (links or {}).get("resolve", ""),
    }


def sample_context(kind: str = "trigger") -> dict[str, Any]:
    """The incident every template renders at load: every field set, two alerts, one resolved."""
    labels = {"alertname": "HighErrorRate", "service": "checkout", "job": "checkout", "severity": "page"}
    notes = {"summary": "5xx ratio above 5%", "runbook_url": "https://runbooks.example/5xx"}
    alerts = {
        fp: AlertState(fp, status, 1_700_000_000_000, {**labels, "instance": f"{fp}:9090"}, dict(notes))
        for fp, status in (("a1", AlertStatus.FIRING), ("a2", AlertStatus.RESOLVED))
    }
    inc = Incident(
        id="inc-sample", key="sample", title="HighErrorRate checkout", severity="P1", policy="default",
        rule="sample", status=Status.ACKNOWLEDGED, created_ms=1_700_000_000_000,
        anchor_ms=1_700_000_000_000, timer_ms=1_700_004_800_000, acked_by="alice", resolved_by="bob",
        alerts=alerts, paged=["user:alice", "user:bob"],
    )  # fmt: skip
    updates = [
        {
            "n": 1,
            "status": "identified",
            "at_ms": 1_700_003_000_000,
            "by": "alice",
            "text": "Rolled back the release.",
        }
    ]
    return context(
        inc, kind=kind, level=1, now_ms=1_700_003_900_000, severity_description="Major degradation",
        external_url="https://oncall.example/incidents/inc-sample", updates=updates,
        links={"acknowledge": "https://oncall.example/ack/t1", "resolve": "https://oncall.example/ack/t2"},
        review="P1 incident: every P0 and P1 incident gets a post-incident review",
    )  # fmt: skip


# Built-in defaults, shaped like runbook 000's initial notification, update and resolution ---------

_HEAD = """\
Status: {{ incident.status | capitalize }}
{% if incident.acknowledged_by %}
Acknowledged by: {{ incident.acknowledged_by }}
{% endif %}
Impact: {{ impact }}
"""
_TIMES = "Start Time: {{ incident.started }}\nDuration: {{ incident.duration }}\n"
_DETAILS = """
Incident {{ incident.id }}: {{ incident.title }}
Severity: {{ severity }}
{%- if incident.severity_description %} ({{ incident.severity_description }}){% endif +%}
Alerts: {{ incident.firing }} firing, {{ incident.alert_count - incident.firing }} resolved
{% set runbook = incident.annotations.get("runbook_url", "") %}
{% for a in alerts[:20] %}
  [{{ a.status }}] {{ a.name }}{% if a.labels.get("instance") %} {{ a.labels.instance }}{% endif %}
{%- if a.summary %}: {{ a.summary }}{% endif +%}
{% if a.runbook_url and a.runbook_url != runbook %}
    runbook: {{ a.runbook_url }}
{% endif %}
{% endfor %}
{% if incident.alert_count > alerts[:20] | length %}
  ...and {{ incident.alert_count - alerts[:20] | length }} more
{% endif %}
{% if runbook %}
Runbook: {{ runbook }}
{% endif %}
{% if external_url %}
Details: {{ external_url }}
{% endif %}
{% if kind in ("trigger", "escalation") %}
{% if ack_url %}
Acknowledge: {{ ack_url }}
{% endif %}
{% if resolve_url %}
Resolve: {{ resolve_url }}
{% endif %}
{% if external_url and not (ack_url or resolve_url) %}
Acknowledge: POST {{ external_url }}/ack  ·  Resolve: POST {{ external_url }}/resolve
{% endif %}
{% elif kind == "acknowledge" and resolve_url %}
Resolve: {{ resolve_url }}
{% endif %}
"""
_NEXT = "\nNext update in: {{ incident.next_update or 'when the status changes' }}\n"
_LATEST = """\
{% for u in incident.status_updates[-1:] %}
{{ u.text }} ({{ u.actor }}, {{ u.at }})
{% else %}
No new information.
{% endfor %}
"""
_ESCALATED = """
Not acknowledged after {{ incident.duration }}: escalating to level {{ incident.level }}.
{% if incident.paged %}
Already paged: {{ incident.paged | join(', ') }}
{% endif %}
"""
_RESOLVED = """\
Status: Resolved
Duration: {{ incident.duration }}
Impact: {{ impact }}
{% if incident.resolved_by %}
Resolved by: {{ incident.resolved_by }}
{% endif %}
{% if review %}
Post-incident review due: {{ review }}
{% endif %}

Summary:
{{ incident.title }}, started {{ incident.started }}.
{% if incident.status_updates %}

Resolution:
"""
_SUBJECT = "[{{ severity }}] {{ service }} - "
# the runbooks' update: "UPDATE #N", Status, Impact, Duration, what changed, Next update in
_UPDATE = """\
{% if note %}
{{ note }}

{% endif %}
{% if update.number %}
UPDATE #{{ update.number }}
Status: {{ update.status | capitalize }}
Impact: {{ impact }}
Duration: {{ incident.duration }}

{{ update.message }}
{% else %}
Status: {{ incident.status | capitalize }}
Impact: {{ impact }}
Duration: {{ incident.duration }}
{% endif %}
"""
_DEFAULTS: dict[str, tuple[str, str]] = {
    "trigger": (
        _SUBJECT + "{{ brief }}",
        _HEAD + "Start Time: {{ incident.started }}\n\nWe are aware of an issue affecting {{ service }}"
        " and are paging escalation level {{ incident.level }}.\n" + _DETAILS + _NEXT,
    ),
    "escalation": (
        _SUBJECT + "{{ brief }} (escalated to level {{ incident.level }})",
        _HEAD + _TIMES + _ESCALATED + _DETAILS + _NEXT,
    ),
    "update": (
        _SUBJECT + "{% if note %}{{ note }}{% else %}UPDATE #{{ update.number }}{% endif %}",
        _UPDATE + _DETAILS + _NEXT,
    ),
    "acknowledge": (
        _SUBJECT + "{{ brief }} (acknowledged by {{ incident.acknowledged_by or 'someone' }})",
        _HEAD + _TIMES + _DETAILS + _NEXT,
    ),
    "resolve": ("[RESOLVED] {{ service }} - {{ brief }}", _RESOLVED + _LATEST + "{% endif %}\n" + _DETAILS),
}
DEFAULTS: dict[str, tuple[TemplateSource, TemplateSource]] = {
    kind: (_compile(subject), _compile(body)) for kind, (subject, body) in _DEFAULTS.items()
}


def render(
    templates: TemplateSet | None, kind: str, ctx: dict[str, Any], *, html: bool = False
) -> tuple[str, str]:
    """(subject, body) for one kind; parts the set does not give use the built-in default.

    A custom template that fails on a real incident (say, `alerts[1]` with one alert) must not
    lose the page: that part falls back to the default, and the body says so. `html=True` renders
    the body with the autoescaping environment (the subject is always plain text).
    """
    if kind not in DEFAULTS:
        raise ValueError(f"unknown template kind {kind!r}; use one of {', '.join(KINDS)}")
    custom = getattr(templates, kind) if templates is not None else None
    subject, note_s = _render_one(custom and custom.subject, DEFAULTS[kind][0], ctx, False, f"{kind} subject")
    body, note_b = _render_one(custom and custom.body, DEFAULTS[kind][1], ctx, html, f"{kind} body")
    notes = [escape(n) if html else n for n in (note_s, note_b) if n]
    return " ".join(subject.split()), "\n\n".join([body.rstrip(), *notes])


def _render_one(
    source: str | None, default: TemplateSource, ctx: dict[str, Any], html: bool, what: str
) -> tuple[str, str]:
    """One part's text, and a note when the custom template failed and the default stood in."""
    note = ""
    if source is not None:
        compiled = source if isinstance(source, TemplateSource) else _compile(source)
        try:
            return (compiled.html if html else compiled.text).render(ctx), ""
        except Exception as e:
            note = f"(the custom {what} template failed, the default was used: {type(e).__name__}: {e})"
    return (default.html if html else default.text).render(ctx), note
