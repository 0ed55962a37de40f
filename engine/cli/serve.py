"""`serve`: run the engine on a policy directory, with the embedded Redis unless --redis-url."""

import argparse
import asyncio
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from engine.cli.problems import load_or_report
from engine.errors import EngineError

if TYPE_CHECKING:
    from engine.config import Settings

HELP = "run the engine"
_OVERRIDES = ("policies", "listen", "redis_url", "data_dir")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--policies", type=Path, help="policy directory (default ./policies)")
    parser.add_argument("--listen", help="host:port (default 0.0.0.0:9095)")
    parser.add_argument("--redis-url", help="external Redis (standalone or Cluster); default: embedded")
    parser.add_argument("--data-dir", type=Path, help="embedded Redis data directory (default ./data)")


def run(args: argparse.Namespace) -> int:
    from aiohttp import web  # imported here: `check` should not pay for the server's imports

    from engine.api.body import SERVER_ARGS
    from engine.app import create_app
    from engine.config import Settings
    from engine.logs import configure_logging

    settings = Settings(**{k: v for k, v in vars(args).items() if k in _OVERRIDES and v})
    policies = load_or_report(settings.policies, "refusing to start: ")
    if policies is None:
        return 2
    configure_logging(settings.log_level, settings.log_format)
    app = create_app(settings, policies)
    host, port = settings.listen_host_port()
    app.on_startup.append(lambda _: _started(settings, host, port))
    loop = asyncio.new_event_loop()
    try:
        web.run_app(
            app,
            host=host,
            port=port,
            loop=loop,
            print=None,
            handle_signals=True,
            access_log=None,
            **SERVER_ARGS,
        )
    except EngineError as exc:
        print(f"escalation-engine: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # second Ctrl-C
        pass
    finally:
        loop.close()
    return 0


async def _started(settings: "Settings", host: str, port: int) -> None:
    structlog.get_logger("engine").info(
        "engine_started",
        listen=f"{host}:{port}",
        policies=str(settings.policies),
        redis="embedded" if settings.redis_url is None else "external",
        data_dir=str(settings.data_dir) if settings.redis_url is None else None,
        webhook=f"http://{host}:{port}/api/v1/alertmanager",
    )
