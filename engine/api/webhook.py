"""POST /api/v1/alertmanager: payload v4 in, 200 only once the alerts are committed.

At most `max_inflight_webhooks` are worked on at once (counted before the body is read, so the
bodies held in memory are bounded too). One more waits for a slot, in order, at most
`webhook_queue_s` and with at most 4 x the cap waiting; past either it is shed with 503 and
Retry-After, which Alertmanager retries, rather than queued without bound. (Shed at once, 128
busy senders against a cap of 64 got 7,000 503s a second and a fifth of the throughput of 32.)
"""

import asyncio
from functools import partial

import orjson
import structlog
from aiohttp import web

from engine.api import keys
from engine.api.body import parse_json, read_body
from engine.api.middlewares import RETRY_AFTER_S, error
from engine.ingest.alertmanager import parse_body

log = structlog.get_logger(__name__)


class Inflight:
    def __init__(self, limit: int, wait_s: float = 0.0) -> None:
        self.limit = limit
        self.wait_s = wait_s
        self.count = 0  # worked on now
        self.waiting = 0
        self._free = asyncio.Semaphore(limit)

    async def take(self) -> bool:
        """A slot (True), or False when the wait is full or ran out: shed this one."""
        if not self._free.locked():  # free now: taken without waiting
            await self._free.acquire()
            self.count += 1
            return True
        if self.wait_s <= 0 or self.waiting >= 4 * self.limit:
            return False
        self.waiting += 1
        try:
            async with asyncio.timeout(self.wait_s):
                await self._free.acquire()
        except TimeoutError:
            return False
        finally:
            self.waiting -= 1
        self.count += 1
        return True

    def give(self) -> None:
        self.count -= 1
        self._free.release()


inflight = web.AppKey("inflight_webhooks", Inflight)


async def alertmanager(request: web.Request) -> web.Response:
    app = request.app
    app[keys.auth].check(request)
    slots = app[inflight]
    if not await slots.take():
        app[keys.metrics].webhooks_shed.inc()
        resp = error(503, "too many webhooks in flight, try again", {"in_flight": slots.count})
        resp.headers["Retry-After"] = str(RETRY_AFTER_S)
        return resp
    try:
        return await _ingest(request)
    finally:
        slots.give()


async def _ingest(request: web.Request) -> web.Response:
    app = request.app
    metrics = app[keys.metrics]
    parsed = parse_body(await read_body(request), partial(parse_json, required=True))
    alerts = parsed.alerts
    if parsed.firing:
        metrics.alerts_firing.inc(parsed.firing)
    if len(alerts) > parsed.firing:
        metrics.alerts_resolved.inc(len(alerts) - parsed.firing)
    result = await app[keys.processor].ingest(alerts)
    metrics.duplicates.inc(result.duplicates)
    log.info(  # one line per webhook; request_id comes from the middleware's context
        "webhook",
        receiver=parsed.receiver,
        alerts=len(alerts),
        incidents=len(result.incidents),
        opened=result.opened,
        duplicates=result.duplicates,
    )
    answer = {
        "status": "ok",
        "alerts": len(alerts),
        "incidents": result.incidents,
        "opened": result.opened,
        "duplicates": result.duplicates,
        "truncated_alerts": parsed.truncated_alerts,
    }
    return web.Response(body=orjson.dumps(answer), content_type="application/json")
