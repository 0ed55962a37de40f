"""The engine in process for the fuzz tests: create_app on a background event loop with real
notifiers (PagerDuty and webhook sinks, an aiosmtpd server), so Hypothesis can drive it with
plain blocking HTTP calls, one example after another."""

import asyncio
import http.client
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import rich.style  # noqa: F401 - structlog renders tracebacks with rich, whose import draws from

# the global `random`: done here, before Hypothesis starts drawing (it checks nobody else does)
from aiohttp import web
from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Sink

from engine.api.body import SERVER_ARGS
from engine.app import create_app
from engine.config import Settings
from engine.notifiers import close_notifiers
from engine.notifiers.base import Notifier
from engine.notifiers.email import EmailNotifier
from engine.notifiers.pagerduty import PagerDutyNotifier
from engine.notifiers.webhook import WebhookNotifier
from engine.policy.models import PolicySet
from tests.e2e.harness import free_port
from tests.sinks import PagerDutySink, WebhookSink

TOKEN = "fuzz-token"
ROUTING_KEY = "0123456789abcdef0123456789abcdef"
AUDIT_SECRET = "fuzz-audit-secret"
POLICIES = PolicySet.model_validate(
    {
        "severities": {"P0": {"description": "outage"}, "P3": {}},
        "rules": [{"name": "crit", "matchers": ['severity=~"crit.*"'], "severity": "P0", "policy": "all"}],
        "default": {"severity": "P3", "policy": "all"},
        "escalation_policies": {
            "all": {
                "levels": [{"after": "0s", "notify": ["pagerduty:platform", "webhook:audit", "user:sre"]}]
            }
        },
        "users": {"sre": {"email": "sre@example.com"}},
        "channels": {
            "pagerduty": {"services": {"platform": {"routing_key_env": "PD"}}},
            "webhook": {"endpoints": {"audit": {"url": "http://unused"}}},
        },
    }
)


@dataclass
class Reply:
    status: int
    content_type: str
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class LiveEngine:
    """create_app on its own loop and thread; sinks for every channel it pages."""

    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.stopping: asyncio.Event | None = None
        self.error: BaseException | None = None
        self.smtp = Controller(Sink(), hostname="127.0.0.1", port=free_port())
        self.pd = PagerDutySink()
        self.hook = WebhookSink(AUDIT_SECRET)

    def __enter__(self) -> "LiveEngine":
        self.smtp.start()
        self.thread = threading.Thread(target=self._run, name="fuzz-engine", daemon=True)
        self.thread.start()
        if not self.ready.wait(15) or self.error is not None:
            raise RuntimeError(f"engine did not start: {self.error!r}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.stopping is not None:
            self.loop.call_soon_threadsafe(self.stopping.set)
        self.thread.join(30)
        self.smtp.stop()

    def _run(self) -> None:
        try:
            self.loop.run_until_complete(self._serve())
        except BaseException as exc:  # reported to the test through __enter__
            self.error = exc
            self.ready.set()
        finally:
            self.loop.close()

    async def _serve(self) -> None:
        self.stopping = asyncio.Event()
        async with self.pd, self.hook, aiohttp.ClientSession() as session:
            notifiers: dict[str, Notifier] = {
                "pagerduty": PagerDutyNotifier(session, self.pd.url, {"platform": ROUTING_KEY}),
                "webhook": WebhookNotifier(session, {"audit": (self.hook.url, AUDIT_SECRET)}),
                "email": EmailNotifier(
                    "127.0.0.1",
                    self.smtp.port,
                    "engine@example.com",
                    starttls=False,
                    tls=False,
                    username=None,
                    password=None,
                ),
            }
            settings = Settings(redis_url=self.redis_url, auth_token=TOKEN, delivery_poll_s=0.2)
            runner = web.AppRunner(create_app(settings, POLICIES, notifiers=notifiers), **SERVER_ARGS)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", self.port).start()
            self.ready.set()
            await self.stopping.wait()
            await runner.cleanup()
            await close_notifiers(notifiers.values())  # given to the app: ours to close

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> Reply:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            sent = {"Authorization": f"Bearer {TOKEN}", **(headers or {})}
            conn.request(method, path, body=body, headers=sent)
            resp = conn.getresponse()
            return Reply(resp.status, resp.getheader("Content-Type", ""), resp.read())
        finally:
            conn.close()

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        """Sum of the samples of `name` whose labels include `labels`."""
        total = 0.0
        for line in self.request("GET", "/metrics").body.decode().splitlines():
            if not line.startswith(name + "{") and not line.startswith(name + " "):
                continue
            if all(f'{k}="{v}"' in line for k, v in (labels or {}).items()):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def settle(self, timeout_s: float = 30) -> None:
        """Wait until delivery has gone quiet: no new notification outcome for a second."""
        last, since = -1.0, time.monotonic()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            now = self.metric("escalation_notifications_total")
            if now != last:
                last, since = now, time.monotonic()
            elif time.monotonic() - since > 1.0:
                return
            time.sleep(0.1)


def incidents(engine: LiveEngine) -> Iterator[dict[str, Any]]:
    listed = engine.request("GET", "/api/v1/incidents?limit=1000")
    assert listed.status == 200, listed.body[:300]
    yield from listed.json()["incidents"]
