"""The web console, served by the engine at `/`: incidents, one incident and its actions, on
call, reports, and opening an incident by hand. Server-rendered HTML (Jinja2, autoescaped)
with plain forms: everything works without JavaScript, and the pages run none.

    setup_web(app)   # in create_app, after the API's routes
"""

from aiohttp import web

from engine.web import forms, login, pages
from engine.web.base import CONSOLE, HERE, Console, security_headers

__all__ = ["setup_web"]


def setup_web(app: web.Application) -> None:
    """Add the console's routes to `app` (once: a second call changes nothing)."""
    if CONSOLE in app:
        return
    app[CONSOLE] = Console()
    app.on_response_prepare.append(security_headers)
    r = app.router
    r.add_get("/", pages.incidents)
    r.add_get("/login", login.login_form)
    r.add_post("/login", login.login)
    r.add_post("/logout", login.logout)
    r.add_get("/incidents/new", pages.new_incident)
    r.add_post("/incidents/new", forms.open_incident)
    r.add_get("/incidents/{id}", pages.incident)
    r.add_post("/incidents/{id}/status", forms.status)
    r.add_post("/incidents/{id}/reassign", forms.reassign)
    r.add_post("/incidents/{id}/{verb}", forms.verb)
    r.add_get("/oncall", pages.oncall_page)
    r.add_get("/reports", pages.reports)
    r.add_static("/static/console/", HERE / "static", name="console-static", append_version=True)
