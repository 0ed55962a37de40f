"""Retention and the archive: the background task that keeps Redis bounded and, with
ESCALATION_ARCHIVE_DIR, writes every resolved incident out before it goes.

Each pass (every `interval_s`, on every replica) walks the shards' incident indexes through
store/sweep.py: entries of expired incidents are dropped. With an archive directory, a resolved
incident whose retention ends within `margin_ms` is claimed, written as one JSON line (incident
with its alerts, timeline, thread references) to `incidents-YYYY-MM-DD.jsonl` (the UTC day it
resolved), fsynced, and then removed from Redis: archived at resolved + retention - margin
(default_margin_ms: a quarter of the retention, at most a day), so notes added after the
resolve are in it. Hourly, it also drops orphaned keys, dead letters
older than the retention, and the consumer records of replicas long gone.

Guarantee: each incident is written once across replicas (the claim is atomic in Redis); after
a crash between the write and the removal it is written again when the claim's lease runs out:
at least once, never lost while some replica runs a pass within `margin_ms` of its expiry. A
line carries the incident id, so a reader drops repeats by id (the last line of an id wins).
"""

import asyncio
import contextlib
import dataclasses
import datetime
import fcntl
import os
import secrets
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import orjson
import structlog

from engine.clock import Clock
from engine.errors import StoreError
from engine.store import keys
from engine.store.base import Store
from engine.store.rediscore import RedisCore
from engine.store.sweep import Claimed, Sweeper

log = structlog.get_logger(__name__)
DAY_MS = 86_400_000
INTERVAL_S = 60.0
LEASE_MS = 300_000  # a claim not finished within this is taken over (its archiver died)
HOUSEKEEPING_EVERY = 60  # passes: orphans, dead letters, idle consumers once an hour
IDLE_CONSUMER_MS = DAY_MS
ARCHIVE_FORMAT = 1


