"""create_app: wires store, processor, scheduler, delivery and routes; tests inject what they replace."""

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator, Callable, Mapping

import aiohttp
import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.aiohttp import make_aiohttp_handler

from engine.api import keys
from engine.api.handlers import setup_routes
from engine.api.middlewares import WEBHOOK_COUNTER, Auth, errors
from engine.clock import Clock, SystemClock
from engine.config import Settings
from engine.delivery import Delivery, DeliveryConfig
from engine.events import Decision
from engine.metrics import Metrics
from engine.notifiers import Notifier, build_notifiers
from engine.policy.models import Channels, PolicySet
from engine.policy.ref import PolicyRef
from engine.processor import Processor
from engine.scheduler import Scheduler
from engine.secrets import resolve_secret
from engine.store.connect import open_store

log = structlog.get_logger(__name__)


def _secret(value: object, path: object) -> str | None:
    if path is not None:
        with open(str(path)) as f:
            return f.read().strip()
    if value is not None:
        return value.get_secret_value()  # type: ignore[attr-defined, no-any-return]
    return None


def make_auth(settings: Settings) -> Auth:
    token = _secret(settings.auth_token, settings.auth_token_file)
    password = _secret(settings.auth_basic_password, settings.auth_basic_password_file)
    basic = (settings.auth_basic_user, password or "") if settings.auth_basic_user else None
    return Auth(token, basic)


def secret_problems(channels: Channels, environ: Mapping[str, str]) -> list[str]:
    """Channel secrets that cannot be read now: said once at start, not only per failed page."""
    refs: list[tuple[str, str | None, str | None]] = []
    if channels.pagerduty:
        refs += [
            (f"pagerduty service {name!r}", s.routing_key_env, s.routing_key_file)
            for name, s in channels.pagerduty.services.items()
        ]
    if channels.webhook:
        refs += [
            (f"webhook {name!r}", e.secret_env, e.secret_file)
            for name, e in channels.webhook.endpoints.items()
        ]
    if channels.email:
        refs += [
            ("email username", channels.email.username_env, channels.email.username_file),
            ("email password", channels.email.password_env, channels.email.password_file),
        ]
    problems = []
    for what, env, file in refs:
        try:
            resolve_secret(env, file, environ)
        except ValueError as exc:
            problems.append(f"{what}: {exc}")
    return problems


def create_app(
    settings: Settings,
    policies: PolicySet,
    *,
    clock: Clock | None = None,
    notifiers: Mapping[str, Notifier] | None = None,
    registry: CollectorRegistry | None = None,
    redis_url: str | None = None,
) -> web.Application:
    """`redis_url` overrides settings (tests); with neither, the embedded redis-server is started."""
    app = web.Application(middlewares=[errors], client_max_size=settings.max_body_bytes)
    clock = clock or SystemClock()
    metrics = Metrics(registry or CollectorRegistry())
    ref = PolicyRef(policies)
    app[keys.settings] = settings
    app[keys.metrics] = metrics
    app[WEBHOOK_COUNTER] = metrics.webhooks
    app[keys.auth] = make_auth(settings)
    app[keys.policies] = ref

    async def store_ctx(app: web.Application) -> AsyncIterator[None]:
        async with open_store(redis_url or settings.redis_url, settings) as store:
            app[keys.store] = store
            app[keys.processor] = Processor(store, app[keys.policies], clock, metrics, on_commit)
            yield

    scheduler_box: list[Scheduler] = []
    delivery_box: list[Delivery] = []

    def on_commit(d: Decision) -> None:
        if scheduler_box and d.incident is not None:
            scheduler_box[0].poke(d.incident.timer_ms)
        if delivery_box:
            delivery_box[0].wake.set()

    async def workers_ctx(app: web.Application) -> AsyncIterator[None]:
        store = app[keys.store]
        async with aiohttp.ClientSession() as session:
            if notifiers is None:
                for problem in secret_problems(ref().channels, os.environ):
                    log.warning("channel_secret_missing", problem=problem)
            chans = (
                notifiers if notifiers is not None else build_notifiers(ref().channels, session, os.environ)
            )
            consumer = f"{socket.gethostname()}-{os.getpid()}"
            delivery = Delivery(
                store, chans, app[keys.policies], clock, metrics, _delivery_config(settings, consumer)
            )
            scheduler = Scheduler(store, app[keys.processor], clock, metrics, settings.scheduler_max_sleep_s)
            scheduler.on_outbox = delivery.wake.set
            scheduler_box.append(scheduler)
            delivery_box.append(delivery)
            stopping = asyncio.Event()
            tasks = [
                asyncio.create_task(scheduler.run(), name="scheduler"),
                asyncio.create_task(delivery.run(), name="delivery"),
                asyncio.create_task(
                    _refresh_counts(app, lambda: list(ref().severities), stopping), name="counts"
                ),
            ]
            yield
            scheduler.stop()
            delivery.stop()
            stopping.set()
            _, pending = await asyncio.wait(tasks, timeout=settings.delivery_timeout_s + 1)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    app.cleanup_ctx.append(store_ctx)
    app.cleanup_ctx.append(workers_ctx)  # appended last: stops first
    setup_routes(app)
    app.router.add_get("/metrics", make_aiohttp_handler(metrics.registry))
    return app


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


async def _refresh_counts(
    app: web.Application, severities: Callable[[], list[str]], stopping: asyncio.Event
) -> None:
    """The open-incident gauge comes from the store, so every replica reports the same truth."""
    while not stopping.is_set():
        try:
            app[keys.metrics].set_open_counts(await app[keys.store].open_counts(), severities())
        except Exception as exc:  # a metrics refresh must never stop the engine
            log.debug("counts_refresh_failed", error=str(exc))
        # a stop flag, not cancellation: a cancel landing inside redis-py can be swallowed
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await stopping.wait()
