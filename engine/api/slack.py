"""Slack button clicks (Block Kit `block_actions`): verified, mapped to a person, run as their action.

Slack wants an answer within 3 s, so the action gets CHAT_ANSWER_WITHIN_S and then finishes in the
background. The page itself is edited by the normal delivery path (an ack notifies every paged
target); what only the clicker needs to know goes back through the click's response_url.
"""

import json
import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs

import aiohttp
import structlog
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from slack_sdk.signature import Clock as SlackClock
from slack_sdk.signature import SignatureVerifier

from engine.api import actions, keys, slackmodal
from engine.api.actions import act
from engine.api.body import read_body
from engine.api.middlewares import error
from engine.clock import Clock
from engine.errors import IncidentNotFound, IngestError, StoreError
from engine.incident import Incident, Status
from engine.notifiers.http import USER_AGENT
from engine.policy.channels import SlackChannel
from engine.policy.models import PolicySet
from engine.policy.targets import user_by_contact
from engine.secrets import resolve_secret

__all__ = ["SNOOZE_MS", "VERBS", "interactions", "parse_payload", "verify"]

log = structlog.get_logger(__name__)
SNOOZE_MS = 30 * 60_000
RESPONSE_TIMEOUT_S = 5.0
VERBS = {"incident_ack": "ack", "incident_resolve": "resolve", "incident_snooze": "snooze"}
_OUTCOME = {"ack": Status.ACKNOWLEDGED, "resolve": Status.RESOLVED, "snooze": Status.SNOOZED}


