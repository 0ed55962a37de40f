"""GET /api/v1/openapi.json: the OpenAPI 3.1 document of the HTTP API.

Generated from the models that validate requests (AlertmanagerPayload, ActionBody, SnoozeBody)
and the TypedDicts the handlers answer with (api/views.py): nothing is written twice.
"""

from functools import cache
from typing import Any, Literal

from aiohttp import web
from pydantic import TypeAdapter

from engine import __version__
from engine.api.requests import ActionBody, OpenBody, ReassignBody, SnoozeBody, StatusBody
from engine.api.views import (
    DeadLetterList,
    ErrorReply,
    IncidentDetail,
    IncidentList,
    IncidentView,
    IngestReply,
    RedriveReply,
    ReloadReply,
)
from engine.events import MANUAL_ACTIONS
from engine.ingest.alertmanager import AlertmanagerPayload

REF = "#/components/schemas/{model}"
_ERRORS = {
    400: "Bad request: not JSON, not an object, a bad query parameter",
    401: "Missing or bad credentials (when auth is configured)",
    404: "No such incident",
    409: "The incident is resolved: no status update or reassignment any more",
    413: "Body over the size limit",
    422: "Invalid: `detail` lists each problem (a field, or a policy file:line)",
    503: "The store is unreachable: try again",
}


def _schemas() -> dict[str, Any]:
    """Every named schema, with the ones they refer to, under components/schemas."""
    out: dict[str, Any] = {}
    named: list[tuple[str, Any, Literal["validation", "serialization"]]] = [
        ("AlertmanagerPayload", AlertmanagerPayload, "validation"),
        ("ActionBody", ActionBody, "validation"),
        ("SnoozeBody", SnoozeBody, "validation"),
        ("StatusBody", StatusBody, "validation"),
        ("ReassignBody", ReassignBody, "validation"),
        ("OpenBody", OpenBody, "validation"),
        ("IngestReply", IngestReply, "serialization"),
        ("IncidentView", IncidentView, "serialization"),
        ("IncidentDetail", IncidentDetail, "serialization"),
        ("IncidentList", IncidentList, "serialization"),
        ("ReloadReply", ReloadReply, "serialization"),
        ("DeadLetterList", DeadLetterList, "serialization"),
        ("RedriveReply", RedriveReply, "serialization"),
        ("ErrorReply", ErrorReply, "serialization"),
    ]
    for name, kind, mode in named:
        schema = TypeAdapter(kind).json_schema(by_alias=True, ref_template=REF, mode=mode)
        out.update(schema.pop("$defs", {}))
        out[name] = schema
    return out


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(model=name)}


def _json(name: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(name)}}}


def _answers(ok: str, description: str, *errors: int, status: int = 200) -> dict[str, Any]:
    out = {str(status): _json(ok, description)}
    out |= {str(code): _json("ErrorReply", _ERRORS[code]) for code in errors}
    return out


def _text(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"text/plain": {"schema": {"type": "string"}}}}


# each action's request body: status and reassign have their own, as snooze does
ACTION_BODIES = {
    **dict.fromkeys(MANUAL_ACTIONS, "ActionBody"),
    "snooze": "SnoozeBody",
    "status": "StatusBody",
    "reassign": "ReassignBody",
}
INCIDENT_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
WRITE: list[dict[str, list[str]]] = [{"bearer": []}, {"basic": []}]


def _links() -> dict[str, Any]:
    """From a webhook's answer to the incident it opened: how a client (or a fuzzer) gets an id."""
    first = {"id": "$response.body#/incidents/0"}
    links = {"GetIncident": {"operationId": "get_incident", "parameters": first}}
    for action in ACTION_BODIES:
        links[f"Incident_{action}"] = {"operationId": f"incident_{action}", "parameters": first}
    return links


def _actions() -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for action, body in ACTION_BODIES.items():
        paths[f"/api/v1/incidents/{{id}}/{action}"] = {
            "post": {
                "operationId": f"incident_{action}",
                "summary": f"{action} an incident",
                "security": WRITE,
                "parameters": [INCIDENT_ID],
                "requestBody": {
                    "required": body != "ActionBody",
                    "content": {"application/json": {"schema": _ref(body)}},
                },
                "responses": _answers(
                    "IncidentView", "The incident after the action", 400, 401, 404, 409, 413, 422, 503
                ),
            }
        }
    return paths


