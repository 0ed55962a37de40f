"""`import [--redis-url URL | --data-dir DIR] [--force] FILE`: restore what `export` wrote.

The file is checked whole first (header, format version, every line, the trailer's count), so
a truncated or foreign file writes nothing. A target that already holds engine state is
refused unless --force, which replaces it (stop the engines on it first). Keys whose expiry
passed since the export are left out; timers keep their absolute due times, and notifications
that were not yet delivered are delivered by the engines started on the target (those that
were in flight on a replica of the old deployment: again, at least once).
Exit codes: 0 done, 2 usage, connection, file error or refused target.
"""

import argparse
import gzip
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, BinaryIO, cast

import orjson

from engine.cli.export import add_store_arguments, open_redis, run_store_verb
from engine.store.backup import BackupError, Record, Summary, check_file, import_records

HELP = "restore a file written by `export` into an empty Redis (or --force over one in use)"
GZIP_MAGIC = b"\x1f\x8b"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_store_arguments(parser)
    parser.add_argument("--force", action="store_true", help="replace the engine state the target holds")
    parser.add_argument("file", type=Path, help="a file written by `escalation-engine export` (.gz too)")


def run(args: argparse.Namespace) -> int:
    return run_store_verb("import", lambda: _import(args))


def _open(path: Path) -> IO[bytes]:
    with open(path, "rb") as f:
        compressed = f.read(2) == GZIP_MAGIC
    return cast(BinaryIO, gzip.open(path, "rb") if compressed else open(path, "rb"))


def parsed_lines(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, JSON value) of every line of the file."""
    with _open(path) as f:
        for n, line in enumerate(f, start=1):
            try:
                yield n, orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise BackupError(f"{path}:{n}: not JSON ({exc})") from None


def records(path: Path) -> Iterator[Record]:
    """The key records, between the header and the trailer (check_file has vouched for them)."""
    for n, value in parsed_lines(path):
        if n > 1 and not value.get("end"):
            yield value


async def _import(args: argparse.Namespace) -> str:
    path: Path = args.file
    header, _ = check_file(parsed_lines(path))
    summary = Summary()
    async with open_redis(args, create=True) as client:
        await import_records(client, records(path), force=args.force, summary=summary)
    return f"imported {summary} from {path} (exported by escalation-engine {header.get('engine_version')})"
