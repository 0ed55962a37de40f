"""Signed one-click links: GET /ack/{token} asks, POST /ack/{token} acts.

The token is the credential (engine/links.py): it names one incident and one action, so an
acknowledge link cannot resolve. GET changes nothing and does not use the token up (mail scanners
and link previews fetch every link); POST verifies again, records the token as used (a second POST
is refused: 409) and runs the action through the processor like any other. Answers are small
HTML pages, never JSON, and never a 500 for a state the incident happens to be in.
"""

import contextlib
import unicodedata
from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import web

from engine import links
from engine.api import keys, linkpages
from engine.api.actions import act
from engine.api.body import read_form
from engine.errors import IncidentNotFound, StoreError
from engine.incident import Incident, Status
from engine.times import rfc3339

log = structlog.get_logger(__name__)
MAX_NAME_CHARS = 64
_MAX_FORM_BYTES = 4096
_VERBS = {"ack": ("Acknowledge", "acknowledged"), "resolve": ("Resolve", "resolved")}
HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",  # the token is in the URL: never hand it to another site
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": linkpages.CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Robots-Tag": "noindex, nofollow",
}


def page(status: int, body: str) -> web.Response:
    return web.Response(status=status, text=body, content_type="text/html", headers=HEADERS)


@dataclass(eq=False)
class Refusal(Exception):
    """An answer other than the one asked for: raised anywhere below, shown as a page."""

    status: int
    heading: str
    lines: list[str]
    incident: dict[str, Any] | None = None

    def response(self) -> web.Response:
        tone = "bad" if self.status >= 400 and self.status != 409 else ""
        return page(
            self.status, linkpages.message_page(self.heading, self.lines, incident=self.incident, tone=tone)
        )


def summary(inc: Incident) -> dict[str, Any]:
    """What the pages show of an incident (escaped when rendered)."""
    return {
        "id": inc.id,
        "title": inc.title,
        "severity": inc.severity,
        "status": inc.status.value,
        "acknowledged_by": (inc.acked_by or "") if inc.status is Status.ACKNOWLEDGED else "",
        "resolved_by": (inc.resolved_by or "") if inc.status is Status.RESOLVED else "",
        "started": rfc3339(inc.created_ms),
    }


async def _link(request: web.Request) -> links.Link:
    app = request.app
    try:
        secret = await app[keys.link_secret].get()
    except StoreError as exc:
        raise _unavailable(exc) from None
    try:
        return links.verify(secret, request.match_info["token"], app[keys.processor].clock.now_ms())
    except links.LinkExpired as exc:
        raise Refusal(
            410, "This link has expired", [f"{_sentence(exc)} Open the incident another way."]
        ) from None
    except links.LinkError as exc:
        raise Refusal(400, "This link is not valid", [f"{_sentence(exc)} Nothing was changed."]) from None


def _sentence(exc: Exception) -> str:
    text = str(exc)
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


def _unavailable(exc: StoreError) -> Refusal:
    log.warning("link_store_unavailable", error=str(exc))
    return Refusal(
        503, "Try again in a moment", ["The engine cannot reach its store right now. Nothing was changed."]
    )


async def _incident(request: web.Request, incident_id: str) -> Incident:
    try:
        inc = await request.app[keys.store].load(incident_id)
    except StoreError as exc:
        raise _unavailable(exc) from None
    if inc is None:
        raise Refusal(
            404, "No such incident", [f"There is no incident {incident_id}: it may have been deleted."]
        )
    return inc


def _moot(inc: Incident, action: str) -> str:
    """Why the action cannot change the incident as it stands ("" when it can)."""
    if inc.status is Status.RESOLVED:
        by = f" by {inc.resolved_by}" if inc.resolved_by else ""
        return f"Incident {inc.id} is already resolved{by}: there is nothing to {_VERBS[action][0].lower()}."
    if action == "ack" and inc.status is Status.ACKNOWLEDGED:
        by = f" by {inc.acked_by}" if inc.acked_by else ""
        return f"Incident {inc.id} is already acknowledged{by}."
    return ""


