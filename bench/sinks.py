"""Loopback receivers for every channel kind, in a process of their own, counting what arrives.

    python -m bench.sinks --ready FILE    # writes the receivers' addresses to FILE as JSON, then serves

The HTTP receivers are the test suite's strict stand-ins (tests/sinks.py, tests/slack_sink.py,
tests/chat_sinks.py): a malformed delivery is refused the way the real service would, and counted
as refused. Email is an aiosmtpd server. `GET /counts` on the control address answers
`{"<channel>.requests": n, "<channel>.refused": n}` (email: one request per message at DATA).
A process of its own, so that its CPU is measured apart from the engine's and the runner's;
`SinkProcess` (below) starts it for the runner and stops it whatever happens.
"""

import argparse
import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
CHANNELS = ("pagerduty", "slack", "telegram", "webhook", "teams", "email")
# credentials of these receivers only: the Slack and Telegram stand-ins check the token they get,
# the webhook one the signature
SLACK_TOKEN = "xoxb-bench-token"  # noqa: S105
TELEGRAM_TOKEN = "123456:BENCH-bot-token"  # noqa: S105
HOOK_SECRET = "bench-hook-secret"  # noqa: S105
PD_KEY = "benchbenchbenchbenchbenchbench32"


# ---- the receivers' process ----


def _counted(base: type, channel: str, counts: Counter[str]) -> Any:
    """A stand-in subclass that counts each request (and each refusal) and keeps no request bodies,
    so that its memory stays flat however many pages arrive."""

    class Counted(base):  # type: ignore[misc]
        async def _answer(self, request: Any) -> Any:
            reply = await super()._answer(request)
            counts[f"{channel}.requests"] += 1
            refused = not 200 <= reply.status < 300
            if isinstance(reply.json, dict) and reply.json.get("ok") is False:
                refused = True
            counts[f"{channel}.refused"] += refused
            self.requests.clear()
            for kept in ("events", "cards", "accepted", "calls"):
                getattr(self, kept, []).clear()
            return reply

    return Counted


class _Smtp:
    def __init__(self, counts: Counter[str]) -> None:
        self.counts = counts

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        self.counts["email.requests"] += 1
        return "250 Message accepted for delivery"


async def serve(ready: Path) -> None:
    # imported here: the runner imports this module for SinkProcess and needs none of these
    from aiohttp import web
    from aiosmtpd.smtp import SMTP

    from tests.chat_sinks import TeamsSink, TelegramSink
    from tests.sinks import PagerDutySink, WebhookSink
    from tests.slack_sink import SlackSink

    counts: Counter[str] = Counter({f"{c}.{k}": 0 for c in CHANNELS for k in ("requests", "refused")})
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)

    async def get_counts(request: web.Request) -> web.Response:
        return web.json_response(dict(counts))

    control = web.Application()
    control.router.add_get("/counts", get_counts)
    runner = web.AppRunner(control, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    smtp = await loop.create_server(lambda: SMTP(_Smtp(counts), hostname="bench.test"), "127.0.0.1", 0)
    try:
        async with (
            _counted(PagerDutySink, "pagerduty", counts)() as pd,
            _counted(SlackSink, "slack", counts)(SLACK_TOKEN) as slack,
            _counted(TelegramSink, "telegram", counts)(TELEGRAM_TOKEN) as telegram,
            _counted(WebhookSink, "webhook", counts)(HOOK_SECRET) as hook,
            _counted(TeamsSink, "teams", counts)() as teams,
        ):
            host, port = runner.addresses[0][:2]
            urls = {"pagerduty": pd.url, "slack": slack.url, "telegram": telegram.url,
                    "webhook": hook.url, "teams": teams.url, "control": f"http://{host}:{port}",
                    "smtp_port": smtp.sockets[0].getsockname()[1]}  # fmt: skip
            partial = ready.with_suffix(".partial")
            partial.write_text(json.dumps(urls))
            partial.rename(ready)  # the runner never reads half a file
            await stop.wait()
    finally:
        smtp.close()
        await runner.cleanup()


# ---- the runner's side ----


class SinkProcess:
    """`python -m bench.sinks` as a subprocess: its addresses, its counts, its pid (for CPU)."""

    def __init__(self, workdir: Path) -> None:
        self.ready = workdir / "sinks.json"
        self.log_path = workdir / "sinks.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.urls: dict[str, Any] = {}

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self, timeout_s: float = 30) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bench.sinks", "--ready", str(self.ready)],
                cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            )  # fmt: skip
        deadline = time.monotonic() + timeout_s
        while not self.ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the sinks did not start:\n{self.log_path.read_text()[-2000:]}")
            time.sleep(0.05)
        self.urls = json.loads(self.ready.read_text())

    def counts(self) -> dict[str, float]:
        with urllib.request.urlopen(self.urls["control"] + "/counts", timeout=10) as r:  # noqa: S310 - loopback
            doc: dict[str, float] = json.loads(r.read())
        return doc

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


@contextlib.contextmanager
def running(workdir: Path | None = None) -> Iterator[SinkProcess]:
    with tempfile.TemporaryDirectory(prefix="bench-sinks-") as tmp:
        sinks = SinkProcess(workdir or Path(tmp))
        try:
            sinks.start()
            yield sinks
        finally:
            sinks.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ready", type=Path, required=True, help="write the addresses here when serving")
    args = parser.parse_args()
    asyncio.run(serve(args.ready))


if __name__ == "__main__":
    main()
