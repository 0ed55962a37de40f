"""A real Prometheus (Debian's) scrapes a running engine through a small workload, loads the
shipped self-monitoring rules, and answers every query of every dashboard panel.

Proves what reading cannot: each panel query parses and returns data from the engine's real
/metrics, each rule expression parses, every series a rule uses exists, and Prometheus
evaluates each rule without error.
"""

import asyncio
import importlib.util
import re
import shutil
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp
import pytest
import yaml

from tests.e2e.harness import EngineProcess, free_port, wait_for, wait_http
from tests.e2e.test_observability import alert, policies
from tests.servers import terminate
from tests.sinks import PagerDutySink, Reply, WebhookSink

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).parent.parent.parent
DEPLOY = ROOT / "deploy"
RULES = sorted((DEPLOY / "prometheus" / "rules").glob("*.rules.yml"))
BINARY = shutil.which("prometheus")
METRIC = re.compile(r"\b(escalation_[a-z0-9_]+|up)\b(?!\s*\()")  # a name, not a function call


def dashboard_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_dashboard", DEPLOY / "check_dashboard.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Prometheus:
    def __init__(self, workdir: Path, target: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workdir = workdir
        self.target = target
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        assert BINARY, "Debian's prometheus is not installed (make prometheus)"
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(r) for r in RULES],
            "scrape_configs": [
                {"job_name": "escalation-engine", "static_configs": [{"targets": [self.target]}]}
            ],
        }
        cfg = self.workdir / "prometheus.yml"
        cfg.write_text(yaml.safe_dump(config))
        cmd = [
            BINARY,
            f"--config.file={cfg}",
            f"--storage.tsdb.path={self.workdir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
        ]
        log = (self.workdir / "prometheus.log").open("ab")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)  # noqa: ASYNC220 - returns at once
        log.close()
        await wait_http(f"{self.url}/-/ready", 30, self.proc)

    def stop(self) -> None:
        if self.proc is not None:
            terminate(self.proc, 10)

    async def get(self, path: str, **params: str) -> Any:
        async with aiohttp.ClientSession() as s, s.get(self.url + path, params=params) as resp:
            body = await resp.json()
            return body


async def workload(engine: EngineProcess, pd: PagerDutySink) -> None:
    """Pages, a refused page, a heartbeat, an ack and a resolve."""
    auth = {"Authorization": f"Bearer {engine.env['ESCALATION_AUTH_TOKEN']}"}
    url = f"{engine.url}/api/v1/alertmanager"

    def webhook(*alerts: dict[str, Any]) -> dict[str, Any]:
        return {
            "version": "4",
            "groupKey": "{}:{}",
            "status": "firing",
            "receiver": "r",
            "alerts": list(alerts),
        }

    pd.script(Reply(400, {"status": "invalid event", "message": "no", "errors": ["x"]}))
    async with aiohttp.ClientSession() as s:
        async with s.post(url, json=webhook(alert("Watchdog")), headers=auth) as r:
            assert r.status == 200
        async with s.post(url, json=webhook(alert("Down", service="checkout")), headers=auth) as r:
            [incident_id] = (await r.json())["incidents"]
        await wait_for(lambda: len(pd.requests) >= 1, 10, "the first page")
        for action in ("ack", "resolve"):
            async with s.post(
                f"{url.rsplit('/', 1)[0]}/incidents/{incident_id}/{action}", json={}, headers=auth
            ) as r:
                assert r.status == 200
        async with s.post(url, data=b"not json", headers=auth) as r:
            assert r.status == 400


async def test_every_dashboard_query_and_rule_runs_against_a_real_scrape(tmp_path: Path) -> None:
    queries = dashboard_module().dashboard_queries(
        DEPLOY / "grafana" / "dashboards" / "escalation-engine.json"
    )
    rules = [
        rule
        for path in RULES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
    ]
    assert queries and rules
    async with PagerDutySink() as pd, WebhookSink() as hook:
        engine = EngineProcess(policies(tmp_path, pd, hook, "1h"), tmp_path / "data", tmp_path / "engine.log")
        await engine.start()
        prom = Prometheus(tmp_path, f"127.0.0.1:{engine.port}")
        try:
            await prom.start()
            await workload(engine, pd)
            await asyncio.sleep(8)  # gauges refresh (5 s) and several scrapes and evaluations

            empty = []
            for query in queries:
                answer = await prom.get("/api/v1/query", query=query)
                assert answer["status"] == "success", (query, answer)
                if not answer["data"]["result"]:
                    empty.append(query)
            assert not empty, f"dashboard queries that returned no data: {empty}"

            for rule in rules:
                expr = str(rule["expr"])
                answer = await prom.get("/api/v1/query", query=expr)
                assert answer["status"] == "success", (rule.get("alert"), answer)
                for name in set(METRIC.findall(expr)):
                    found = await prom.get("/api/v1/query", query=f"count({name})")
                    assert found["data"]["result"], f"{rule.get('alert')}: no series {name}"

            loaded = (await prom.get("/api/v1/rules"))["data"]["groups"]
            health = {r["name"]: (r["health"], r.get("lastError", "")) for g in loaded for r in g["rules"]}
            assert len(health) == len(rules)
            assert all(h == "ok" for h, _ in health.values()), health
            firing = {a["labels"]["alertname"] for a in (await prom.get("/api/v1/alerts"))["data"]["alerts"]}
            assert "Watchdog" in firing  # the always-firing alert that feeds the dead man's switch
            assert "EscalationEngineDown" not in firing
        finally:
            prom.stop()
            engine.stop()