async def confirm_page(request: web.Request) -> web.Response:
    """GET: the question and a button, or why there is none. Changes nothing."""
    try:
        link = await _link(request)
        inc = await _incident(request, link.incident_id)
    except Refusal as refusal:
        return refusal.response()
    verb, _ = _VERBS[link.action]
    if why := _moot(inc, link.action):
        return page(200, linkpages.message_page(f"{verb} incident {inc.id}", [why], incident=summary(inc)))
    body = linkpages.confirm_page(
        f"{verb} incident {inc.id}?",
        incident=summary(inc),
        action=link.action,
        button=f"{verb} incident",
        expires=rfc3339(link.expires_ms),
        max_name=MAX_NAME_CHARS,
    )
    return page(200, body)


async def confirm_action(request: web.Request) -> web.Response:
    """POST: verify, use the token up (once only), act, and say what happened."""
    try:
        return await _act(request)
    except Refusal as refusal:
        return refusal.response()


async def _act(request: web.Request) -> web.Response:
    link = await _link(request)
    name = await _name(request)
    before = await _incident(request, link.incident_id)
    app = request.app
    store = app[keys.store]
    try:
        if not await store.use_once(link.digest, link.expires_ms):
            raise Refusal(
                409,
                "This link was already used",
                ["Each link works once. Nothing was changed."],
                summary(before),
            )
    except StoreError as exc:
        raise _unavailable(exc) from None
    by = f"{name} (via link)" if name else "link"
    try:
        after = await act(app, link.incident_id, link.action, by)
    except StoreError as exc:  # nothing was done: the link works again when the store is back
        with contextlib.suppress(StoreError):
            await store.forget_use(link.digest)
        raise _unavailable(exc) from None
    except IncidentNotFound:
        raise Refusal(404, "No such incident", [f"There is no incident {link.incident_id}."]) from None
    verb, done = _VERBS[link.action]
    if not _changed(before, after, link.action, by):
        why = _moot(after, link.action) or f"Incident {after.id} did not change."
        return page(409, linkpages.message_page(f"Nothing to {verb.lower()}", [why], incident=summary(after)))
    log.info("link_action", incident=after.id, action=link.action, by=by)
    text = f"Incident {after.id} is {done} by {by}."
    return page(
        200, linkpages.message_page(f"{done.capitalize()}", [text], incident=summary(after), tone="ok")
    )


def _changed(before: Incident, after: Incident, action: str, by: str) -> bool:
    """Whether this action made the change (not someone before it: then the page says how things are)."""
    if action == "ack":
        return (
            after.status is Status.ACKNOWLEDGED
            and after.acked_by == by
            and before.status not in (Status.ACKNOWLEDGED, Status.RESOLVED)
        )
    return (
        after.status is Status.RESOLVED and after.resolved_by == by and before.status is not Status.RESOLVED
    )


async def _name(request: web.Request) -> str:
    """The optional name from the form: one line, printable, at most MAX_NAME_CHARS."""
    if not request.can_read_body:
        return ""
    if request.content_length is not None and request.content_length > _MAX_FORM_BYTES:
        raise Refusal(413, "Too much data", ["The form sent more than a name. Nothing was changed."])
    try:
        form = await read_form(request)
    except (ValueError, web.HTTPException):
        raise Refusal(400, "The form could not be read", ["Nothing was changed."]) from None
    raw = form.get("by", "")
    return clean_name(raw) if isinstance(raw, str) else ""


def clean_name(raw: str) -> str:
    """Control and format characters as spaces, whitespace collapsed, cut to MAX_NAME_CHARS."""
    kept = "".join(" " if unicodedata.category(c)[0] == "C" else c for c in raw[: MAX_NAME_CHARS * 4])
    return " ".join(kept.split())[:MAX_NAME_CHARS].strip()
