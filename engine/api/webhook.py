"""POST /api/v1/alertmanager: payload v4 in, 200 only once the alerts are committed.

At most `max_inflight_webhooks` are worked on at once (counted before the body is read, so the
bodies held in memory are bounded too); one more is shed at once with 503 and Retry-After,
which Alertmanager retries, rather than queued without bound behind the others.
"""

import structlog
from aiohttp import web

from engine.api import keys
from engine.api.body import json_body
from engine.api.middlewares import RETRY_AFTER_S, error
from engine.ingest.alertmanager import parse_payload

log = structlog.get_logger(__name__)


class Inflight:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0


inflight = web.AppKey("inflight_webhooks", Inflight)


async def alertmanager(request: web.Request) -> web.Response:
    app = request.app
    app[keys.auth].check(request)
    slots = app[inflight]
    if slots.count >= slots.limit:
        app[keys.metrics].webhooks_shed.inc()
        resp = error(503, "too many webhooks in flight, try again", {"in_flight": slots.count})
        resp.headers["Retry-After"] = str(RETRY_AFTER_S)
        return resp
    slots.count += 1
    try:
        return await _ingest(request)
    finally:
        slots.count -= 1


async def _ingest(request: web.Request) -> web.Response:
    app = request.app
    metrics = app[keys.metrics]
    raw = await json_body(request, required=True)
    payload, alerts = parse_payload(raw)
    for a in alerts:
        metrics.alerts.labels(a.status.value).inc()
    result = await app[keys.processor].ingest(alerts)
    metrics.duplicates.inc(result.duplicates)
    log.info(  # one line per webhook; request_id comes from the middleware's context
        "webhook",
        receiver=payload.receiver,
        alerts=len(alerts),
        incidents=len(result.incidents),
        opened=result.opened,
        duplicates=result.duplicates,
    )
    return web.json_response(
        {
            "status": "ok",
            "alerts": len(alerts),
            "incidents": result.incidents,
            "opened": result.opened,
            "duplicates": result.duplicates,
            "truncated_alerts": payload.truncated_alerts,
        }
    )
