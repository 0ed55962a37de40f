"""Log in with the API's own credentials (bearer token, or basic user and password), log out.

On an open engine (no credentials configured) the login form only asks for a name, recorded as
"by" on what the person does. A login starts a new session (a new id: a session id planted
before the login is worth nothing after it).
"""

import asyncio
import hmac

import structlog
from aiohttp import web

from engine.api import keys
from engine.api.auth import client_key
from engine.web import session as sess
from engine.web.base import (
    action,
    auth_enabled,
    clear_session,
    now_s,
    page,
    render,
    safe_next,
    see_other,
    set_session,
)
from engine.web.session import Session

log = structlog.get_logger(__name__)
FAILED_LOGIN_DELAY_S = 1.0  # slows guessing; the token is long anyway


async def _login_form(request: web.Request) -> web.StreamResponse:
    return await _form(request, "", 200)


async def _form(request: web.Request, problem: str, status: int) -> web.Response:
    auth = request.app[keys.auth]
    return await render(
        request,
        "login.html",
        status=status,
        title="Log in",
        problem=problem,
        token_login=auth.token is not None,
        basic_login=auth.basic is not None,
        next=safe_next(request.query.get("next")),
    )


def _same(given: str, expected: str) -> bool:
    """Constant-time, as engine.api.auth compares; non-ASCII input is a mismatch, not an error."""
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode("utf-8"))


def _credentials_ok(request: web.Request, fields: dict[str, str]) -> str | None:
    """The name the credentials prove (the basic user, else ""), or None when they are wrong:
    the API's own credentials (engine.api.auth.Auth), the token or the basic user and password."""
    auth = request.app[keys.auth]
    if auth.token is not None and _same(fields.get("token", ""), auth.token):
        return ""
    if auth.basic is not None and fields.get("user"):
        user, password = auth.basic
        if _same(fields["user"], user) & _same(fields.get("password", ""), password):
            return user
    return None


async def _login(request: web.Request, s: Session, fields: dict[str, str]) -> web.StreamResponse:
    name = fields.get("name", "").strip()[: sess.MAX_NAME_CHARS]
    target = safe_next(fields.get("next"))
    authenticated = False
    if auth_enabled(request):
        failures = request.app[keys.auth].failures  # the API's count: one budget per address
        if failures.retry_after_s(client_key(request.remote)):
            return await _form(request, "Too many failed attempts; wait a minute and try again.", 429)
        proven = _credentials_ok(request, fields)
        if proven is None:
            failures.failed(client_key(request.remote))
            log.info("console_login_failed", remote=request.remote)
            await asyncio.sleep(FAILED_LOGIN_DELAY_S)
            return await _form(request, "Those credentials are not right.", 401)
        name = name or proven
        authenticated = True
    fresh = Session.new(now_s(), name, authenticated)
    log.info("console_login", name=name, authenticated=authenticated)
    resp = see_other(target)
    await set_session(request, resp, fresh)
    return resp


async def _logout(request: web.Request, s: Session, fields: dict[str, str]) -> web.StreamResponse:
    resp = see_other("/login")
    clear_session(resp)
    return resp


login_form = page(_login_form, public=True)
login = action(_login, login=True)
logout = action(_logout, login=True)