def _html(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"text/html": {"schema": {"type": "string"}}}}


def _delivery() -> dict[str, Any]:
    """Dead letters, chat callbacks and the one-click links of pages."""
    limit = {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}}
    token = {"name": "token", "in": "path", "required": True, "schema": {"type": "string"}}
    dead_id = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
    link_pages = {
        "200": _html("The confirmation (GET) or the result (POST) page"),
        **{code: _html(text) for code, text in _LINK_PAGES.items()},
    }
    callback_errors = {
        "401": _json("ErrorReply", "Missing, wrong or stale signature / secret token: nothing changes"),
        "404": _json("ErrorReply", "The channel is not configured"),
        "503": _json("ErrorReply", "The channel's signing secret cannot be read"),
    }
    return {
        "/api/v1/deadletters": {
            "get": {
                "operationId": "list_dead_letters",
                "summary": "Notifications that finally failed, newest first",
                "parameters": [limit],
                "responses": _answers("DeadLetterList", "Dead letters", 400, 503),
            }
        },
        "/api/v1/deadletters/{id}/redrive": {
            "post": {
                "operationId": "redrive_dead_letter",
                "summary": "Queue a dead letter again; sent only if it still applies",
                "security": WRITE,
                "parameters": [dead_id],
                "responses": _answers("RedriveReply", "Queued", 401, 404, 422, 503, status=202),
            }
        },
        "/api/v1/slack/interactions": {
            "post": {
                "operationId": "slack_interactions",
                "summary": "Slack button clicks (block_actions), v0 signature verified",
                "requestBody": {
                    "required": True,
                    "content": {"application/x-www-form-urlencoded": {"schema": {"type": "object"}}},
                },
                "responses": {
                    "200": {"description": "Acknowledged to Slack"},
                    "400": _json("ErrorReply", "Not a Slack interaction payload"),
                    **callback_errors,
                },
            }
        },
        "/api/v1/telegram/updates": {
            "post": {
                "operationId": "telegram_updates",
                "summary": "Telegram callback queries, X-Telegram-Bot-Api-Secret-Token verified",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"type": "object"}}},
                },
                "responses": {
                    "200": {"description": "Handled or ignored"},
                    "400": _json("ErrorReply", "Not a Telegram Update"),
                    **callback_errors,
                },
            }
        },
        "/ack/{token}": {
            "get": {
                "operationId": "link_confirm",
                "summary": "A signed one-click link: a confirmation page; changes nothing",
                "parameters": [token],
                "responses": link_pages,
            },
            "post": {
                "operationId": "link_act",
                "summary": "Do what the link says, once",
                "parameters": [token],
                "responses": link_pages,
            },
        },
    }


def _people() -> dict[str, Any]:
    """Post-incident reviews, reports and on-call calendar feeds."""
    obj = {"description": "", "content": {"application/json": {"schema": {"type": "object"}}}}
    name = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
    token = {"name": "token", "in": "query", "required": True, "schema": {"type": "string"}}
    ics = {"description": "iCalendar feed", "content": {"text/calendar": {"schema": {"type": "string"}}}}
    missing = _json("ErrorReply", "No such feed, or a wrong token (the two look alike)")
    return {
        "/api/v1/incidents/{id}/postmortem": {
            "get": {
                "operationId": "postmortem",
                "summary": "The post-incident review in Markdown, pre-filled from the timeline",
                "parameters": [INCIDENT_ID],
                "responses": {
                    "200": {
                        "description": "Markdown",
                        "content": {"text/markdown": {"schema": {"type": "string"}}},
                    },
                    "404": _json("ErrorReply", _ERRORS[404]),
                    "503": _json("ErrorReply", _ERRORS[503]),
                },
            }
        },
        "/api/v1/reports": {
            "get": {
                "operationId": "report",
                "summary": "MTTA/MTTR per severity and service, targets met, pages per person, noisy alerts",
                "parameters": [
                    {"name": "since", "in": "query", "schema": {"type": "string", "default": "30d"}},
                    {
                        "name": "format",
                        "in": "query",
                        "schema": {"type": "string", "enum": ["json", "markdown"]},
                    },
                ],
                "responses": {
                    "200": {
                        "description": "The report",
                        "content": {
                            "application/json": {"schema": {"type": "object"}},
                            "text/markdown": {"schema": {"type": "string"}},
                        },
                    },
                    "400": _json("ErrorReply", "A bad since or format"),
                    "503": _json("ErrorReply", _ERRORS[503]),
                },
            }
        },
        "/api/v1/schedules": {
            "get": {
                "operationId": "list_schedules",
                "summary": "Who is on call on every schedule, the next hand-offs, and the calendar feed URLs",
                "security": WRITE,
                "responses": {
                    "200": {**obj, "description": "Schedules"},
                    "401": _json("ErrorReply", _ERRORS[401]),
                },
            }
        },
        "/api/v1/schedules/{name}.ics": {
            "get": {
                "operationId": "schedule_feed",
                "summary": "A schedule's shifts as iCalendar (the token is the credential)",
                "parameters": [name, token],
                "responses": {"200": ics, "404": missing},
            }
        },
        "/api/v1/users/{name}.ics": {
            "get": {
                "operationId": "user_feed",
                "summary": "A person's shifts across every schedule, as iCalendar",
                "parameters": [name, token],
                "responses": {"200": ics, "404": missing},
            }
        },
    }


