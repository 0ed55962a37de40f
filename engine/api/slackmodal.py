"""Slack's status-update modal: the page's "Post update" button opens it (views.open with the
click's trigger_id), and its submission (a signed `view_submission`) posts UPDATE #n."""

import os
from typing import Any

import structlog
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

from engine.api import actions
from engine.errors import IncidentNotFound, IngestError, StoreError
from engine.events import UPDATE_STATUSES
from engine.policy.channels import SlackChannel
from engine.policy.models import PolicySet
from engine.policy.targets import user_by_contact
from engine.secrets import secret_or_reason

log = structlog.get_logger(__name__)
CALLBACK_ID = "incident_status"
MAX_MESSAGE = 3000


def status_view(incident_id: str) -> dict[str, Any]:
    """The modal: a status select (the runbooks' words) and what people should know."""
    options = [{"text": {"type": "plain_text", "text": s.capitalize()}, "value": s} for s in UPDATE_STATUSES]
    return {
        "type": "modal",
        "callback_id": CALLBACK_ID,
        "private_metadata": incident_id,
        "title": {"type": "plain_text", "text": "Status update"},
        "submit": {"type": "plain_text", "text": "Post update"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            {
                "type": "input",
                "block_id": "status",
                "label": {"type": "plain_text", "text": "Status"},
                "element": {
                    "type": "static_select",
                    "action_id": "status",
                    "options": options,
                    "initial_option": options[0],
                },
            },
            {
                "type": "input",
                "block_id": "message",
                "label": {"type": "plain_text", "text": "What people should know"},
                "element": {
                    "type": "plain_text_input",
                    "action_id": "message",
                    "multiline": True,
                    "max_length": MAX_MESSAGE,
                },
            },
        ],
    }


async def open_modal(settings: SlackChannel, trigger_id: str, incident_id: str) -> None:
    """views.open with the bot token; a failure is logged (the click already had its answer)."""
    token, problem = secret_or_reason(settings.token_env, settings.token_file, os.environ, "bot token")
    if token is None:
        log.warning("slack_modal_failed", error=problem)
        return
    client = AsyncWebClient(token=token, base_url=settings.api_url, retry_handlers=[])
    try:
        await client.views_open(trigger_id=trigger_id, view=status_view(incident_id))
    except (SlackApiError, SlackClientError, OSError) as exc:
        log.warning("slack_modal_failed", incident=incident_id, error=f"{type(exc).__name__}: {exc}")


class _Selected(BaseModel):
    model_config = ConfigDict(extra="ignore")
    value: str


class _Field(BaseModel):
    model_config = ConfigDict(extra="ignore")
    selected_option: _Selected | None = None
    value: str | None = None


class _State(BaseModel):
    model_config = ConfigDict(extra="ignore")
    values: dict[str, dict[str, _Field]]


class _View(BaseModel):
    model_config = ConfigDict(extra="ignore")
    callback_id: str
    private_metadata: str = Field(max_length=64)
    state: _State


class _User(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str = Field(min_length=1, max_length=64)


class Submission(BaseModel):
    model_config = ConfigDict(extra="ignore")
    user: _User
    view: _View


def _errors(**by_block: str) -> web.Response:
    """Slack shows these under the modal's inputs, and keeps the modal open."""
    return web.json_response({"response_action": "errors", "errors": by_block})


async def submitted(app: web.Application, doc: dict[str, Any], policies: PolicySet) -> web.Response:
    """A submitted status-update modal: 200 with no body closes it; errors keep it open."""
    try:
        sub = Submission.model_validate(doc)
    except ValidationError:
        return web.json_response({"error": "not a view_submission payload", "detail": None}, status=400)
    if sub.view.callback_id != CALLBACK_ID:
        return web.Response(status=200)  # not our modal
    values = sub.view.state.values
    chosen = values.get("status", {}).get("status")
    status = chosen.selected_option.value if chosen and chosen.selected_option else ""
    typed = values.get("message", {}).get("message")
    message = (typed.value or "").strip() if typed else ""
    if status not in UPDATE_STATUSES:
        return _errors(status=f"choose one of {', '.join(UPDATE_STATUSES)}")
    if not message or len(message) > MAX_MESSAGE:
        return _errors(message=f"say what people should know (1 to {MAX_MESSAGE} characters)")
    user = user_by_contact(policies, "slack", sub.user.id)
    if user is None:
        return _errors(
            message="You are not on this policy: your Slack id is no user's contact. Nothing was posted."
        )
    incident_id = sub.view.private_metadata
    try:
        await actions.post_status(app, incident_id, user, status, message)
    except IncidentNotFound:
        return _errors(message=f"There is no incident {incident_id}.")
    except IngestError as exc:  # resolved meanwhile
        return _errors(message=str(exc))
    except StoreError:
        return _errors(message="The engine cannot reach its store right now: try again.")
    log.info("slack_status_update", incident=incident_id, status=status, by=user)
    return web.Response(status=200)