def default_margin_ms(retention_ms: int, interval_s: float = INTERVAL_S) -> int:
    """How long before expiry an incident is archived: a quarter of the retention, at most a day,
    but at least five passes (and at most the whole retention). It is also how long every replica
    may be down around an incident's expiry before that incident expires unarchived."""
    return min(retention_ms, max(min(DAY_MS, retention_ms // 4), int(5 * interval_s * 1000)))


def archive_file(directory: Path, claimed: Claimed) -> Path:
    """`incidents-YYYY-MM-DD.jsonl` of the UTC day the incident resolved."""
    when = claimed.record.get("resolved_ms") or claimed.record.get("created_ms") or 0
    day = datetime.datetime.fromtimestamp(int(when) / 1000, datetime.UTC).date()
    return directory / f"incidents-{day.isoformat()}.jsonl"


def archive_line(claimed: Claimed, now_ms: int) -> bytes:
    archived_at = datetime.datetime.fromtimestamp(now_ms / 1000, datetime.UTC)
    line = {
        "format": ARCHIVE_FORMAT,
        "id": claimed.incident_id,
        "archived_at": archived_at.isoformat(timespec="milliseconds"),
        "version": claimed.version,
        "duplicates": claimed.duplicates,
        "incident": claimed.record,
        "timeline": sorted(claimed.timeline, key=lambda e: int(e.get("at_ms", 0))),  # stable
        "threads": claimed.threads,
    }
    return orjson.dumps(line) + b"\n"


def append_lines(path: Path, lines: list[bytes]) -> None:
    """Append whole lines durably. Several replicas may share the directory: the lines go in one
    write under an exclusive lock; a line torn by a crash is ended first, so it stays one bad
    line instead of corrupting the next."""
    new = not path.exists()
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        size = os.fstat(fd).st_size
        data = b"".join(lines)
        if size and os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    if new:  # the file's directory entry must survive a crash too
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


@dataclass(slots=True)
class PassStats:
    index_dropped: int = 0
    archived: int = 0
    duplicates: int = 0  # written here, but another archiver had taken the claim over meanwhile
    orphans: int = 0
    dead_letters: int = 0
    consumers: int = 0


class Retention:
    """The background task. `run()` until `stop()`; `sweep()` is one pass (tests call it)."""

    def __init__(
        self,
        sweeper: Sweeper | None,
        clock: Clock,
        *,
        archive_dir: Path | None = None,
        owner: str = "engine",
        interval_s: float = INTERVAL_S,
        margin_ms: int | None = None,
        lease_ms: int = LEASE_MS,
        housekeeping_every: int = HOUSEKEEPING_EVERY,
    ) -> None:
        self.sweeper = sweeper
        self.clock = clock
        self.archive_dir = archive_dir
        self.owner = owner
        self.interval_s = interval_s
        retention_ms = sweeper.retention_ms if sweeper is not None else 0
        self.margin_ms = default_margin_ms(retention_ms, interval_s) if margin_ms is None else margin_ms
        self.lease_ms = lease_ms
        self.housekeeping_every = housekeeping_every
        self.passes = 0
        self._stopping = asyncio.Event()

    @classmethod
    def for_store(
        cls, store: Store, clock: Clock, archive_dir: Path | None, owner: str, interval_s: float = INTERVAL_S
    ) -> "Retention":
        """For the engine's store; a store that is not Redis (a test double) gets an idle task."""
        sweeper = Sweeper(store.client, store.retention_ms) if isinstance(store, RedisCore) else None
        return cls(sweeper, clock, archive_dir=archive_dir, owner=owner, interval_s=interval_s)

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        if self.sweeper is None:
            return
        if self.archive_dir is not None:
            try:
                self.archive_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                log.error("archive_dir_unusable", archive_dir=str(self.archive_dir), error=str(exc))
        while not self._stopping.is_set():
            try:
                stats = await self.sweep()
                if stats != PassStats():
                    log.info("retention_pass", **_fields(stats))
            except StoreError as exc:
                log.warning("retention_store_unavailable", error=str(exc))
            except Exception as exc:  # housekeeping must never stop the engine
                log.exception("retention_pass_failed", error=repr(exc))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval_s):
                    await self._stopping.wait()

    async def sweep(self) -> PassStats:
        """One pass over every shard (see the module docstring)."""
        stats = PassStats()
        sweeper = self.sweeper
        if sweeper is None:
            return stats
        directory = self.archive_dir
        margin = self.margin_ms if directory is not None else None

        async def archive(ids: list[str]) -> int:
            if directory is None or self._stopping.is_set():
                return 0
            return await self._archive(sweeper, directory, ids, stats)

        for shard in range(keys.SHARDS):
            if self._stopping.is_set():
                return stats  # the engine is stopping: the next start sweeps again
            stats.index_dropped += await sweeper.walk(shard, self.clock.now_ms(), margin, archive)
        if self.passes % self.housekeeping_every == 0:
            stats.orphans = await sweeper.drop_orphans()
            stats.dead_letters = await sweeper.trim_dead_letters()
            stats.consumers = await sweeper.drop_idle_consumers(IDLE_CONSUMER_MS)
        self.passes += 1
        return stats

    async def _archive(self, sweeper: Sweeper, directory: Path, ids: list[str], stats: PassStats) -> int:
        """Claim, write and remove `ids`; how many were removed from Redis."""
        token = f"{self.owner}:{secrets.token_hex(4)}"
        now_ms = self.clock.now_ms()
        claimed = await sweeper.claim(ids, token, now_ms, self.lease_ms)
        removed = 0
        by_file: dict[Path, list[Claimed]] = defaultdict(list)
        for c in claimed:
            by_file[archive_file(directory, c)].append(c)
        for path, group in by_file.items():
            try:
                await asyncio.to_thread(append_lines, path, [archive_line(c, now_ms) for c in group])
            except OSError as exc:
                # not removed: the claims run out and a later pass tries again (the incidents
                # are kept alive meanwhile), so a full disk delays the archive, it loses nothing
                log.error("archive_write_failed", file=str(path), error=str(exc), incidents=len(group))
                continue
            for c, done in zip(group, await sweeper.finish(group), strict=True):
                if done:
                    stats.archived += 1
                    removed += 1
                else:
                    stats.duplicates += 1
                    log.warning("archive_claim_lost", incident_id=c.incident_id, file=str(path))
        return removed


def _fields(stats: PassStats) -> dict[str, int]:
    return {f.name: getattr(stats, f.name) for f in dataclasses.fields(stats)}
