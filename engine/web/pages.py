"""The console's GET pages: incidents, one incident, a new incident, on call, reports."""

from typing import Any

from aiohttp import web

from engine.api import keys
from engine.api.views import incident_detail
from engine.errors import IncidentNotFound
from engine.events import UPDATE_STATUSES
from engine.feeds import feed_path
from engine.messages import SHOWN_ALERTS
from engine.policy.schedules import handoffs, oncall
from engine.times import rfc3339
from engine.web import charts, listing
from engine.web.base import page, render

SNOOZE_CHOICES = ("15m", "30m", "1h", "2h", "4h", "8h", "24h")
SCAN = 1000  # incidents read for the list and the reports (newest first)
CONSOLE_ALERTS = 100  # alerts on an incident's page (the firing ones first); the count says the rest


def now_ms(request: web.Request) -> int:
    return request.app[keys.processor].clock.now_ms()


@page
async def incidents(request: web.Request) -> web.StreamResponse:
    policies = request.app[keys.policies]()
    f = listing.Filters.from_query(request.query)
    found = await request.app[keys.store].list_incidents(SCAN, SHOWN_ALERTS)  # labels: of those read
    now = now_ms(request)
    kept = [inc for inc in found if listing.keep(inc, f)]
    kept.sort(key=lambda i: i.created_ms, reverse=True)
    services = sorted({s for inc in found if (s := listing.service_of(inc))})
    return await render(
        request,
        "incidents.html",
        title="Incidents",
        rows=[listing.row(inc, policies, now) for inc in kept[: listing.MAX_ROWS]],
        shown=min(len(kept), listing.MAX_ROWS),
        total=len(kept),
        f=f,
        views=listing.VIEWS,
        statuses=["triggered", "acknowledged", "snoozed", "resolved"],
        severities=list(policies.severities),
        services=services,
        refresh=request.query.get("refresh") == "1",
    )


def _alert_rows(detail: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for a in detail["alerts"]:
        links = [  # "runbook_url" reads "runbook", "dashboard_url" "dashboard"
            (k.removesuffix("_url"), url)
            for k, v in sorted(a["annotations"].items())
            if (url := listing.http_url(v)) is not None
        ]
        out.append(
            {
                **a,
                "labels": sorted(a["labels"].items()),
                "annotations": sorted(a["annotations"].items()),
                "links": links,
                "source": listing.http_url(a["generator_url"]),
            }
        )
    return out


def reassign_targets(request: web.Request) -> list[tuple[str, list[str]]]:
    policies = request.app[keys.policies]()
    groups = [
        ("Users", [f"user:{n}" for n in policies.users]),
        ("Schedules", [f"schedule:{n}" for n in policies.schedules]),
        ("Teams", [f"team:{n}" for n in policies.teams]),
    ]
    return [(name, targets) for name, targets in groups if targets]


@page
async def incident(request: web.Request) -> web.StreamResponse:
    store = request.app[keys.store]
    policies = request.app[keys.policies]()
    incident_id = request.match_info["id"]
    inc = await store.load_shown(incident_id, CONSOLE_ALERTS)
    if inc is None:
        raise IncidentNotFound(incident_id)
    now = now_ms(request)
    detail = incident_detail(inc, listing.levels_of(policies, inc.policy), await store.timeline(inc.id))
    return await render(
        request,
        "incident.html",
        title=f"{inc.id} {inc.title}",
        inc=detail,
        row=listing.row(inc, policies, now),
        alerts=_alert_rows(dict(detail)),
        timeline=list(reversed(detail["timeline"])),
        snooze_choices=SNOOZE_CHOICES,
        update_statuses=UPDATE_STATUSES,
        targets=reassign_targets(request),
        is_open=inc.is_open,
    )


@page
async def new_incident(request: web.Request) -> web.StreamResponse:
    policies = request.app[keys.policies]()
    return await render(
        request,
        "new.html",
        title="Open an incident",
        severities=list(policies.severities),
        policies=list(policies.escalation_policies),
        form={},
    )


def _user_name(request: web.Request, target: str) -> str:
    users = request.app[keys.policies]().users
    user = users.get(target)
    return f"{user.name} ({target})" if user is not None and user.name else target


@page
async def oncall_page(request: web.Request) -> web.StreamResponse:
    policies = request.app[keys.policies]()
    now = now_ms(request)
    secret = await request.app[keys.link_secret].get()
    base = request.app[keys.settings].public_url.rstrip("/")
    schedules = []
    for name, schedule in policies.schedules.items():
        schedules.append(
            {
                "name": name,
                "zone": schedule.time_zone,
                "now": [_user_name(request, u) for u in oncall(schedule, now)],
                "fallback": schedule.fallback,
                "next": [
                    (at.isoformat(sep=" ", timespec="minutes"), [_user_name(request, u) for u in who])
                    for at, who in handoffs(schedule, now, 5)
                ],
                "feed": base + feed_path(secret, "schedule", name),
            }
        )
    teams = [
        {"name": n, "schedule": t.schedule, "members": [_user_name(request, m) for m in t.members]}
        for n, t in policies.teams.items()
    ]
    return await render(
        request, "oncall.html", title="On call", schedules=schedules, teams=teams, at=rfc3339(now)
    )


@page
async def reports(request: web.Request) -> web.StreamResponse:
    policies = request.app[keys.policies]()
    now = now_ms(request)
    read = await request.app[keys.store].list_incidents(SCAN, 0)  # the charts need no alert
    found = charts.in_window(read, now, 30)
    targets = {name: sev.ack_within for name, sev in policies.severities.items()}
    stats = charts.severity_stats(found, now, targets)
    css = {s.severity: listing.sev_class(policies, s.severity) for s in stats}
    return await render(
        request,
        "reports.html",
        title="Reports",
        opened=len(found),
        per_day=charts.per_day_svg(charts.per_day(found, now)),
        mtta=charts.duration_svg(
            "Mean time to acknowledge per severity, against ack_within",
            [(s.severity, s.mtta_s, s.target_s) for s in stats],
            css,
        ),
        mttr=charts.duration_svg(
            "Mean time to resolve per severity", [(s.severity, s.mttr_s, None) for s in stats], css
        ),
        stats=stats,
        fmt=charts.fmt_duration,
        truncated=len(read) >= SCAN and len(found) == len(read),
    )
