"""The words of an e-mail: its plain-text part and its HTML part, every piece of alert text escaped."""

import html
import re
from urllib.parse import urlsplit

from markupsafe import escape

from engine.messages import Message


def one_line(text: str) -> str:
    return " ".join(text.split())  # header values must not carry CR/LF (alert text often does)


def _is_web_url(url: str) -> bool:
    """Only http(s) links become clickable: an annotation could hold a javascript: URL."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def text_body(message: Message) -> str:
    lines = [message.body.rstrip()]
    if message.incident_url and message.incident_url not in message.body:  # the default templates link it
        lines += ["", f"Incident: {message.incident_url}"]
    lines += ["", "-- ", f"Incident {message.incident_id} · sent to {message.target} by escalation-engine"]
    return "\n".join(lines) + "\n"


def _link_or_text(url: str, text: str) -> str:
    if _is_web_url(url):
        return f'<a href="{html.escape(url)}">{html.escape(text)}</a>'
    return html.escape(url)


_BUTTON = (
    'style="display:inline-block;padding:8px 16px;margin:0 8px 4px 0;border-radius:4px;'
    'color:#fff;text-decoration:none;font-weight:bold;background:{}"'
)
_ONE_CLICK = {"acknowledge": ("Acknowledge", "#1f6feb"), "resolve": ("Resolve", "#1a7f37")}


def _buttons(message: Message) -> list[str]:
    """The signed links as buttons: none once resolved, no acknowledge once acknowledged."""
    if message.status == "resolved":
        return []
    buttons = [
        f'<a href="{html.escape(url)}" {_BUTTON.format(color)}>{label}</a>'
        for key, (label, color) in _ONE_CLICK.items()
        if _is_web_url(url := message.links.get(key, ""))
        and not (key == "acknowledge" and message.status == "acknowledged")
    ]
    return ['<p style="margin:0 0 12px">' + "".join(buttons) + "</p>"] if buttons else []


def _linkify(shown: str, urls: list[str]) -> str:
    """The signed links in the escaped body made clickable (a template with its own <a> is left be)."""
    if not urls or "<a " in shown:
        return shown
    forms = sorted(
        {f(url) for url in urls for f in (html.escape, lambda u: str(escape(u)))}, key=len, reverse=True
    )
    pattern = re.compile("|".join(re.escape(f) for f in forms))
    return pattern.sub(lambda m: f'<a href="{m.group(0)}">{m.group(0)}</a>', shown)


def html_body(message: Message) -> str:
    """A simple HTML version of `message`; every piece of alert text is escaped.

    The body is `message.html`, the body template rendered with its values escaped (a template's own
    markup is the policy author's); a Message without it shows `message.body`, escaped here."""
    esc = html.escape
    title = one_line(message.title)
    shown = message.html.rstrip() if message.html else esc(message.body.rstrip())
    shown = _linkify(shown, [url for url in message.links.values() if _is_web_url(url)])
    cell = 'style="padding:2px 8px;border:1px solid #ddd;vertical-align:top"'
    parts = [
        "<!DOCTYPE html>",
        '<html><head><meta charset="utf-8"><title>' + esc(title) + "</title></head>",
        '<body style="font-family:Arial,Helvetica,sans-serif;font-size:14px;color:#222">',
        '<p style="font-size:16px;font-weight:bold;margin:0 0 8px">' + esc(title) + "</p>",
        *_buttons(message),
        '<pre style="font-family:Menlo,Consolas,monospace;font-size:13px;white-space:pre-wrap;'
        'margin:0 0 12px">' + shown + "</pre>",
    ]
    links = []
    if message.incident_url:
        links.append(_link_or_text(message.incident_url, f"Open incident {message.incident_id}"))
    for alert in message.alerts:
        name = alert.labels.get("alertname", alert.fingerprint)
        if alert.annotations.get("runbook_url"):
            links.append(_link_or_text(alert.annotations["runbook_url"], f"Runbook: {name}"))
        if alert.generator_url:
            links.append(_link_or_text(alert.generator_url, f"Graph: {name}"))
    if links:
        parts.append('<p style="margin:0 0 12px">' + " &middot; ".join(dict.fromkeys(links)) + "</p>")
    if message.labels:
        rows = "".join(
            f"<tr><td {cell}>{esc(key)}</td><td {cell}>{esc(value)}</td></tr>"
            for key, value in sorted(message.labels.items())
        )
        parts.append(f'<table style="border-collapse:collapse;margin:0 0 12px">{rows}</table>')
    parts += [
        '<p style="color:#888;font-size:12px">Incident '
        + esc(message.incident_id)
        + " &middot; sent to "
        + esc(message.target)
        + " by escalation-engine</p>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"
