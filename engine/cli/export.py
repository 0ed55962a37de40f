"""`export [--redis-url URL | --data-dir DIR] [-o FILE]`: the engine's whole state as JSON lines.

Open incidents and the resolved ones still kept, timelines, timers (absolute due times),
indexes, the outbox and channel queues (notifications not yet delivered), retries, dead
letters, chat thread references, the link secret, heartbeats: one line per Redis key after a
header (format version, engine version, time). Each shard is read in one atomic step, so a
running engine can be exported; `import` restores it (see engine/store/backup.py).
Without --redis-url or --data-dir: $ESCALATION_REDIS_URL, else the embedded Redis of
$ESCALATION_DATA_DIR (./data), which must not be in use by a running `serve`.
A FILE ending in .gz is compressed. Exit codes: 0 done, 2 usage, connection or file error.
"""

import argparse
import asyncio
import gzip
import os
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO, Any, BinaryIO, cast

import orjson
from redis.exceptions import RedisError

from engine.errors import EngineError
from engine.store.backup import Summary, export_records
from engine.store.connect import connect
from engine.store.embedded import EmbeddedRedis
from engine.store.rediscore import AnyRedis

HELP = "write the engine's whole state (incidents, timers, queues...) to a file, for `import`"


def add_store_arguments(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--redis-url", help="the engine's Redis (default $ESCALATION_REDIS_URL)")
    where.add_argument(
        "--data-dir",
        type=Path,
        help="the embedded Redis data directory (default ./data); the engine using it must be stopped",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_store_arguments(parser)
    parser.add_argument(
        "-o", "--output", help="write to this file (.gz: compressed); default standard output"
    )


def run(args: argparse.Namespace) -> int:
    return run_store_verb("export", lambda: _export(args))


def run_store_verb(verb: str, work: Callable[[], Coroutine[Any, Any, str]]) -> int:
    """Run `work`; its result is the line for people. Every failure is one message and exit 2."""
    try:
        done: str = asyncio.run(work())
    except (EOFError, KeyError, TypeError, IndexError) as exc:  # a damaged or foreign file
        print(f"escalation-engine {verb}: the file is damaged or not an export ({type(exc).__name__}: {exc})",
              file=sys.stderr)  # fmt: skip
        return 2
    except (EngineError, OSError, RedisError, ValueError) as exc:
        message = str(exc) or type(exc).__name__
        if "already running on data dir" in message:
            message += " (or reach it through its socket: --redis-url unix://DIR/redis.sock)"
        print(f"escalation-engine {verb}: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"escalation-engine {verb}: interrupted", file=sys.stderr)
        return 130
    print(done, file=sys.stderr)
    return 0


@asynccontextmanager
async def open_redis(args: argparse.Namespace, *, create: bool) -> AsyncIterator[AnyRedis]:
    """A client for --redis-url, or for an embedded redis-server started on --data-dir (which
    must exist unless `create`); defaults as `serve` has them."""
    from engine.config import Settings  # here: reading the environment can fail, as a usage error

    url, data_dir = args.redis_url, args.data_dir
    settings = Settings()
    if url is None and data_dir is None:
        url, data_dir = settings.redis_url, settings.data_dir
    embedded = None
    if url is None:
        assert data_dir is not None
        if not create and not data_dir.is_dir():
            raise EngineError(f"no data directory {data_dir}: nothing to export")
        embedded = EmbeddedRedis(data_dir, fsync=settings.redis_fsync)
        url = await embedded.start()
    try:
        client = await connect(url)
        try:
            yield client
        finally:
            await client.aclose()
    finally:
        if embedded is not None:
            await embedded.stop()


def _sink(target: str | None) -> tuple[IO[bytes], Path | None]:
    """Where the lines go: standard output, or FILE.partial (renamed to FILE once complete),
    readable by its owner only: it holds the link secret and every incident."""
    if target is None:
        return sys.stdout.buffer, None
    partial = Path(f"{target}.partial")
    raw = os.fdopen(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb")
    out = gzip.GzipFile(fileobj=raw, mode="wb") if target.endswith(".gz") else raw
    return cast(BinaryIO, out), partial


async def _export(args: argparse.Namespace) -> str:
    summary = Summary()
    target = args.output if args.output not in (None, "-") else None
    async with open_redis(args, create=False) as client:
        out, partial = _sink(target)
        try:
            async for line in export_records(client, summary):
                out.write(orjson.dumps(line) + b"\n")
            out.flush()
            if partial is not None and target is not None:
                _close(out)
                os.replace(partial, target)  # whole or not at all under its name
        finally:
            if partial is not None:
                _close(out)
                partial.unlink(missing_ok=True)
    return f"exported {summary} to {target or 'standard output'}"


def _close(out: IO[bytes]) -> None:
    """Close the file (a GzipFile does not close the file it wraps)."""
    inner = getattr(out, "fileobj", None)
    out.close()
    if inner is not None:
        inner.close()
