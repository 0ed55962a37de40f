"""The route table: every HTTP endpoint of the engine in one place."""

from aiohttp import web

from engine.api import (
    deadletters,
    feeds,
    health,
    incidents,
    links,
    openapi,
    reports,
    slack,
    telegram,
    webhook,
)
from engine.api.middlewares import WEBHOOK_PATH


def setup_routes(app: web.Application) -> None:
    app.router.add_post(WEBHOOK_PATH, webhook.alertmanager)
    app.router.add_get("/api/v1/schedules", feeds.list_schedules)
    app.router.add_get("/api/v1/schedules/{name}.ics", feeds.schedule_feed)
    app.router.add_get("/api/v1/users/{name}.ics", feeds.user_feed)
    app.router.add_get("/api/v1/incidents", incidents.list_incidents)
    app.router.add_post("/api/v1/incidents", incidents.open_incident)
    app.router.add_get("/api/v1/incidents/{id}/postmortem", reports.postmortem)
    app.router.add_get("/api/v1/incidents/{id}", incidents.get_incident)
    app.router.add_get("/api/v1/reports", reports.report)
    app.router.add_post("/api/v1/incidents/{id}/{action}", incidents.incident_action)
    app.router.add_get("/api/v1/deadletters", deadletters.list_dead_letters)
    app.router.add_post("/api/v1/deadletters/{id}/redrive", deadletters.redrive)
    app.router.add_post("/api/v1/slack/interactions", slack.interactions)
    app.router.add_post("/api/v1/telegram/updates", telegram.updates)
    app.router.add_get("/ack/{token}", links.confirm_page)
    app.router.add_post("/ack/{token}", links.confirm_action)
    app.router.add_get("/api/v1/openapi.json", openapi.openapi)
    app.router.add_get("/-/healthy", health.healthy)
    app.router.add_get("/-/ready", health.ready)
    app.router.add_post("/-/reload", health.reload)
