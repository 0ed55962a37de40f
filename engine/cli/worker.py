"""`worker`: run due timers, delivery and retention without serving HTTP. `serve` starts one
itself (ESCALATION_WORKER_PROCESS); run it alone beside `serve` replicas that set it false."""

import argparse
import asyncio
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from engine import gctune, loops
from engine.cli.problems import load_or_report
from engine.errors import EngineError

if TYPE_CHECKING:
    from aiohttp import web

HELP = "run timers and delivery only (serve starts one by itself)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--policies", type=Path, help="policy directory (default ./policies)")
    parser.add_argument("--redis-url", help="the Redis serve uses (required: no embedded one)")
    parser.add_argument("--control-fd", type=int, help=argparse.SUPPRESS)  # serve's line to its worker


def run(args: argparse.Namespace) -> int:
    from engine.app import create_app  # imported here: the verb list should not pay for the server
    from engine.config import Settings
    from engine.logs import configure_logging

    overrides = {k: v for k, v in {"policies": args.policies, "redis_url": args.redis_url}.items() if v}
    settings = Settings(**overrides)
    if settings.redis_url is None:
        print(
            "escalation-engine: refusing to start: a worker needs the Redis that serve uses "
            "(--redis-url or ESCALATION_REDIS_URL); serve starts its own worker for the embedded one",
            file=sys.stderr,
        )
        return 2
    policies = load_or_report(settings.policies, "refusing to start: ")
    if policies is None:
        return 2
    try:
        new_loop = loops.factory(settings.event_loop)
    except EngineError as exc:
        print(f"escalation-engine: refusing to start: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    app = create_app(settings, policies, role="worker", control_fd=args.control_fd)
    gctune.tune()
    loops.run(_run(app), new_loop)
    return 0


async def _run(app: "web.Application") -> None:
    from aiohttp import web

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()  # starts the store, loops and the line to serve
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