_LINK_PAGES = {
    "400": "Not a valid link (tampered, malformed)",
    "404": "No such incident",
    "409": "Already used, or nothing to do in the incident's state",
    "410": "Expired",
    "503": "The store is unreachable",
}


@cache
def document() -> dict[str, Any]:
    list_params = [
        {
            "name": "status",
            "in": "query",
            "schema": {"type": "string"},
            "description": "comma-separated states",
        },
        {"name": "severity", "in": "query", "schema": {"type": "string"}, "description": "comma-separated"},
        {
            "name": "label",
            "in": "query",
            "schema": {"type": "array", "items": {"type": "string"}},
            "style": "form",
            "explode": True,
            "description": 'an Alertmanager matcher such as job=~"api.*" (RE2), or a label name',
        },
        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
    ]
    paths: dict[str, Any] = {
        "/api/v1/alertmanager": {
            "post": {
                "operationId": "alertmanager_webhook",
                "summary": "Alertmanager webhook (payload version 4); 200 once the alerts are stored",
                "security": WRITE,
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("AlertmanagerPayload")}},
                },
                "responses": {
                    **_answers("IngestReply", "Stored", 400, 401, 413, 422, 503),
                    "200": {**_json("IngestReply", "Stored"), "links": _links()},
                },
            }
        },
        "/api/v1/incidents": {
            "get": {
                "operationId": "list_incidents",
                "summary": "Incidents, newest first",
                "parameters": list_params,
                "responses": _answers("IncidentList", "Incidents", 400, 503),
            },
            "post": {
                "operationId": "open_incident",
                "summary": "Open an incident by hand (a customer report): it pages like an alert",
                "security": WRITE,
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("OpenBody")}},
                },
                "responses": _answers("IncidentView", "Opened", 400, 401, 413, 422, 503, status=201),
            },
        },
        "/api/v1/incidents/{id}": {
            "get": {
                "operationId": "get_incident",
                "summary": "One incident with its alerts (the firing ones first) and timeline",
                "parameters": [
                    INCIDENT_ID,
                    {
                        "name": "alerts",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 0, "maximum": 1000, "default": 100},
                        "description": "alerts to include at most; alert_count counts them all",
                    },
                ],
                "responses": _answers("IncidentDetail", "The incident", 400, 404, 503),
            }
        },
        **_actions(),
        **_delivery(),
        **_people(),
        "/-/reload": {
            "post": {
                "operationId": "reload",
                "summary": "Reload the policy directory; a broken set is refused and the running one kept",
                "security": WRITE,
                "responses": _answers("ReloadReply", "The new set is in force", 401, 422),
            }
        },
        "/-/healthy": {"get": {"operationId": "healthy", "responses": {"200": _text("Alive")}}},
        "/-/ready": {
            "get": {
                "operationId": "ready",
                "responses": {"200": _text("Ready"), "503": _text("The store is unreachable")},
            }
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "escalation-engine", "version": __version__},
        "paths": paths,
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "basic": {"type": "http", "scheme": "basic"},
            },
        },
    }


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(document())
