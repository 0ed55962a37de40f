"""Request context, and the one place errors become HTTP answers."""

import itertools
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web
from prometheus_client import Counter

from engine.errors import ClientGone, EngineError, IncidentNotFound, IngestError, StoreError

log = structlog.get_logger(__name__)
WEBHOOK_PATH = "/api/v1/alertmanager"
RETRY_AFTER_S = 5  # on a 503: the store is unreachable or saturated for now
WEBHOOK_COUNTER = web.AppKey("webhook_counter", Counter)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


_ids = itertools.count()
_ID_PREFIX = secrets.token_hex(3)  # this process's; with a counter, unique without a syscall each


def _request_id() -> str:
    return f"{_ID_PREFIX}{next(_ids) & 0xFFFFFF:06x}"


def error(status: int, message: str, detail: Any = None) -> web.Response:
    return web.json_response({"error": message, "detail": detail}, status=status)


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id=request.headers.get("X-Request-Id") or _request_id())
    resp = await _respond(request, handler)
    if request.path == WEBHOOK_PATH:  # counted here, where every outcome has its final status
        request.app[WEBHOOK_COUNTER].labels(str(resp.status)).inc()
    return resp


async def _respond(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except IngestError as exc:
        return error(exc.status, str(exc), exc.detail)
    except ClientGone as exc:  # once, quietly: a disconnect mid-body is the client's business
        log.debug("client_disconnected", path=request.path, error=str(exc))
        return error(400, "client disconnected before the body was read")
    except IncidentNotFound as exc:
        return error(404, f"no incident {exc}")
    except StoreError as exc:
        log.warning("store_unavailable", path=request.path, error=str(exc))
        resp = error(503, "store unavailable, try again", str(exc))
        resp.headers["Retry-After"] = str(RETRY_AFTER_S)  # clients that honour it back off
        return resp
    except EngineError as exc:
        return error(400, str(exc))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        resp = error(exc.status, exc.text or exc.reason if exc.status == 413 else exc.reason)
        for header in ("WWW-Authenticate", "Retry-After"):
            if header in exc.headers:
                resp.headers[header] = exc.headers[header]
        return resp
    except Exception:  # a bug: logged once with its traceback, answered in the API's error shape
        log.exception("request_failed", path=request.path)
        return error(500, "internal error; the engine's log has the details")
