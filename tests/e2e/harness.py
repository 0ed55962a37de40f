"""Real processes for end-to-end tests: the engine (`python -m engine serve`) and Debian's Alertmanager."""

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from ssl import SSLContext
from typing import Any

import aiohttp

from tests.servers import terminate

TOKEN = "e2e-token"
ROUTING_KEY = "0123456789abcdef0123456789abcdef"
AUDIT_SECRET = "audit-secret"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def wait_for(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


async def wait_http(
    url: str, timeout_s: float, proc: subprocess.Popen[bytes] | None = None, ssl: SSLContext | None = None
) -> None:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise AssertionError(f"process exited with {proc.returncode} before {url} answered")
            try:
                async with session.get(url, ssl=ssl if ssl is not None else True) as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError(f"{url} did not answer 200 within {timeout_s}s")


class EngineProcess:
    """`python -m engine serve` on a loopback port, with its embedded redis-server in data_dir."""

    def __init__(
        self, policies: Path, data_dir: Path, log_path: Path, env: dict[str, str] | None = None
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.policies = policies
        self.data_dir = data_dir
        self.log_path = log_path
        self.env = {
            **os.environ,
            "ESCALATION_AUTH_TOKEN": TOKEN,
            "ESCALATION_DELIVERY_POLL_S": "0.2",
            "ESCALATION_LOG_FORMAT": "json",
            "PD_KEY": ROUTING_KEY,
            "AUDIT_SECRET": AUDIT_SECRET,
            **(env or {}),
        }
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        cmd = [
            sys.executable,
            "-m",
            "engine",
            "serve",
            "--policies",
            str(self.policies),
            "--listen",
            f"127.0.0.1:{self.port}",
            "--data-dir",
            str(self.data_dir),
        ]
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT)  # noqa: ASYNC220 - Popen returns at once; the wait is async
        log.close()
        await wait_http(f"{self.url}/-/ready", 20, self.proc)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None:
            terminate(self.proc, 15)

    async def call(self, method: str, path: str, **kw: Any) -> Any:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with (
            aiohttp.ClientSession() as session,
            session.request(method, self.url + path, headers=headers, **kw) as resp,
        ):
            assert resp.status == 200, await resp.text()
            return await resp.json()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


class Alertmanager:
    """Debian's prometheus-alertmanager on loopback, clustering off, sending to the engine."""

    binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")

    def __init__(self, workdir: Path, engine_url: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workdir = workdir
        self.engine_url = engine_url
        self.proc: subprocess.Popen[bytes] | None = None

    def config(self) -> str:
        return f"""
route:
  receiver: escalation-engine
  group_by: ['alertname', 'service']
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: escalation-engine
    webhook_configs:
      - url: '{self.engine_url}/api/v1/alertmanager'
        send_resolved: true
        http_config:
          authorization:
            credentials: '{TOKEN}'
"""

    async def start(self) -> None:
        assert self.binary, (
            "prometheus-alertmanager is not installed (apt-get install prometheus-alertmanager)"
        )
        cfg = self.workdir / "alertmanager.yml"
        cfg.write_text(self.config())
        cmd = [
            self.binary,
            f"--config.file={cfg}",
            f"--storage.path={self.workdir / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--cluster.listen-address=",
        ]
        log = (self.workdir / "alertmanager.log").open("ab")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)  # noqa: ASYNC220 - Popen returns at once; the wait is async
        log.close()
        await wait_http(f"{self.url}/-/ready", 20, self.proc)

    def stop(self) -> None:
        if self.proc is not None:
            terminate(self.proc, 10)

    async def post_alerts(self, alerts: list[dict[str, Any]]) -> None:
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{self.url}/api/v2/alerts", json=alerts) as resp,
        ):
            assert resp.status == 200, await resp.text()
