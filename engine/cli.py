"""escalation-engine: serve | check. Parses arguments, builds settings, calls into the package."""

import argparse
import asyncio
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from engine import __version__
from engine.errors import EngineError, PolicyError

if TYPE_CHECKING:
    from engine.config import Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="escalation-engine", description="Alertmanager in, escalating pages out."
    )
    parser.add_argument("--version", action="version", version=f"escalation-engine {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the engine")
    serve.add_argument("--policies", type=Path, help="policy directory (default ./policies)")
    serve.add_argument("--listen", help="host:port (default 0.0.0.0:9095)")
    serve.add_argument("--redis-url", help="external Redis (standalone or Cluster); default: embedded")
    serve.add_argument("--data-dir", type=Path, help="embedded Redis data directory (default ./data)")
    check = sub.add_parser("check", help="validate policies; prints file:line: message per error")
    check.add_argument("dir", type=Path)
    args = parser.parse_args(argv)
    if args.command == "check":
        return _check(args.dir)
    return _serve(args)


def _check(path: Path) -> int:
    from engine.policy.loader import load_policies

    try:
        policies = load_policies(path)
    except PolicyError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"{len(exc.problems)} error(s) in {path}", file=sys.stderr)
        return 1
    print(
        f"{path}: OK: {len(policies.severities)} severities, {len(policies.rules)} rules, "
        f"{len(policies.escalation_policies)} escalation policies, {len(policies.users)} users"
    )
    return 0


def _serve(args: argparse.Namespace) -> int:
    from aiohttp import web

    from engine.app import create_app
    from engine.config import Settings
    from engine.logs import configure_logging
    from engine.policy.loader import load_policies

    overrides = {
        k: v for k, v in vars(args).items() if k in ("policies", "listen", "redis_url", "data_dir") and v
    }
    settings = Settings(**overrides)
    try:
        policies = load_policies(settings.policies)
    except PolicyError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"refusing to start: {len(exc.problems)} error(s) in {settings.policies}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    app = create_app(settings, policies)
    host, port = settings.listen_host_port()
    log = structlog.get_logger("engine")
    app.on_startup.append(lambda _: _started(log, settings, host, port))
    loop = asyncio.new_event_loop()
    try:
        web.run_app(app, host=host, port=port, loop=loop, print=None, handle_signals=True, access_log=None)
    except EngineError as exc:
        print(f"escalation-engine: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # second Ctrl-C
        pass
    finally:
        loop.close()
    return 0


async def _started(log: structlog.stdlib.BoundLogger, settings: "Settings", host: str, port: int) -> None:
    log.info(
        "engine_started",
        listen=f"{host}:{port}",
        policies=str(settings.policies),
        redis="embedded" if settings.redis_url is None else "external",
        data_dir=str(settings.data_dir) if settings.redis_url is None else None,
        webhook=f"http://{host}:{port}/api/v1/alertmanager",
    )


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    raise SystemExit(main())
