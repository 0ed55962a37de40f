"""The web console in a real browser (Debian's headless Chromium through Selenium): log in,
acknowledge the incident a webhook opened, post a status update, open an incident by hand; the
page and the API must agree. Screenshots go to test-output/console/ (and, with
WRITE_DOCS_SCREENSHOTS=1, the README's two to docs/).

The engine runs in process (create_app + setup_web) on its own thread and event loop, on a
loopback port, so the blocking WebDriver calls never stall it. Its clock can be shifted back to
seed thirty days of history for the reports."""

import asyncio
import json
import os
import random
import shutil
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from engine.api.body import SERVER_ARGS
from engine.app import create_app
from engine.config import Settings
from engine.delivery import ratelimit
from engine.notifiers import PagerDutyNotifier
from engine.notifiers.base import Notifier
from engine.notifiers.slack import SlackNotifier
from engine.policy.channels import Channels
from engine.policy.models import EscalationPolicy
from engine.web import setup_web
from tests.e2e.harness import free_port
from tests.integration.test_console import POLICIES, ROUTING_KEY, TOKEN, alert_body
from tests.sinks import PagerDutySink
from tests.slack_sink import TOKEN as SLACK_TOKEN
from tests.slack_sink import SlackSink

# the console's policies, with the incident channel on Slack too: updates are seen there
WITH_SLACK = POLICIES.model_copy(
    update={
        "escalation_policies": {
            "page": EscalationPolicy.model_validate(
                {
                    "levels": [
                        {"after": "0s", "notify": ["pagerduty:platform", "slack:#incidents"]},
                        {"after": "15m", "notify": ["pagerduty:platform"]},
                    ]
                }
            )
        },
        "channels": Channels.model_validate(
            {
                "pagerduty": {"services": {"platform": {"routing_key_env": "PD_KEY"}}},
                "slack": {"token_env": "SLACK_TOKEN"},
            }
        ),
    }
)

pytestmark = [pytest.mark.e2e, pytest.mark.redis]
ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "test-output" / "console"
DOCS = ROOT / "docs"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
DAY_S = 86_400


class ShiftedClock:
    """The system clock moved by `offset_ms` (set from the test thread to seed the past)."""

    def __init__(self) -> None:
        self.offset_ms = 0

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000 + self.offset_ms


