"""create_app: wires the store, processor, loops and routes; tests inject what they replace."""

import asyncio
import contextlib
import os
import signal
import socket
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from typing import Any, Literal

import aiohttp
import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.aiohttp import make_aiohttp_handler
from prometheus_client.openmetrics.exposition import generate_latest

from engine.api import actions, keys, webhook
from engine.api.auth import make_auth
from engine.api.middlewares import WEBHOOK_COUNTER, errors
from engine.api.routes import setup_routes
from engine.archive import Retention
from engine.clock import Clock, SystemClock
from engine.config import Settings
from engine.delivery.links import LinkSecret
from engine.delivery.loop import Delivery, DeliveryConfig
from engine.events import Decision, Notify
from engine.exposition import Merged
from engine.metrics import DISPATCH_QUEUE, Metrics
from engine.notifiers import Notifier, build_notifiers, close_notifiers, secret_problems
from engine.policy.channels import CHANNEL_KINDS
from engine.policy.models import PolicySet
from engine.policy.ref import PolicyRef
from engine.processor import Processor
from engine.reload import Reloader, record_policies
from engine.scheduler import Scheduler
from engine.store import keys as keys_
from engine.store.base import Store
from engine.store.connect import open_stores
from engine.storewatch import StoreWatch
from engine.web import setup_web
from engine.worker import Control, WorkerProcess, worker_argv

log = structlog.get_logger(__name__)
CHANNEL_CONNECTIONS = 100  # per channel kind: aiohttp's default, once for each


class ChannelSessions:
    """An HTTP session per channel kind, each with its own connection pool: with one pool for all,
    a slow Slack held every connection while PagerDuty pages waited for one (bench e2e with
    Slack answering in 2 s: page p99 8 s)."""

    def __init__(self) -> None:
        self._sessions: dict[str, aiohttp.ClientSession] = {}

    def of(self, kind: str) -> aiohttp.ClientSession:
        session = self._sessions.get(kind)
        if session is None:
            connector = aiohttp.TCPConnector(limit=CHANNEL_CONNECTIONS)
            session = self._sessions[kind] = aiohttp.ClientSession(connector=connector)
        return session

    async def close(self) -> None:
        for session in self._sessions.values():
            await session.close()


channel_sessions = web.AppKey("channel_sessions", ChannelSessions)
notifier_set: web.AppKey[dict[str, Notifier]] = web.AppKey("notifiers")
delivery_key = web.AppKey("delivery", Delivery)
scheduler_key = web.AppKey("scheduler", Scheduler)
Task = Callable[[], None]
worker_key = web.AppKey("worker", WorkerProcess)
# Redis connections per role, each its own pool: ingest and the API, due timers, delivery
POOLS = {"api": 64, "timers": 16, "delivery": 64, "housekeeping": 4}
# what one process runs: everything, or (serve's default) the HTTP side and the worker apart
Role = Literal["all", "http", "worker"]


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
    role: Role = "all",
    control_fd: int | None = None,
) -> web.Application:
    """With no `store`, one is opened from settings (the embedded redis-server unless redis_url);
    with no `notifiers`, they are built from the policies' channels (and rebuilt on reload).
    role "http" starts a worker process for the rest (engine.worker); "worker" is that process,
    told of local commits over control_fd."""
    app = web.Application(middlewares=[errors], client_max_size=settings.max_body_bytes)
    wiring = Wiring(
        settings, policies, clock or SystemClock(), registry or CollectorRegistry(), store, notifiers,
        role, control_fd,
    )  # fmt: skip
    app[keys.settings] = settings
    app[keys.metrics] = wiring.metrics
    app[WEBHOOK_COUNTER] = wiring.metrics.webhooks
    app[keys.auth] = make_auth(settings)
    app[webhook.inflight] = webhook.Inflight(settings.max_inflight_webhooks, settings.webhook_queue_s)
    app[keys.policies] = wiring.ref
    # started in this order, stopped in the reverse: the loops stop before what they use closes
    for ctx in wiring.contexts():
        app.cleanup_ctx.append(ctx)
    setup_routes(app)
    setup_web(app)  # the console at /
    app.router.add_get("/metrics", _metrics_handler(wiring.metrics.registry))
    return app


def _metrics_handler(registry: CollectorRegistry) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def metrics(request: web.Request) -> web.Response:
        worker = request.app.get(worker_key)
        text = await worker.scrape() if worker is not None else None
        response = await make_aiohttp_handler(Merged(registry, text))(request)
        assert isinstance(response, web.Response)
        return response

    return metrics


