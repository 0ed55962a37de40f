"""`serve` runs timers and delivery in a worker process of its own: pages and escalations leave at
once (the parent wakes it), its metrics are in serve's /metrics, it follows reloads, it is
restarted if it dies, and it never outlives serve."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

from tests.e2e.harness import AUDIT_SECRET, EngineProcess, wait_for
from tests.e2e.test_alertmanager_flow import now_rfc3339
from tests.sinks import PagerDutySink, WebhookSink

pytestmark = pytest.mark.e2e
POLICY = """
severities:
  P1: {{description: Major, ack_within: 5m}}
default: {{severity: P1, policy: page}}
escalation_policies:
  page:
    levels:
      - after: 0s
        notify: [pagerduty:platform]
      - after: 2s
        notify: [webhook:audit]
channels:
  pagerduty:
    url: {pd_url}
    services:
      platform: {{routing_key_env: PD_KEY}}
  webhook:
    endpoints:
      audit: {{url: '{hook_url}', secret_env: AUDIT_SECRET}}
"""
# without the parent's wakes the worker would find new work only this late: the tests wait less
SLOW_POLLS = {"ESCALATION_DELIVERY_POLL_S": "30", "ESCALATION_SCHEDULER_MAX_SLEEP_S": "30"}


def write_policies(d: Path, pd_url: str, hook_url: str) -> Path:
    d.mkdir(exist_ok=True)
    (d / "policy.yaml").write_text(POLICY.format(pd_url=pd_url, hook_url=hook_url))
    return d


def children(pid: int) -> list[int]:
    """The pids of `pid`'s children that run `engine worker`."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if not entry.name.isdigit() or b"\0worker\0" not in (entry / "cmdline").read_bytes():
                continue
            if int((entry / "stat").read_text().rpartition(")")[2].split()[1]) == pid:
                found.append(int(entry.name))
        except (OSError, ValueError):
            continue
    return found


def alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


async def fire(engine: EngineProcess, name: str) -> None:
    alert = {"status": "firing", "labels": {"alertname": name}, "startsAt": now_rfc3339()}
    body = {"version": "4", "status": "firing", "receiver": "engine", "groupKey": name, "alerts": [alert]}
    await engine.call("POST", "/api/v1/alertmanager", json=body)


async def scrape(engine: EngineProcess, accept: str = "") -> str:
    headers = {"Accept": accept} if accept else {}
    async with aiohttp.ClientSession() as session, session.get(f"{engine.url}/metrics", headers=headers) as r:
        assert r.status == 200
        return await r.text()


