"""The HTML pages of the signed links: a confirmation, a result, an error. Pure.

Self-contained on purpose (no external assets, no JavaScript): they open from an email on a phone
at 3 a.m., often through a link scanner first. Every value is escaped (Jinja2 autoescape): incident
titles and names come from alerts and from the person filling in the form.
"""

import base64
import hashlib
from typing import Any

from jinja2 import DictLoader, Environment, StrictUndefined, select_autoescape

STYLE = """
body{font-family:-apple-system,"Segoe UI",Roboto,Arial,sans-serif;font-size:16px;color:#222;
background:#f4f4f5;margin:0;padding:24px 12px}
main{max-width:560px;margin:0 auto;background:#fff;border:1px solid #ddd;border-radius:8px;
padding:20px 24px}
h1{font-size:20px;margin:0 0 12px}
p{line-height:1.45;margin:0 0 12px}
dl{display:grid;grid-template-columns:max-content 1fr;gap:4px 12px;margin:0 0 16px}
dt{color:#666}dd{margin:0;overflow-wrap:anywhere}
label{display:block;color:#666;margin:0 0 4px}
input{font-size:16px;padding:8px;width:100%;box-sizing:border-box;border:1px solid #bbb;
border-radius:4px;margin:0 0 12px}
button{font-size:17px;padding:10px 20px;border:0;border-radius:4px;color:#fff;background:#1f6feb;
cursor:pointer}
button.resolve{background:#1a7f37}
.ok{color:#1a7f37}.bad{color:#b42318}.note{color:#666;font-size:13px}
"""
# the Content-Security-Policy allows exactly this style block, and nothing else to load or run
STYLE_HASH = "sha256-" + base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()
CSP = (
    f"default-src 'none'; style-src '{STYLE_HASH}'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'"
)

_LAYOUT = """\
<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex, nofollow">
<title>{{ heading }} - escalation-engine</title>
<style>{{ style | safe }}</style>
</head><body><main>
<h1{% if tone %} class="{{ tone }}"{% endif %}>{{ heading }}</h1>
{% for line in lines %}
<p>{{ line }}</p>
{% endfor %}
{% if incident %}
<dl>
<dt>Incident</dt><dd>{{ incident.id }}</dd>
<dt>Title</dt><dd>{{ incident.title }}</dd>
<dt>Severity</dt><dd>{{ incident.severity }}</dd>
<dt>Status</dt><dd>{{ incident.status }}</dd>
{% if incident.acknowledged_by %}
<dt>Acknowledged by</dt><dd>{{ incident.acknowledged_by }}</dd>
{% endif %}
{% if incident.resolved_by %}
<dt>Resolved by</dt><dd>{{ incident.resolved_by }}</dd>
{% endif %}
<dt>Started</dt><dd>{{ incident.started }}</dd>
</dl>
{% endif %}
{% block form %}{% endblock %}
<p class="note">escalation-engine</p>
</main></body></html>
"""
_CONFIRM = """\
{% extends "layout" %}
{% block form %}
<form method="post">
<label for="by">Your name (optional, shown on the incident)</label>
<input id="by" name="by" type="text" maxlength="{{ max_name }}" autocomplete="name">
<button type="submit" class="{{ action }}">{{ button }}</button>
</form>
<p class="note">Opening this page changed nothing: the incident changes only when you press the
button. The link works once, and until {{ expires }}.</p>
{% endblock %}
"""
_ENV = Environment(
    loader=DictLoader({"layout": _LAYOUT, "confirm": _CONFIRM}),
    autoescape=select_autoescape(default=True, default_for_string=True),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def message_page(
    heading: str, lines: list[str], *, incident: dict[str, Any] | None = None, tone: str = ""
) -> str:
    """A page that only tells: a result ("ok"), a refusal ("bad"), or how things stand ("")."""
    return _ENV.get_template("layout").render(
        heading=heading, lines=lines, incident=incident, tone=tone, style=STYLE
    )


def confirm_page(
    heading: str, *, incident: dict[str, Any], action: str, button: str, expires: str, max_name: int
) -> str:
    """The question, and the form that POSTs to the page's own URL (the link itself)."""
    return _ENV.get_template("confirm").render(
        heading=heading,
        lines=[],
        incident=incident,
        tone="",
        style=STYLE,
        action=action,
        button=button,
        expires=expires,
        max_name=max_name,
    )