class _EngineClock(SlackClock):
    """The engine's clock for the replay window, so tests that move time move it too."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock

    def now(self) -> float:
        return self._clock.now_ms() / 1000


def verify(secret: str, body: bytes, headers: Mapping[str, str], clock: SlackClock | None = None) -> bool:
    """Slack's v0 signature over the raw body, within the SDK's 5-minute replay window."""
    verifier = SignatureVerifier(secret, clock or SlackClock())
    try:
        return verifier.is_valid(
            body, headers.get("X-Slack-Request-Timestamp"), headers.get("X-Slack-Signature")
        )
    except (ValueError, UnicodeDecodeError):  # a timestamp that is no integer, a body that is no UTF-8
        return False


class _Payload(BaseModel):
    model_config = ConfigDict(extra="ignore")


class SlackUser(_Payload):
    id: str = Field(min_length=1, max_length=64)


class SlackAction(_Payload):
    action_id: str = Field(max_length=255)
    value: str = Field(default="", max_length=2000)


class SlackMessage(_Payload):
    ts: str = ""


class BlockActions(_Payload):
    type: str
    user: SlackUser
    actions: list[SlackAction] = Field(min_length=1)
    response_url: str = ""
    message: SlackMessage | None = None
    trigger_id: str = Field(default="", max_length=255)  # opens a modal, for about 3 s


def parse_payload(body: bytes) -> BlockActions | dict[str, Any]:
    """The click from the form field `payload` (a submitted modal: its raw document);
    IngestError 400 naming what is wrong."""
    try:
        form = parse_qs(body.decode("utf-8"), strict_parsing=bool(body), max_num_fields=20)
    except (UnicodeDecodeError, ValueError) as exc:
        raise IngestError(f"body is not a URL-encoded form: {exc}", status=400) from None
    values = form.get("payload")
    if not values:
        raise IngestError("form field 'payload' is missing", status=400)
    try:
        doc = json.loads(values[0])
    except ValueError as exc:
        raise IngestError(f"payload is not valid JSON: {exc}", status=400) from None
    if not isinstance(doc, dict):
        raise IngestError("payload must be a JSON object", status=400)
    if doc.get("type") == "view_submission":
        return doc
    if doc.get("type") != "block_actions":
        raise IngestError(
            f"payload type {str(doc.get('type'))[:40]!r} is not supported: block_actions, view_submission",
            status=400,
        )
    try:
        return BlockActions.model_validate(doc)
    except ValidationError as exc:
        detail = [{"field": ".".join(str(p) for p in e["loc"]), "problem": e["msg"]} for e in exc.errors()]
        raise IngestError("invalid block_actions payload", detail, status=400) from None


class _Responder:
    """POSTs to the click's response_url, only where Slack's response URLs live."""

    def __init__(self, url: str, prefix: str, thread_ts: str) -> None:
        self._url = url if url.startswith(prefix) and prefix else ""
        self._thread_ts = thread_ts
        if url and not self._url:
            log.warning("slack_response_url_refused", prefix=prefix)

    async def ephemeral(self, text: str) -> None:
        await self._post({"response_type": "ephemeral", "replace_original": False, "text": text})

    async def in_thread(self, text: str) -> None:
        doc: dict[str, Any] = {"response_type": "in_channel", "replace_original": False, "text": text}
        if self._thread_ts:
            doc["thread_ts"] = self._thread_ts
        await self._post(doc)

    async def _post(self, doc: dict[str, Any]) -> None:
        if not self._url:
            return
        timeout = aiohttp.ClientTimeout(total=RESPONSE_TIMEOUT_S)
        try:
            # clicks are rare: a short-lived session keeps this module free of app lifecycle
            async with (
                aiohttp.ClientSession(timeout=timeout, headers={"User-Agent": USER_AGENT}) as session,
                session.post(self._url, json=doc, allow_redirects=False) as resp,
            ):
                if resp.status >= 300:
                    log.warning("slack_response_url_failed", status=resp.status)
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("slack_response_url_failed", error=f"{type(exc).__name__}: {exc}")


def _impossible(inc: Incident | None, verb: str, incident_id: str) -> str:
    """Why `verb` cannot be done on `inc` now ("" when it can)."""
    if inc is None:
        return f"There is no incident {incident_id}: nothing was changed."
    if inc.status is Status.RESOLVED:
        return f"Incident {incident_id} is already resolved (by {inc.resolved_by or 'Alertmanager'})."
    if verb == "ack" and inc.status is Status.ACKNOWLEDGED:
        return f"Incident {incident_id} is already acknowledged by {inc.acked_by or 'someone'}."
    return ""


async def _handle(
    app: web.Application, click: BlockActions, verb: str, user: str | None, reply: _Responder
) -> None:
    incident_id = click.actions[0].value
    if user is None:
        await reply.ephemeral(
            f"You are not on this policy: Slack user {click.user.id} is no user's slack contact,"
            " so nothing was changed."
        )
        return
    try:
        problem = _impossible(await app[keys.store].load(incident_id), verb, incident_id)
        if problem:
            await reply.ephemeral(problem)
            return
        snooze_ms = SNOOZE_MS if verb == "snooze" else 0
        inc = await act(app, incident_id, verb, user, snooze_ms=snooze_ms)
        if inc.status is not _OUTCOME[verb]:  # someone else changed it meanwhile
            await reply.ephemeral(f"Incident {incident_id} is {inc.status.value} now: nothing was changed.")
        elif verb == "snooze":
            await reply.in_thread(f":zzz: Snoozed for 30m by {user}")
        log.info("slack_action", incident=incident_id, verb=verb, by=user)
    except IncidentNotFound:
        await reply.ephemeral(f"There is no incident {incident_id}: nothing was changed.")
    except StoreError as exc:
        log.warning("slack_action_failed", incident=incident_id, verb=verb, error=str(exc))
        await reply.ephemeral("The engine cannot reach its store right now: nothing was changed, try again.")
    except Exception:  # a bug: logged, and the click still gets its 200
        log.exception("slack_action_crashed", incident=incident_id, verb=verb)


async def interactions(request: web.Request) -> web.Response:
    """POST /api/v1/slack/interactions: 404 without channels.slack, 503 without its signing secret."""
    app = request.app
    policies = app[keys.policies]()
    settings = policies.channels.slack
    if settings is None:
        return error(404, "Slack is not configured: the policies have no channels.slack")
    try:
        secret = resolve_secret(settings.signing_secret_env, settings.signing_secret_file, os.environ)
    except ValueError as exc:
        return error(503, f"Slack signing secret unavailable: {exc}")
    if secret is None:
        return error(503, "no Slack signing secret: set channels.slack.signing_secret_env or _file")
    body = await read_body(request)
    if not verify(secret, body, request.headers, _EngineClock(app[keys.processor].clock)):
        return error(401, "Slack signature missing, invalid or older than 5 minutes")
    click = parse_payload(body)
    if isinstance(click, dict):  # the status-update modal, submitted
        return await slackmodal.submitted(app, click, policies)
    if click.actions[0].action_id == "incident_update":
        return await _open_update(click, settings, policies)
    verb = VERBS.get(click.actions[0].action_id)
    if verb is None:
        return web.Response(status=200)  # not one of our buttons: nothing to do
    if not click.actions[0].value:
        raise IngestError("actions[0].value: the incident id is missing", status=400)
    thread_ts = click.message.ts if click.message else ""
    reply = _Responder(click.response_url, settings.response_url_prefix, thread_ts)
    user = user_by_contact(policies, "slack", click.user.id)
    await actions.within(_handle(app, click, verb, user, reply), f"slack {verb} {click.actions[0].value}")
    return web.Response(status=200)


async def _open_update(click: BlockActions, settings: SlackChannel, policies: PolicySet) -> web.Response:
    """ "Post update": the modal for a known user; anyone else is told, and nothing opens."""
    reply = _Responder(click.response_url, settings.response_url_prefix, "")
    if user_by_contact(policies, "slack", click.user.id) is None:
        await reply.ephemeral(f"You are not on this policy: Slack user {click.user.id} is no user's contact.")
    elif click.trigger_id and click.actions[0].value:
        await slackmodal.open_modal(settings, click.trigger_id, click.actions[0].value)
    return web.Response(status=200)