def sample(text: str, name: str, **labels: str) -> float:
    for family in parse_text(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    raise AssertionError(f"{name}{labels} not in /metrics")


async def started(tmp_path: Path, pd: PagerDutySink, hook: WebhookSink) -> EngineProcess:
    engine = EngineProcess(
        write_policies(tmp_path / "policies", pd.url, hook.url), tmp_path / "data", tmp_path / "engine.log"
    )
    engine.env.update(SLOW_POLLS)
    engine.env["ESCALATION_LOG_LEVEL"] = "info"
    await engine.start()
    return engine


async def test_pages_and_escalations_leave_at_once_and_the_worker_counts_in_serves_metrics(
    tmp_path: Path,
) -> None:
    async with PagerDutySink() as pd, WebhookSink(secret=AUDIT_SECRET) as hook:
        engine = await started(tmp_path, pd, hook)
        try:
            assert engine.proc is not None
            assert len(children(engine.proc.pid)) == 1, "serve runs one worker process"
            t0 = time.monotonic()
            await fire(engine, "DiskFull")
            await wait_for(lambda: len(pd.events) == 1, 5, "the page from the worker")
            assert time.monotonic() - t0 < 5  # the 30 s poll was not waited for
            await wait_for(lambda: len(hook.requests) == 1, 8, "level 2, two seconds later")
            assert 1.5 < time.monotonic() - t0 < 8

            text = await scrape(engine)
            assert sample(text, "escalation_notifications_total", channel="pagerduty", outcome="success") == 1
            assert sample(text, "escalation_notifications_total", channel="webhook", outcome="success") == 1
            assert sample(text, "escalation_webhook_requests_total", code="200") == 1  # serve's own
            assert sample(text, "escalation_escalations_total") >= 1
            assert sample(text, "escalation_worker_restarts_total") == 0
            assert text.count("# TYPE escalation_build_info ") == 1  # one family, merged
            assert sample(text, "escalation_build_info") == 1
            om = await scrape(engine, "application/openmetrics-text; version=1.0.0")
            names = [f.name for f in parse_openmetrics(om)]  # type: ignore[no-untyped-call]  # strict: a family twice would raise
            assert len(names) == len(set(names)) and "escalation_notifications" in names
        finally:
            engine.stop()


async def test_a_worker_that_dies_is_restarted_and_the_next_page_still_leaves(tmp_path: Path) -> None:
    async with PagerDutySink() as pd, WebhookSink(secret=AUDIT_SECRET) as hook:
        engine = await started(tmp_path, pd, hook)
        try:
            assert engine.proc is not None
            pid = engine.proc.pid
            (first,) = children(pid)
            os.kill(first, signal.SIGKILL)
            await wait_for(lambda: [p for p in children(pid) if p != first] != [], 15, "a new worker")
            restarted = lambda: '"worker_started"' in engine.log_text().split('"worker_exited"')[-1]  # noqa: E731
            await wait_for(restarted, 15, "the new worker ready")
            await fire(engine, "AfterRestart")
            await wait_for(lambda: len(pd.events) == 1, 5, "the page from the new worker")
            assert '"worker_exited"' in engine.log_text()
            assert sample(await scrape(engine), "escalation_worker_restarts_total") == 1
        finally:
            engine.stop()


async def test_a_reload_reaches_the_worker(tmp_path: Path) -> None:
    async with PagerDutySink() as pd, PagerDutySink() as pd2, WebhookSink(secret=AUDIT_SECRET) as hook:
        engine = await started(tmp_path, pd, hook)
        try:
            # same ladder, so serve decides the same page; only the worker reads the channel's URL
            write_policies(tmp_path / "policies", pd2.url, hook.url)
            await engine.call("POST", "/-/reload")
            await fire(engine, "AfterReload")
            await wait_for(lambda: len(pd2.events) == 1, 5, "the page at the reloaded URL")
            assert pd.events == []
        finally:
            engine.stop()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
async def test_the_worker_never_outlives_serve(tmp_path: Path, sig: signal.Signals) -> None:
    async with PagerDutySink() as pd, WebhookSink(secret=AUDIT_SECRET) as hook:
        engine = await started(tmp_path, pd, hook)
        assert engine.proc is not None
        (worker,) = children(engine.proc.pid)
        engine.proc.send_signal(sig)
        engine.proc.wait(30)
        await wait_for(lambda: not alive(worker), 20, "the worker to exit")


def test_a_worker_alone_needs_the_redis_that_serve_uses(tmp_path: Path) -> None:
    env: dict[str, Any] = {k: v for k, v in os.environ.items() if not k.startswith("ESCALATION_")}
    cmd = [sys.executable, "-m", "engine", "worker", "--policies", str(tmp_path)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert "a worker needs the Redis that serve uses" in done.stderr
    assert "Traceback" not in done.stderr


async def test_with_the_worker_process_off_serve_runs_one_process(tmp_path: Path) -> None:
    async with PagerDutySink() as pd, WebhookSink(secret=AUDIT_SECRET) as hook:
        engine = EngineProcess(
            write_policies(tmp_path / "policies", pd.url, hook.url),
            tmp_path / "data",
            tmp_path / "engine.log",
        )
        engine.env["ESCALATION_WORKER_PROCESS"] = "false"
        await engine.start()
        try:
            assert engine.proc is not None and children(engine.proc.pid) == []
            await fire(engine, "OneProcess")
            await wait_for(lambda: len(pd.events) == 1, 5, "the page")
        finally:
            engine.stop()
