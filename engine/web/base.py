"""What every console handler shares: the session on the request, CSRF, rendering, errors.

GET pages go through `page` (a session is required when the engine has API credentials; an
open engine gets an anonymous session so that its forms still carry a CSRF token); POST
handlers go through `action` (a valid session and CSRF token, else 403 and nothing changes).
"""

import hashlib
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import structlog
from aiohttp import web
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from multidict import MultiDictProxy

from engine.api import keys
from engine.api.body import read_form
from engine.errors import EngineError, IncidentNotFound, StoreError
from engine.web import session as sess
from engine.web.session import Session

log = structlog.get_logger(__name__)
HERE = Path(__file__).parent
SESSION: web.RequestKey[Session | None] = web.RequestKey("console_session")
FLASH: web.RequestKey[tuple[str, str] | None] = web.RequestKey("console_flash")
Form = MultiDictProxy[str | bytes | web.FileField]
Page = Callable[[web.Request], Awaitable[web.StreamResponse]]
Action = Callable[[web.Request, Session, dict[str, str]], Awaitable[web.StreamResponse]]
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Robots-Tag": "noindex, nofollow",
}
CONSOLE_PATHS = ("/login", "/logout", "/incidents", "/oncall", "/reports", "/static/console/")
MAX_FIELD = 8192


class Console:
    """The console's per-app state: the template environment and the derived signing key."""

    def __init__(self) -> None:
        self.env = Environment(
            loader=FileSystemLoader(HERE / "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self._key: bytes | None = None
        css = (HERE / "static" / "console.css").read_bytes()
        self.css_url = f"/static/console/console.css?v={hashlib.sha256(css).hexdigest()[:12]}"

    async def key(self, app: web.Application) -> bytes:
        if self._key is None:
            auth = app[keys.auth]
            secret = await app[keys.link_secret].get()
            self._key = sess.derive_key(secret, f"{auth.token}\x00{auth.basic}")
        return self._key


CONSOLE = web.AppKey("console", Console)


def is_console(path: str) -> bool:
    return path == "/" or path.startswith(CONSOLE_PATHS)


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: every console answer, including error and static ones."""
    if is_console(request.path):
        for name, value in HEADERS.items():
            response.headers.setdefault(name, value)
        if "Cache-Control" not in response.headers and not request.path.startswith("/static/"):
            response.headers["Cache-Control"] = "no-store"


def now_s() -> float:
    return time.time()


def auth_enabled(request: web.Request) -> bool:
    return request.app[keys.auth].enabled


async def key(request: web.Request) -> bytes:
    return await request.app[CONSOLE].key(request.app)


async def current(request: web.Request) -> Session | None:
    value = request.cookies.get(sess.COOKIE)
    return sess.decode(await key(request), value, now_s()) if value else None


def secure(request: web.Request) -> bool:
    return request.secure or request.app[keys.settings].public_url.startswith("https://")


async def set_session(request: web.Request, response: web.StreamResponse, s: Session) -> None:
    response.set_cookie(
        sess.COOKIE,
        sess.encode(await key(request), s),
        max_age=sess.TTL_S,
        path="/",
        httponly=True,
        # Lax, not Strict: a link from a page (Slack, email) must arrive logged in; every change
        # is a POST, which Lax keeps off cross-site requests and the CSRF token guards besides
        samesite="Lax",
        secure=secure(request),
    )


def clear_session(response: web.StreamResponse) -> None:
    response.del_cookie(sess.COOKIE, path="/")


async def flash(request: web.Request, response: web.StreamResponse, s: Session, tone: str, text: str) -> None:
    value = sess.encode_flash(await key(request), s.sid, tone, text)
    response.set_cookie(
        sess.FLASH_COOKIE,
        value,
        max_age=120,
        path="/",
        httponly=True,
        # Lax, not Strict: a link from a page (Slack, email) must arrive logged in; every change
        # is a POST, which Lax keeps off cross-site requests and the CSRF token guards besides
        samesite="Lax",
        secure=secure(request),
    )


def safe_next(target: str | None) -> str:
    """Only a path on this site: no scheme, no host, no `//evil` or `/\\evil`."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")) or "\\" in target:
        return "/"
    return target if target.isprintable() else "/"


def see_other(location: str) -> web.Response:
    """303: after a POST the browser GETs the page again (a reload does not repeat the POST)."""
    return web.Response(status=303, headers={"Location": location})


