"""Telegram callback queries: the Acknowledge/Resolve buttons of engine/notifiers/telegram.py.

Telegram POSTs each Update here with the secret token given to setWebhook in the header
X-Telegram-Bot-Api-Secret-Token. Only callback queries matter. The person is the Telegram user
whose id is some policy user's `telegram:` contact (in a private chat, chat id = user id). The
HTTP answer is always quick: an action slower than CHAT_ANSWER_WITHIN_S finishes (and is answered to the
user through answerCallbackQuery) in the background, so Telegram does not resend the update.
"""

import hmac
import os
from typing import Any, cast

import aiohttp
import structlog
from aiohttp import web

from engine.api import actions, keys
from engine.api.actions import act
from engine.api.body import json_body
from engine.api.middlewares import error
from engine.errors import DeliveryError, IncidentNotFound, IngestError, StoreError
from engine.incident import Incident, Status
from engine.notifiers.telegram import call
from engine.policy.channels import TelegramChannel
from engine.policy.targets import user_by_contact
from engine.secrets import resolve_secret, secret_or_reason

log = structlog.get_logger(__name__)
VERIFY_HEADER = "X-Telegram-Bot-Api-Secret-Token"
ANSWER_TIMEOUT_S = 5.0
MAX_ANSWER_CHARS = 200  # answerCallbackQuery's text limit
_VERBS = {"ack": ("ack", "Acknowledged"), "resolve": ("resolve", "Resolved")}


async def updates(request: web.Request) -> web.Response:
    """POST /api/v1/telegram/updates. 404 when Telegram is not configured, 503 when its secret
    token cannot be read, 401 for a missing or wrong secret; otherwise 200 (400 for a body that is
    not a Telegram Update)."""
    app = request.app
    policies = app[keys.policies]()
    settings = cast(TelegramChannel | None, getattr(policies.channels, "telegram", None))
    if settings is None:
        return error(404, "telegram is not configured (no channels.telegram in the policies)")
    try:
        secret = resolve_secret(settings.secret_token_env, settings.secret_token_file, os.environ)
    except ValueError as exc:
        log.warning("telegram_secret_unavailable", error=str(exc))
        return error(503, f"telegram secret token unavailable: {exc}")
    if secret is None:
        return error(503, "telegram secret token not configured: set secret_token_env or secret_token_file")
    given = request.headers.get(VERIFY_HEADER, "")
    if not hmac.compare_digest(given.encode(), secret.encode()):
        return error(401, f"missing or wrong {VERIFY_HEADER}")
    update = await json_body(request, required=True)
    if not isinstance(update, dict):
        raise IngestError("body must be a JSON object (a Telegram Update)", status=400)
    query = update.get("callback_query")
    if query is None:
        return web.json_response({"status": "ignored"})  # messages and the like: not for the engine
    query_id, from_id, data = _parse_query(query)
    done = await actions.within(_handle(app, settings, query_id, from_id, data), f"telegram {data}")
    return web.json_response({"status": "ok" if done else "accepted"})


def _parse_query(query: Any) -> tuple[str, str, str]:
    """(callback query id, the sender's user id, callback data); 400 naming what is missing."""
    if not isinstance(query, dict):
        raise IngestError("callback_query: expected an object", status=400)
    query_id = query.get("id")
    if not isinstance(query_id, str) or not query_id:
        raise IngestError("callback_query.id: expected a non-empty string", status=400)
    sender = query.get("from")
    from_id = sender.get("id") if isinstance(sender, dict) else None
    if type(from_id) is not int:
        raise IngestError("callback_query.from.id: expected an integer", status=400)
    data = query.get("data", "")
    if not isinstance(data, str):
        raise IngestError("callback_query.data: expected a string", status=400)
    return query_id, str(from_id), data


async def _handle(
    app: web.Application, settings: TelegramChannel, query_id: str, from_id: str, data: str
) -> None:
    try:
        text, alert = await _decide(app, from_id, data)
    except StoreError as exc:
        log.warning("telegram_store_unavailable", error=str(exc))
        text, alert = "The engine cannot reach its store right now. Nothing was changed; try again.", True
    except Exception:  # a bug: the person still gets an answer instead of a spinner
        log.exception("telegram_callback_failed", data=data[:64])
        text, alert = "Something went wrong; the engine's log has the details.", True
    await _answer(settings, query_id, text, alert)


async def _decide(app: web.Application, from_id: str, data: str) -> tuple[str, bool]:
    """Act on the button if it can change anything; (what to tell the person, show as alert)."""
    verb, _, incident_id = data.partition(":")
    if verb not in _VERBS or not incident_id:
        return "This button is not one of the engine's.", True
    user = user_by_contact(app[keys.policies](), "telegram", from_id)
    if user is None:
        log.info("telegram_unknown_user", telegram_id=from_id, incident=incident_id[:64])
        return "You are not on this policy", True
    before = await app[keys.store].load(incident_id)
    if before is None:
        return f"There is no incident {incident_id}.", True
    if why := _moot(before, verb):
        return why, False
    try:
        after = await act(app, incident_id, _VERBS[verb][0], user)
    except IncidentNotFound:
        return f"There is no incident {incident_id}.", True
    if not _changed(before, after, verb, user):
        return _moot(after, verb) or f"Incident {incident_id} did not change.", False
    log.info("telegram_action", incident=incident_id, action=verb, by=user)
    return f"{_VERBS[verb][1]} incident {incident_id}", False


def _moot(inc: Incident, verb: str) -> str:
    """Why `verb` cannot change the incident as it stands ("" when it can)."""
    if inc.status is Status.RESOLVED:
        return f"Already resolved{f' by {inc.resolved_by}' if inc.resolved_by else ''}."
    if verb == "ack" and inc.status is Status.ACKNOWLEDGED:
        return f"Already acknowledged{f' by {inc.acked_by}' if inc.acked_by else ''}."
    return ""


def _changed(before: Incident, after: Incident, verb: str, by: str) -> bool:
    if verb == "ack":
        return (
            after.status is Status.ACKNOWLEDGED and after.acked_by == by and after.acked_ms != before.acked_ms
        )
    return after.status is Status.RESOLVED and after.resolved_by == by


async def _answer(settings: TelegramChannel, query_id: str, text: str, alert: bool) -> None:
    """answerCallbackQuery, on a short-lived session: clicks are rare, and an app cannot add a
    cleanup hook once it runs. Failures are logged: the action itself has already happened."""
    token, problem = secret_or_reason(
        settings.bot_token_env, settings.bot_token_file, os.environ, "bot token"
    )
    if token is None:
        log.warning("telegram_answer_failed", error=problem)
        return
    params = {"callback_query_id": query_id, "text": text[:MAX_ANSWER_CHARS], "show_alert": alert}
    try:
        async with aiohttp.ClientSession() as session:
            await call(session, settings.api_url, token, "answerCallbackQuery", params, ANSWER_TIMEOUT_S)
    except DeliveryError as exc:  # its message never holds the token
        log.warning("telegram_answer_failed", error=str(exc))
