"""End to end, as an SRE runs it: no secret ever reaches the logs, one log line per unit of
work, and the dead man's switch with a real Alertmanager that dies and comes back."""

import asyncio
import json
import socket
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.e2e.harness import Alertmanager, EngineProcess, wait_for
from tests.e2e.test_alertmanager_flow import now_rfc3339
from tests.sinks import PagerDutySink, Reply, WebhookSink

pytestmark = pytest.mark.e2e
FIXTURES = Path(__file__).parent.parent / "fixtures"
SECRETS = {
    "ESCALATION_AUTH_TOKEN": "tok-SECRET-7f3a9c1e",
    "PD_KEY": "pdkey-SECRET-0b5e4d2a9c8f7e6d5c4b3a29",
    "AUDIT_SECRET": "hook-SECRET-91c2d3e4",
    "SMTP_USER": "smtpuser-SECRET-5a6b",
    "SMTP_PASSWORD": "smtppass-SECRET-8c9d0e1f",
}
POLICY = """
severities:
  P1: {{description: Major, ack_within: 5m}}
rules:
  - name: watchdog
    matchers: ['alertname="Watchdog"']
    heartbeat: {heartbeat}
    severity: P1
    policy: page
default: {{severity: P1, policy: page}}
escalation_policies:
  page:
    levels:
      - after: 0s
        notify: [pagerduty:platform, webhook:audit, user:sre]
users:
  sre: {{email: sre@example.com}}
channels:
  pagerduty:
    url: {pd_url}
    services:
      platform: {{routing_key_env: PD_KEY}}
  webhook:
    endpoints:
      audit: {{url: '{hook_url}', secret_env: AUDIT_SECRET}}
  email:
    smtp_host: 127.0.0.1
    smtp_port: {smtp_port}
    starttls: false
    from: engine@example.com
    username_env: SMTP_USER
    password_env: SMTP_PASSWORD
"""


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def policies(tmp: Path, pd: PagerDutySink, hook: WebhookSink, heartbeat: str = "1h") -> Path:
    d = tmp / "policies"
    d.mkdir(exist_ok=True)
    text = POLICY.format(heartbeat=heartbeat, pd_url=pd.url, hook_url=hook.url, smtp_port=closed_port())
    (d / "policy.yaml").write_text(text)
    return d


def alert(name: str, **labels: str) -> dict[str, Any]:
    return {
        "status": "firing",
        "labels": {"alertname": name, **labels},
        "annotations": {"summary": f"{name} is firing"},
        "startsAt": now_rfc3339(),
    }


async def test_no_secret_reaches_the_logs_and_each_unit_of_work_is_one_line(tmp_path: Path) -> None:
    async with PagerDutySink() as pd, WebhookSink(secret="not-the-engines-secret") as hook:
        pd.script(Reply(500), Reply(429, headers={"Retry-After": "1"}))  # then 202
        env = {**SECRETS, "ESCALATION_LOG_LEVEL": "debug", "ESCALATION_DELIVERY_BACKOFF_S": "0.2"}
        engine = EngineProcess(policies(tmp_path, pd, hook), tmp_path / "data", tmp_path / "engine.log", env)
        engine.env["ESCALATION_AUTH_TOKEN"] = SECRETS["ESCALATION_AUTH_TOKEN"]
        await engine.start()
        try:
            auth = {"Authorization": f"Bearer {SECRETS['ESCALATION_AUTH_TOKEN']}"}
            payload = json.loads((FIXTURES / "02-firing-group.json").read_text())
            async with aiohttp.ClientSession() as session:
                url = f"{engine.url}/api/v1/alertmanager"
                async with session.post(
                    url, json=payload, headers={"Authorization": "Bearer wrong-guess"}
                ) as r:
                    assert r.status == 401
                async with session.post(url, json=payload, headers=auth) as r:
                    assert r.status == 200
                    incident_id = (await r.json())["incidents"][0]
                await wait_for(lambda: len(pd.events) >= 1, 20, "the page, after a 500 and a 429")
                ack = f"{engine.url}/api/v1/incidents/{incident_id}/ack"
                async with session.post(ack, json={"by": "alice"}, headers=auth) as r:
                    assert r.status == 200
                await wait_for(lambda: len(pd.events) >= 2, 20, "the ack mirrored")
                await asyncio.sleep(1)  # let the failing webhook and email attempts log
        finally:
            engine.stop()
    log = engine.log_text()
    for name, secret in SECRETS.items():
        assert secret not in log, f"{name} leaked into the log"
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    events = [line["event"] for line in lines]
    assert events.count("webhook") == 1  # the 401 was refused before any work
    assert all("request_id" in line for line in lines if line["event"] in ("webhook", "incident_changed"))
    assert all("incident_id" in line for line in lines if line["event"].startswith("notification_"))
    failed = {
        line["channel"] for line in lines if line["event"] in ("notification_failed", "notification_retry")
    }
    assert {"webhook", "email", "pagerduty"} <= failed  # the failures were logged, without secrets