class Wiring:
    """What create_app shares between its resources; one cleanup context per resource."""

    def __init__(
        self,
        settings: Settings,
        policies: PolicySet,
        clock: Clock,
        registry: CollectorRegistry,
        store: Store | None,
        notifiers: Mapping[str, Notifier] | None,
        role: Role = "all",
        control_fd: int | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.metrics = Metrics(registry)
        self.ref = PolicyRef(policies)
        self.wakeups = Wakeups()
        self.given_store = store
        self.given_notifiers = notifiers
        self.retired_notifiers: list[Notifier] = []  # replaced by a reload; their idle sessions expire
        self.stores: dict[str, Store] = {}  # by role (POOLS), once the store opens
        self.redis_url = ""  # where the stores reach Redis, once open (the worker's too)
        self.role = role
        self.control_fd = control_fd
        record_policies(self.metrics, policies, clock.now_ms())

    def contexts(self) -> list[Callable[[web.Application], AsyncIterator[None]]]:
        if self.role == "http":
            return [self.store, self.reloader, self.worker, self.gauges]
        loops = [self.store, self.http, self.notifiers, self.delivery, self.reloader, self.scheduler]
        if self.role == "worker":
            return [*loops, self.retention, self.control]
        return [*loops, self.gauges, self.retention]

    async def store(self, app: web.Application) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            opened = self.given_store  # the caller's, closed by the caller
            if opened is None:
                url, observe = self.settings.redis_url, self.metrics.observe_store
                roles = await stack.enter_async_context(open_stores(url, self.settings, observe, POOLS))
                self.stores.update(roles)
                self.redis_url = roles.url
                opened = roles["api"]
            else:
                self.stores.update(dict.fromkeys(POOLS, opened))
            app[keys.store] = opened
            app[keys.link_secret] = LinkSecret(self.settings, opened)
            app[keys.store_watch] = watch = StoreWatch(opened, self.metrics)
            await watch.check()  # learn (or write) the store's epoch before anything else
            app[keys.processor] = Processor(
                opened, self.ref, self.clock, self.metrics, self.wakeups.committed
            )
            yield
            await actions.drain()  # chat clicks answered but still acting need the store

    async def http(self, app: web.Application) -> AsyncIterator[None]:
        sessions = app[channel_sessions] = ChannelSessions()
        try:
            yield
        finally:
            await sessions.close()

    def built_notifiers(self, policies: PolicySet, app: web.Application) -> dict[str, Notifier]:
        if self.given_notifiers is not None:
            return dict(self.given_notifiers)
        for problem in secret_problems(policies.channels, os.environ):
            log.warning("channel_secret_missing", problem=problem)
        return build_notifiers(
            policies.channels, app[channel_sessions].of, os.environ, self.settings.delivery_timeout_s
        )

    async def notifiers(self, app: web.Application) -> AsyncIterator[None]:
        app[notifier_set] = self.built_notifiers(self.ref(), app)
        yield
        if self.given_notifiers is None:  # the caller's are the caller's to close
            every = [*app[notifier_set].values(), *self.retired_notifiers]
            if delivery_key in app:  # a reload's, if any
                every += app[delivery_key].notifiers.values()
            await close_notifiers({id(n): n for n in every}.values())

    async def delivery(self, app: web.Application) -> AsyncIterator[None]:
        config = _delivery_config(self.settings, f"{socket.gethostname()}-{os.getpid()}")
        channels: dict[str, Notifier] = app[notifier_set]
        delivery = Delivery(self.stores["delivery"], channels, self.ref, self.clock, self.metrics, config)
        delivery.link_secret = app[keys.link_secret]
        app[delivery_key] = delivery
        self.wakeups.outbox_listeners.append(delivery.wake.set)
        async with _running(delivery.run(), delivery.stop, self.settings.delivery_timeout_s + 1, "delivery"):
            yield

    async def reloader(self, app: web.Application) -> AsyncIterator[None]:
        def swapped(old: PolicySet, new: PolicySet) -> None:
            if worker_key in app:
                app[worker_key].reload()  # the worker reads the same files
            if delivery_key in app and self.given_notifiers is None and old.channels != new.channels:
                delivery = app[delivery_key]
                self.retired_notifiers.extend(delivery.notifiers.values())  # closed at shutdown
                delivery.notifiers = self.built_notifiers(new, app)

        reloader = Reloader(self.settings.policies, self.ref, self.metrics, self.clock, swapped)
        app[keys.reloader] = reloader
        async with _on_sighup(lambda: reloader.reload("SIGHUP")):
            yield

    async def scheduler(self, app: web.Application) -> AsyncIterator[None]:
        sleep_s = self.settings.scheduler_max_sleep_s
        ingest = app[keys.processor]
        processor = Processor(
            self.stores["timers"], self.ref, self.clock, self.metrics, self.wakeups.committed
        )
        scheduler = Scheduler(self.stores["timers"], processor, self.clock, self.metrics, sleep_s)
        if self.role == "all":  # due timers go before new ingest decisions in this process
            scheduler.hold_ingest = ingest.timers_first
        scheduler.on_outbox = self.wakeups.outbox_written
        self.wakeups.timer_listeners.append(scheduler.poke)
        app[scheduler_key] = scheduler
        async with _running(
            scheduler.run(), scheduler.stop, self.settings.delivery_timeout_s + 1, "scheduler"
        ):
            yield

    async def worker(self, app: web.Application) -> AsyncIterator[None]:
        """The worker process (timers, delivery, retention), told of each local commit."""
        argv = worker_argv(str(self.settings.policies), self.redis_url)
        worker = WorkerProcess(argv, self.settings.delivery_timeout_s + 5, self.metrics.worker_restarts.inc)
        await worker.start()
        app[worker_key] = worker
        self.wakeups.timer_listeners.append(worker.wake_timer)
        self.wakeups.outbox_listeners.append(worker.wake_outbox)
        try:
            yield
        finally:
            await worker.stop()

    async def control(self, app: web.Application) -> AsyncIterator[None]:
        """The worker's side of the line to `serve`: wakes, reloads, metrics; stops if serve is gone."""
        if self.control_fd is None:
            yield  # a worker run on its own: it finds work by polling, as any replica does
            return
        scheduler, delivery = app[scheduler_key], app[delivery_key]
        reloads: set[asyncio.Task[object]] = set()

        def reload() -> None:
            task = asyncio.create_task(app[keys.reloader].reload("serve reloaded"))
            reloads.add(task)
            task.add_done_callback(reloads.discard)

        control = Control(
            self.control_fd,
            outbox=delivery.wake.set,
            timer=scheduler.poke,
            reload=reload,
            metrics=lambda: generate_latest(self.metrics.registry),  # type: ignore[no-untyped-call]
            parent_gone=lambda: os.kill(os.getpid(), signal.SIGTERM),
        )
        reader = await control.open()
        task = asyncio.create_task(control.serve(reader), name="control")
        control.ready()
        try:
            yield
        finally:
            task.cancel()
            await asyncio.gather(task, *reloads, return_exceptions=True)

    async def retention(self, app: web.Application) -> AsyncIterator[None]:
        """Resolved incidents leave Redis after the retention (archived first with archive_dir)."""
        owner = f"{socket.gethostname()}-{os.getpid()}"
        task = Retention.for_store(self.stores["housekeeping"], self.clock, self.settings.archive_dir, owner)
        async with _running(task.run(), task.stop, 10, "retention"):
            yield

    async def gauges(self, app: web.Application) -> AsyncIterator[None]:
        stopping = asyncio.Event()
        severities = lambda: list(self.ref().severities)  # noqa: E731 - read at each refresh
        loop = _refresh_gauges(
            app[keys.store], self.metrics, self.clock, severities, stopping, app[keys.store_watch]
        )
        async with _running(loop, stopping.set, 6, "gauges"):
            yield


@contextlib.asynccontextmanager
async def _on_sighup(handler: Callable[[], Coroutine[Any, Any, object]]) -> AsyncIterator[None]:
    """Run `handler` on each SIGHUP. Only the main thread can receive signals: an app run on
    another thread (the in-process test harness) reloads through POST /-/reload alone."""
    loop = asyncio.get_running_loop()
    pending: set[asyncio.Task[object]] = set()
    main_thread = threading.current_thread() is threading.main_thread()

    def fire() -> None:
        task = asyncio.create_task(handler())
        pending.add(task)
        task.add_done_callback(pending.discard)

    if main_thread:
        loop.add_signal_handler(signal.SIGHUP, fire)
    try:
        yield
    finally:
        if main_thread:
            loop.remove_signal_handler(signal.SIGHUP)
        await asyncio.gather(*pending, return_exceptions=True)


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
        breaker_failures=settings.breaker_failures,
        breaker_open_s=settings.breaker_open_s,
    )


async def _refresh_gauges(
    store: Store,
    metrics: Metrics,
    clock: Clock,
    severities: Callable[[], list[str]],
    stopping: asyncio.Event,
    watch: StoreWatch,
) -> None:
    """Gauges read from the store (open incidents, outbox, heartbeats), so every replica
    reports the same truth; every 5 s, off the scrape path (a scrape does no I/O)."""
    while not stopping.is_set():
        try:
            await watch.check()
            metrics.set_open_counts(await store.open_counts(), severities())
            for channel in [keys_.DISPATCH, *(kind.name for kind in CHANNEL_KINDS)]:
                pending, retry, oldest_ms = await store.outbox_stats(clock.now_ms(), channel)
                label = channel or DISPATCH_QUEUE
                metrics.outbox_depth.labels(label, "pending").set(pending)
                metrics.outbox_depth.labels(label, "retry").set(retry)
                metrics.outbox_oldest_age.labels(label).set(oldest_ms / 1000)
            for rule, seen_ms in (await store.heartbeats()).items():
                metrics.heartbeat_seen.labels(rule).set(seen_ms / 1000)
        except Exception as exc:  # a metrics refresh must never stop the engine
            log.debug("gauges_refresh_failed", error=str(exc))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await stopping.wait()
