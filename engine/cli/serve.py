"""`serve`: run the engine on a policy directory, with the embedded Redis unless --redis-url."""

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from engine import gctune, loops
from engine.cli.problems import load_or_report
from engine.errors import EngineError

if TYPE_CHECKING:
    from engine.config import Settings

HELP = "run the engine"
_OVERRIDES = ("policies", "listen", "redis_url", "data_dir", "insecure_no_auth")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--policies", type=Path, help="policy directory (default ./policies)")
    parser.add_argument("--listen", help="host:port (default 127.0.0.1:9095)")
    parser.add_argument("--redis-url", help="external Redis (standalone or Cluster); default: embedded")
    parser.add_argument("--data-dir", type=Path, help="embedded Redis data directory (default ./data)")
    parser.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="listen beyond loopback with no credentials configured (only behind a proxy that authenticates)",
    )


def run(args: argparse.Namespace) -> int:
    from engine.api.auth import exposure_problem, make_auth
    from engine.api.server import Limits, serve, tls_context
    from engine.app import create_app  # imported here: `check` should not pay for the server's imports
    from engine.config import Settings
    from engine.logs import configure_logging

    settings = Settings(**{k: v for k, v in vars(args).items() if k in _OVERRIDES and v})
    policies = load_or_report(settings.policies, "refusing to start: ")
    if policies is None:
        return 2
    host, port = settings.listen_host_port()
    try:
        problem = exposure_problem(settings, make_auth(settings), host)
        tls = tls_context(settings)
        new_loop = loops.factory(settings.event_loop)
    except OSError as exc:  # a credentials file that cannot be read
        problem, tls = f"{exc.filename}: {exc.strerror}", None
    except EngineError as exc:
        problem, tls = str(exc), None
    if problem is not None:
        print(f"escalation-engine: refusing to start: {problem}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    app = create_app(settings, policies, role="http" if settings.worker_process else "all")
    gctune.tune()
    scheme = "https" if tls else "http"
    started = lambda site: _started(settings, scheme, site.port)  # noqa: E731
    try:
        serve(app, host, port, Limits.of(settings), tls, started, new_loop)
    except EngineError as exc:  # e.g. the port is in use
        print(f"escalation-engine: {exc}", file=sys.stderr)
        return 2
    return 0


def _started(settings: "Settings", scheme: str, port: int) -> None:
    host, _ = settings.listen_host_port()
    structlog.get_logger("engine").info(
        "engine_started",
        listen=f"{host}:{port}",
        policies=str(settings.policies),
        redis="embedded" if settings.redis_url is None else "external",
        data_dir=str(settings.data_dir) if settings.redis_url is None else None,
        webhook=f"{scheme}://{host}:{port}/api/v1/alertmanager",
    )