class WatchdogAlertmanager(Alertmanager):
    """Alertmanager with the Watchdog route of deploy/alertmanager: re-sent every second."""

    def config(self) -> str:
        return (
            super()
            .config()
            .replace(
                "  repeat_interval: 1h\n",
                "  repeat_interval: 1h\n"
                "  routes:\n"
                "    - matchers: ['alertname=\"Watchdog\"']\n"
                "      receiver: escalation-engine\n"
                "      group_wait: 0s\n"
                "      group_interval: 1s\n"
                "      repeat_interval: 1s\n",
            )
        )


async def test_the_dead_mans_switch_opens_when_alertmanager_dies_and_resolves_when_it_returns(
    tmp_path: Path,
) -> None:
    async with PagerDutySink() as pd, WebhookSink() as hook:
        engine = EngineProcess(policies(tmp_path, pd, hook, "4s"), tmp_path / "data", tmp_path / "engine.log")
        await engine.start()
        am = WatchdogAlertmanager(tmp_path, engine.url)
        try:
            await am.start()
            await am.post_alerts([{**alert("Watchdog"), "endsAt": now_rfc3339(3600)}])
            await wait_for(lambda: '"event": "webhook"' in engine.log_text(), 20, "the first heartbeat")
            await asyncio.sleep(5)  # heartbeats keep coming: nothing opens
            assert (await engine.call("GET", "/api/v1/incidents"))["incidents"] == []

            am.stop()  # the pipeline dies
            await wait_for(lambda: len(pd.events) >= 1, 20, "the silence page")
            [silent] = (await engine.call("GET", "/api/v1/incidents"))["incidents"]
            assert silent["title"].startswith(
                "AlertingPipelineSilent: no heartbeat from rule watchdog for 4s"
            )
            assert silent["status"] == "triggered" and silent["severity"] == "P1"
            assert pd.events[0]["event_action"] == "trigger"

            am = WatchdogAlertmanager(tmp_path, engine.url)  # it comes back
            await am.start()
            await am.post_alerts([{**alert("Watchdog"), "endsAt": now_rfc3339(3600)}])

            async def resolved() -> bool:
                view = await engine.call("GET", f"/api/v1/incidents/{silent['id']}")
                return bool(view["status"] == "resolved")

            for _ in range(100):
                if await resolved():
                    break
                await asyncio.sleep(0.2)
            view = await engine.call("GET", f"/api/v1/incidents/{silent['id']}")
            assert view["status"] == "resolved" and view["resolved_by"] == "alertmanager"
            metrics = await _metrics(engine)
            assert 'escalation_heartbeat_interval_seconds{rule="watchdog"} 4.0' in metrics
            assert 'escalation_heartbeat_last_seen_timestamp_seconds{rule="watchdog"}' in metrics
        finally:
            am.stop()
            engine.stop()


async def _metrics(engine: EngineProcess) -> str:
    await asyncio.sleep(5.5)  # the gauges refresh every 5 s
    async with aiohttp.ClientSession() as session, session.get(f"{engine.url}/metrics") as resp:
        return await resp.text()
