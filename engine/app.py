"""create_app: wires the store, processor, loops and routes; tests inject what they replace."""

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from typing import Any

import aiohttp
import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.aiohttp import make_aiohttp_handler

from engine.api import keys
from engine.api.auth import make_auth
from engine.api.middlewares import WEBHOOK_COUNTER, errors
from engine.api.routes import setup_routes
from engine.clock import Clock, SystemClock
from engine.config import Settings
from engine.delivery.loop import Delivery, DeliveryConfig
from engine.events import Decision, Notify
from engine.metrics import Metrics
from engine.notifiers import Notifier, build_notifiers, secret_problems
from engine.policy.heartbeats import heartbeat_rules
from engine.policy.models import PolicySet
from engine.policy.ref import PolicyRef
from engine.processor import Processor
from engine.scheduler import Scheduler
from engine.store.base import Store
from engine.store.connect import open_store

log = structlog.get_logger(__name__)
http_session = web.AppKey("http_session", aiohttp.ClientSession)
notifier_set: web.AppKey[dict[str, Notifier]] = web.AppKey("notifiers")
Task = Callable[[], None]


class Wakeups:
    """A local commit wakes the loops that act on it at once, instead of at their next poll."""

    def __init__(self) -> None:
        self.timer_listeners: list[Callable[[int | None], None]] = []
        self.outbox_listeners: list[Task] = []

    def committed(self, d: Decision) -> None:
        if d.incident is not None:
            for poke in self.timer_listeners:
                poke(d.incident.timer_ms)
        if any(isinstance(e, Notify) for e in d.effects):
            self.outbox_written()

    def outbox_written(self) -> None:
        for wake in self.outbox_listeners:
            wake()


def create_app(
    settings: Settings,
    policies: PolicySet,
    *,
    clock: Clock | None = None,
    store: Store | None = None,
    notifiers: Mapping[str, Notifier] | None = None,
    registry: CollectorRegistry | None = None,
) -> web.Application:
    """With no `store`, one is opened from settings (the embedded redis-server unless redis_url);
    with no `notifiers`, they are built from the policies' channels."""
    app = web.Application(middlewares=[errors], client_max_size=settings.max_body_bytes)
    clock = clock or SystemClock()
    metrics = Metrics(registry or CollectorRegistry())
    ref = PolicyRef(policies)
    wakeups = Wakeups()
    app[keys.settings] = settings
    app[keys.metrics] = metrics
    app[WEBHOOK_COUNTER] = metrics.webhooks
    app[keys.auth] = make_auth(settings)
    app[keys.policies] = ref
    metrics.set_policies(
        {name: sev.ack_within for name, sev in policies.severities.items()},
        heartbeat_rules(policies),
        clock.now_ms() / 1000,
    )

    async def store_ctx(app: web.Application) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            opened: Store
            if store is not None:
                opened = store  # the caller's: closed by the caller
            else:
                opened = await stack.enter_async_context(
                    open_store(settings.redis_url, settings, metrics.observe_store)
                )
            app[keys.store] = opened
            app[keys.processor] = Processor(opened, ref, clock, metrics, wakeups.committed)
            yield

    async def http_ctx(app: web.Application) -> AsyncIterator[None]:
        async with aiohttp.ClientSession() as session:
            app[http_session] = session
            yield

    async def notifiers_ctx(app: web.Application) -> AsyncIterator[None]:
        if notifiers is not None:
            app[notifier_set] = dict(notifiers)
        else:
            for problem in secret_problems(ref().channels, os.environ):
                log.warning("channel_secret_missing", problem=problem)
            app[notifier_set] = build_notifiers(ref().channels, app[http_session], os.environ)
        yield

    async def delivery_ctx(app: web.Application) -> AsyncIterator[None]:
        consumer = f"{socket.gethostname()}-{os.getpid()}"
        config = _delivery_config(settings, consumer)
        channels: dict[str, Notifier] = app[notifier_set]
        delivery = Delivery(app[keys.store], channels, ref, clock, metrics, config)
        wakeups.outbox_listeners.append(delivery.wake.set)
        async with _running(delivery.run(), delivery.stop, settings.delivery_timeout_s + 1, "delivery"):
            yield

    async def scheduler_ctx(app: web.Application) -> AsyncIterator[None]:
        store = app[keys.store]
        scheduler = Scheduler(store, app[keys.processor], clock, metrics, settings.scheduler_max_sleep_s)
        scheduler.on_outbox = wakeups.outbox_written
        wakeups.timer_listeners.append(scheduler.poke)
        async with _running(scheduler.run(), scheduler.stop, settings.delivery_timeout_s + 1, "scheduler"):
            yield

    async def gauges_ctx(app: web.Application) -> AsyncIterator[None]:
        stopping = asyncio.Event()
        loop = _refresh_gauges(app[keys.store], metrics, clock, lambda: list(ref().severities), stopping)
        async with _running(loop, stopping.set, 6, "gauges"):
            yield

    # started in this order, stopped in the reverse: the loops stop before what they use closes
    for ctx in (store_ctx, http_ctx, notifiers_ctx, delivery_ctx, scheduler_ctx, gauges_ctx):
        app.cleanup_ctx.append(ctx)
    setup_routes(app)
    app.router.add_get("/metrics", make_aiohttp_handler(metrics.registry))
    return app


@contextlib.asynccontextmanager
async def _running(
    loop: Coroutine[Any, Any, None], stop: Task, grace_s: float, name: str
) -> AsyncIterator[None]:
    """Run a background loop; on exit, ask it to stop (a flag, not a cancel: a cancel landing
    inside redis-py can be swallowed) and cancel it only if it has not stopped within grace_s."""
    task = asyncio.create_task(loop, name=name)
    try:
        yield
    finally:
        stop()
        _, pending = await asyncio.wait([task], timeout=grace_s)
        for t in pending:
            t.cancel()
        await asyncio.gather(task, return_exceptions=True)


def _delivery_config(settings: Settings, consumer: str) -> DeliveryConfig:
    return DeliveryConfig(
        consumer=consumer,
        poll_s=settings.delivery_poll_s,
        claim_idle_s=settings.delivery_claim_idle_s,
        timeout_s=settings.delivery_timeout_s,
        backoff_s=settings.delivery_backoff_s,
        backoff_max_s=settings.delivery_backoff_max_s,
        max_attempts=settings.delivery_max_attempts,
        public_url=settings.public_url,
    )


async def _refresh_gauges(
    store: Store,
    metrics: Metrics,
    clock: Clock,
    severities: Callable[[], list[str]],
    stopping: asyncio.Event,
) -> None:
    """Gauges read from the store (open incidents, outbox, heartbeats), so every replica
    reports the same truth; every 5 s, off the scrape path (a scrape does no I/O)."""
    while not stopping.is_set():
        try:
            metrics.set_open_counts(await store.open_counts(), severities())
            pending, retry, oldest_ms = await store.outbox_stats(clock.now_ms())
            metrics.outbox_depth.labels("pending").set(pending)
            metrics.outbox_depth.labels("retry").set(retry)
            metrics.outbox_oldest_age.set(oldest_ms / 1000)
            for rule, seen_ms in (await store.heartbeats()).items():
                metrics.heartbeat_seen.labels(rule).set(seen_ms / 1000)
        except Exception as exc:  # a metrics refresh must never stop the engine
            log.debug("gauges_refresh_failed", error=str(exc))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await stopping.wait()
