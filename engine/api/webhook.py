"""POST /api/v1/alertmanager: payload v4 in, 200 only once the alerts are committed."""

import structlog
from aiohttp import web

from engine.api import keys
from engine.api.body import json_body
from engine.ingest.alertmanager import parse_payload

log = structlog.get_logger(__name__)


async def alertmanager(request: web.Request) -> web.Response:
    app = request.app
    metrics = app[keys.metrics]
    app[keys.auth].check(request)
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