class LiveEngine:
    """create_app with the console, on its own loop and thread, paging a PagerDuty sink."""

    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.clock = ShiftedClock()
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.stopping: asyncio.Event | None = None
        self.error: BaseException | None = None
        self.pd = PagerDutySink()
        self.slack = SlackSink()

    def __enter__(self) -> "LiveEngine":
        self.thread = threading.Thread(target=self._run, name="console-engine", daemon=True)
        self.thread.start()
        if not self.ready.wait(20) or self.error is not None:
            raise RuntimeError(f"engine did not start: {self.error!r}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.stopping is not None:
            self.loop.call_soon_threadsafe(self.stopping.set)
        self.thread.join(30)

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
        async with self.pd, self.slack, aiohttp.ClientSession() as session:
            notifiers: dict[str, Notifier] = {
                "pagerduty": PagerDutyNotifier(session, self.pd.url, {"platform": ROUTING_KEY}),
                "slack": SlackNotifier(session, SLACK_TOKEN, self.slack.url),
            }
            settings = Settings(redis_url=self.redis_url, auth_token=TOKEN, delivery_poll_s=0.2)
            app = create_app(settings, WITH_SLACK, clock=self.clock, notifiers=notifiers)
            setup_web(app)  # a no-op once create_app calls it
            runner = web.AppRunner(app, **SERVER_ARGS)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", self.port).start()
            self.ready.set()
            await self.stopping.wait()
            await runner.cleanup()

    def api(self, method: str, path: str, body: object = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(  # noqa: S310 - a loopback URL the test built
            self.url + path,
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310
            return json.loads(resp.read())

    def alert(self, **labels: str) -> str:
        incident_id: str = self.api("POST", "/api/v1/alertmanager", alert_body(**labels))["incidents"][0]
        return incident_id

    def seed_history(self) -> None:
        """Thirty days of incidents, acknowledged and resolved after plausible delays."""
        rng = random.Random(7)
        services = [("checkout", "HighErrorRate"), ("search", "LatencyHigh"), ("db", "ReplicationLag")]
        severities = [("critical", 2, 7), ("warning", 5, 45), ("info", 10, 120)]  # ack after min..max m
        for n in range(28):
            day = rng.uniform(0.2, 29.5)
            service, alertname = rng.choice(services)
            sev, lo, hi = rng.choice(severities)
            self.clock.offset_ms = -int(day * DAY_S * 1000)
            incident_id = self.alert(
                alertname=alertname,
                service=service,
                severity=sev,
                instance=f"{service}-{n}:8080",
                summary=f"{alertname} on {service}",
            )
            self.clock.offset_ms += int(rng.uniform(lo, hi) * 60_000)
            self.api("POST", f"/api/v1/incidents/{incident_id}/ack", {"by": rng.choice(["alice", "bob"])})
            self.clock.offset_ms += int(rng.uniform(10, 240) * 60_000)
            self.api("POST", f"/api/v1/incidents/{incident_id}/resolve", {"by": "alice"})
        self.clock.offset_ms = 0


@pytest.fixture
def live(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[LiveEngine]:
    # the seeded month of history resolves dozens of incidents on #incidents at once: Slack's
    # real one-message-a-second limit would hold today's update behind them for a minute
    monkeypatch.setitem(ratelimit.RATES, "slack", (1000.0, 1000.0))
    with LiveEngine(redis_url) as engine:
        yield engine


@pytest.fixture
def browser() -> Iterator[Any]:
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        pytest.skip(f"needs Debian's chromium and chromium-driver ({CHROMIUM}, {CHROMEDRIVER}): make browser")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,900",
        "--force-device-scale-factor=1",
        "--lang=en-US",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()


def shot(driver: Any, name: str, docs: str | None = None) -> None:
    """A full-page screenshot to test-output/console/NAME.png (and docs/DOCS when asked)."""
    height = int(driver.execute_script("return document.documentElement.scrollHeight"))
    metrics = {"width": 1280, "height": max(700, min(height, 3000)), "deviceScaleFactor": 1, "mobile": False}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    try:
        OUT.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(OUT / f"{name}.png"))
        if docs and os.environ.get("WRITE_DOCS_SCREENSHOTS") == "1":
            DOCS.mkdir(exist_ok=True)
            driver.save_screenshot(str(DOCS / docs))
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def wait_text(driver: Any, css: str, text: str, timeout_s: float = 10) -> None:
    """Wait for `text` in the element; across a navigation the element found may be the old
    page's (stale) or not there yet: both mean "not yet", not a failure."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    ignored = (StaleElementReferenceException, NoSuchElementException)
    WebDriverWait(driver, timeout_s, ignored_exceptions=ignored).until(
        lambda d: text in d.find_element(By.CSS_SELECTOR, css).text
    )


def test_the_console_in_a_browser(live: LiveEngine, browser: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    live.seed_history()
    live.clock.offset_ms = -3 * 3600_000
    snoozed = live.alert(
        alertname="CertExpiring", service="auth", severity="info", summary="TLS cert expires in 9d"
    )
    live.api("POST", f"/api/v1/incidents/{snoozed}/snooze", {"by": "bob", "duration": "8h"})
    live.clock.offset_ms = -42 * 60_000
    acked = live.alert(alertname="DiskFilling", service="db", severity="warning", summary="Disk 91% on db-2")
    live.clock.offset_ms = -38 * 60_000
    live.api("POST", f"/api/v1/incidents/{acked}/ack", {"by": "bob"})
    live.clock.offset_ms = -4 * 60_000
    incident_id = live.alert(summary="5xx ratio above 5% on checkout")
    live.clock.offset_ms = 0

    browser.get(live.url + "/")
    assert "/login" in browser.current_url  # credentials are configured: log in first
    browser.find_element(By.ID, "name").send_keys("alice")
    browser.find_element(By.ID, "token").send_keys(TOKEN)
    browser.find_element(By.ID, "login").click()
    wait_text(browser, "#me", "alice")
    rows = browser.find_element(By.ID, "incidents").text
    assert "5xx ratio above 5% on checkout" in rows
    assert "Disk 91% on db-2" in rows
    assert "TLS cert expires in 9d" in rows
    shot(browser, "incidents", "console-incidents.png")

    browser.find_element(By.LINK_TEXT, incident_id).click()
    wait_text(browser, "#status", "triggered")
    browser.find_element(By.ID, "do-ack").click()
    wait_text(browser, "#flash", "Acknowledged")
    assert browser.find_element(By.ID, "status").text == "acknowledged"
    api = live.api("GET", f"/api/v1/incidents/{incident_id}")
    assert (api["status"], api["acknowledged_by"]) == ("acknowledged", "alice")

    Select(browser.find_element(By.ID, "update-status")).select_by_visible_text("identified")
    browser.find_element(By.ID, "update-message").send_keys("Bad deploy of checkout 4.2; rolling back.")
    browser.find_element(By.ID, "do-status").click()
    wait_text(browser, "#flash", "Status update #1")
    wait_text(browser, "#timeline", "UPDATE #1 (identified): Bad deploy of checkout 4.2; rolling back.")
    assert live.api("GET", f"/api/v1/incidents/{incident_id}")["updates"][0]["status"] == "identified"
    # and the channel got it, threaded under the incident's page
    deadline = time.monotonic() + 10
    while not (replies := [c for c in live.slack.calls["chat.postMessage"] if "UPDATE #1" in c["text"]]):
        assert time.monotonic() < deadline, "the status update never reached the Slack sink"
        time.sleep(0.1)
    assert replies[0].get("thread_ts") and "Bad deploy of checkout 4.2" in replies[0]["text"]
    shot(browser, "incident", "console-incident.png")

    browser.find_element(By.LINK_TEXT, "Open incident").click()
    browser.find_element(By.ID, "new-title").send_keys("Customers report failed card payments")
    Select(browser.find_element(By.ID, "new-severity")).select_by_visible_text("P1")
    browser.find_element(By.ID, "new-labels").send_keys("service=checkout\nteam=payments")
    browser.find_element(By.ID, "new-description").send_keys("Three tickets in ten minutes, all Visa.")
    shot(browser, "new-incident")
    browser.find_element(By.ID, "do-open").click()
    wait_text(browser, "#title", "Customers report failed card payments")
    opened_id = browser.current_url.rsplit("/", 1)[1]
    opened = live.api("GET", f"/api/v1/incidents/{opened_id}")
    assert (opened["severity"], opened["opened_by"]) == ("P1", "alice")

    browser.find_element(By.LINK_TEXT, "On call").click()
    wait_text(browser, "main", "primary")
    assert "calendar feed" in browser.find_element(By.TAG_NAME, "main").text
    shot(browser, "oncall")

    browser.find_element(By.LINK_TEXT, "Reports").click()
    assert len(browser.find_elements(By.CSS_SELECTOR, "svg.chart")) == 3
    assert len(browser.find_elements(By.CSS_SELECTOR, "#per-day rect.bar")) == 30
    shot(browser, "reports")