async def render(request: web.Request, template: str, status: int = 200, **ctx: Any) -> web.Response:
    s = request.get(SESSION)
    common = {
        "session": s,
        "csrf": sess.csrf_token(await key(request), s) if s else "",
        "auth_enabled": auth_enabled(request),
        "flash": request.get(FLASH),
        "path": request.path,
        "by": display_name(s),
        "css_url": request.app[CONSOLE].css_url,
    }
    text = request.app[CONSOLE].env.get_template(template).render(**common, **ctx)
    return web.Response(status=status, text=text, content_type="text/html", charset="utf-8")


def display_name(s: Session | None) -> str:
    return s.name if s and s.name else "console"


async def error_page(request: web.Request, status: int, heading: str, message: str) -> web.Response:
    return await render(request, "error.html", status=status, heading=heading, message=message)


def page(handler: Page, *, public: bool = False) -> Page:
    """A GET page: login required when credentials are configured (unless `public`: the login
    page itself, which gets an anonymous session for its CSRF token); errors as HTML pages."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        s = await current(request)
        new = None
        if not public and s is not None and auth_enabled(request) and not s.authenticated:
            s = None
        if s is None:
            if auth_enabled(request) and not public:
                return see_other(f"/login?next={quote(request.path_qs, safe='')}")
            s = new = Session.new(now_s())
        request[SESSION] = s
        had_flash = sess.FLASH_COOKIE in request.cookies
        if had_flash:
            request[FLASH] = sess.decode_flash(await key(request), request.cookies[sess.FLASH_COOKIE], s.sid)
        resp = await _guarded(request, handler)
        if new is not None:
            await set_session(request, resp, new)
        if had_flash:
            resp.del_cookie(sess.FLASH_COOKIE, path="/")
        return resp

    return wrapped


async def _guarded(request: web.Request, handler: Page) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return await error_page(request, exc.status, exc.reason, exc.text or "")
    except IncidentNotFound as exc:
        return await error_page(request, 404, "No such incident", f"There is no incident {exc}.")
    except StoreError as exc:
        log.warning("console_store_unavailable", path=request.path, error=str(exc))
        return await error_page(request, 503, "Store unavailable", "Redis did not answer; try again shortly.")
    except EngineError as exc:
        return await error_page(request, 400, "Cannot show this", str(exc))
    except Exception:
        log.exception("console_page_failed", path=request.path)
        return await error_page(request, 500, "Something went wrong", "The engine's log has the details.")


async def form_fields(request: web.Request) -> dict[str, str]:
    """A urlencoded form as text fields (files and over-long values are dropped)."""
    form = await read_form(request)
    return {k: v for k, v in form.items() if isinstance(v, str) and len(v) <= MAX_FIELD}


async def forbidden(request: web.Request, message: str) -> web.Response:
    request[SESSION] = None
    return await render(request, "error.html", status=403, heading="Forbidden", message=message)


def action(handler: Action, *, login: bool = False) -> Page:
    """A POST: a live session and its CSRF token, else 403 and nothing changes. Handler errors
    become a flash message on the page it redirects back to (never a 500)."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        s = await current(request)
        fields = await form_fields(request)
        if s is None:
            return await forbidden(request, "Your session has expired or is missing: reload the page.")
        if not sess.csrf_ok(await key(request), s, fields.get("csrf", "")):
            log.info("console_csrf_refused", path=request.path)
            return await forbidden(request, "The form's security token is missing or wrong: reload the page.")
        if auth_enabled(request) and not s.authenticated and not login:
            return await forbidden(request, "Log in first.")
        request[SESSION] = s
        try:
            return await handler(request, s, fields)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return await error_page(request, exc.status, exc.reason, exc.text or "")
        except Exception as exc:
            back = safe_next(fields.get("back") or request.path)
            message = _failure(exc)
            if not isinstance(exc, EngineError):
                log.exception("console_action_failed", path=request.path)
            resp = see_other(back)
            await flash(request, resp, s, "bad", message)
            return resp

    return wrapped


def _failure(exc: Exception) -> str:
    if isinstance(exc, IncidentNotFound):
        return f"No incident {exc}."
    if isinstance(exc, StoreError):
        return "The store did not answer; nothing was changed. Try again."
    if isinstance(exc, EngineError):
        return str(exc)
    return "The action failed; the engine's log has the details."
