"""Retention in Redis beyond PEXPIRE: what expiry alone leaves behind, and the archive's claims.

A resolved incident's hash, timeline and key pointer expire `retention_ms` after it resolved
(commit.lua); its thread references that long after its last page (done.lua). Left behind:
- its entry in the shard's index ZSET (list_incidents drops gone entries only among the newest
  page it reads): `walk` drops every entry whose incident is gone;
- a timeline or thread hash written again after the incident was gone (a delivery outcome or a
  re-driven dead letter of an expired incident), and a key pointer naming a gone incident:
  `drop_orphans` finds them with SCAN;
- dead letters (kept for people, never trimmed otherwise): `trim_dead_letters` drops those
  older than the retention period;
- the delivery group's consumer records of replicas long gone: `drop_idle_consumers`.
The archive claims a resolved incident near its expiry (`claim`), writes it out, and then
removes it (`finish`), once across replicas (see archive_claim.lua).
"""

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from importlib import resources
from typing import Any

from redis.exceptions import RedisError

from engine.errors import StoreError
from engine.policy.channels import CHANNEL_KINDS
from engine.store import keys
from engine.store.rediscore import AnyRedis, raise_if_cancelling

BATCH = 500  # index entries read (and PTTLs asked) per round trip
CLAIMS_AT_ONCE = 16
GONE = -2  # PTTL of a key that does not exist
Archive = Callable[[list[str]], Awaitable[int]]  # archives incidents, returns how many it removed
CLOCK_SKEW_MS = 600_000  # how far replicas' clocks (index scores) may be off Redis's own


def script_text(name: str) -> str:
    return resources.files("engine.store").joinpath("scripts", f"{name}.lua").read_text()


@contextlib.contextmanager
def store_errors(step: str) -> Iterator[None]:
    """Redis and socket failures as StoreError naming the step, like the rest of the store."""
    try:
        yield
    except (RedisError, OSError) as exc:
        raise_if_cancelling()
        raise StoreError(f"{step}: {exc}") from exc


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


def _incident_key(incident_id: str) -> str | None:
    try:
        return keys.incident(incident_id)
    except ValueError:
        return None


def _incident_of(name: str) -> str | None:
    """The incident hash that `esc:{sN}:tl:<id>` or `esc:{sN}:th:<id>` belongs to."""
    return _incident_key(name.rpartition(":")[2])


@dataclass(frozen=True, slots=True)
class Claimed:
    """A resolved incident claimed for the archive: everything a line of it holds."""

    incident_id: str
    claim: str  # `token@until_ms`, what finish() compares
    version: int
    duplicates: int
    record: dict[str, Any]  # the incident as stored (Incident.to_json), alerts included
    timeline: list[dict[str, Any]]  # as written, oldest first
    threads: dict[str, str]  # `channel:address` -> the notifier's reference


class Sweeper:
    """The Redis side of retention and archiving; archive.Retention drives it."""

    def __init__(self, client: AnyRedis, retention_ms: int) -> None:
        self.client = client
        self.retention_ms = retention_ms
        self.claim_script = client.register_script(script_text("archive_claim"))
        self.done_script = client.register_script(script_text("archive_done"))
        self.consumers_script = client.register_script(script_text("idle_consumers"))
        self.repair_script = client.register_script(script_text("repair"))

    async def walk(
        self, shard: int, now_ms: int, margin_ms: int | None, archive: Archive | None = None
    ) -> int:
        """Walk the shard's index oldest first, dropping the entries of incidents that are gone;
        hand each batch's incidents due for the archive (resolved, expiring within `margin_ms`)
        to `archive`, which returns how many of them it removed. Returns the entries dropped.
        Only entries old enough to have expired (or to be due) are read: created before
        now - retention (+ margin), give or take clock skew."""
        if self.retention_ms <= 0:
            return 0
        index = keys.index(shard)
        cutoff = now_ms - self.retention_ms + (margin_ms or 0) + CLOCK_SKEW_MS
        start = dropped = 0
        while True:
            with store_errors("read incident index"):
                # by rank (O(log n) a batch, however far in), oldest first; stop past the cutoff
                rows: list[tuple[bytes, float]] = await self.client.zrange(  # type: ignore[assignment]
                    index, start, start + BATCH - 1, withscores=True
                )
                ids = [_text(m) for m, score in rows if score <= cutoff]
                if not ids:
                    return dropped
                async with self.client.pipeline(transaction=False) as pipe:
                    for incident_id in ids:
                        pipe.pttl(keys.incident(incident_id))
                    ttls = [int(t) for t in await pipe.execute()]
                gone = [i for i, ttl in zip(ids, ttls, strict=True) if ttl == GONE]
                if gone:
                    # an incident hash never comes back once gone (a commit needs its version)
                    await self.client.zrem(index, *gone)
            dropped += len(gone)
            due = [i for i, t in zip(ids, ttls, strict=True) if margin_ms is not None and 0 <= t <= margin_ms]
            archived = await archive(due) if due and archive is not None else 0
            if len(ids) < len(rows):
                return dropped  # reached the cutoff
            start += len(ids) - len(gone) - archived  # what is left of this batch is behind us

    async def claim(self, ids: list[str], token: str, now_ms: int, lease_ms: int) -> list[Claimed]:
        """Claim incidents for the archive; those another archiver holds (or gone) are left out."""
        gate = asyncio.Semaphore(CLAIMS_AT_ONCE)

        async def one(incident_id: str) -> Claimed | None:
            ks = [keys.incident(incident_id), keys.timeline(incident_id), keys.threads(incident_id)]
            async with gate:
                with store_errors("claim incident for the archive"):
                    row = await self.claim_script(keys=ks, args=[token, now_ms, lease_ms])
            if not row or not row[2]:
                return None
            claim, version, record, duplicates, timeline, threads, alerts = row
            pairs = [_text(t) for t in threads]
            stored = [_text(a) for a in alerts]
            full = json.loads(record)
            if "alerts" not in full:  # each alert in a field of its own: the line holds them all
                pairs_ = zip(stored[0::2], stored[1::2], strict=True)
                full["alerts"] = {f.removeprefix(keys.ALERT_FIELD): json.loads(a) for f, a in pairs_}
            return Claimed(
                incident_id,
                _text(claim),
                int(version),
                int(duplicates),
                full,
                [json.loads(t) for t in timeline],
                dict(zip(pairs[0::2], pairs[1::2], strict=True)),
            )

        found = await asyncio.gather(*(one(i) for i in ids))
        return [c for c in found if c is not None]

    async def finish(self, claimed: list[Claimed]) -> list[bool]:
        """Remove archived incidents while our claims hold; False for each another took over."""
        gate = asyncio.Semaphore(CLAIMS_AT_ONCE)

        async def one(c: Claimed) -> bool:
            shard = keys.shard_of_id(c.incident_id)
            ks = [keys.incident(c.incident_id), keys.timeline(c.incident_id), keys.threads(c.incident_id)]
            ks.append(keys.index(shard))
            key = c.record.get("key")
            if isinstance(key, str) and keys.shard_of_key(key) == shard:  # same hash slot
                ks.append(keys.pointer(key))
            async with gate:
                with store_errors("remove archived incident"):
                    return bool(await self.done_script(keys=ks, args=[c.claim, c.incident_id]))

        return list(await asyncio.gather(*(one(c) for c in claimed)))

    async def drop_orphans(self) -> int:
        """Timelines and thread hashes without TTL whose incident is gone, and key pointers
        naming a gone incident: written after the incident expired. SCANs the keyspace."""
        dropped = 0
        with store_errors("drop orphaned keys"):
            for pattern, check in ((":t[lh]:*", self._drop_orphans), (":key:*", self._drop_dangling)):
                batch: list[str] = []
                async for raw in self.client.scan_iter(match=f"{keys.PREFIX}:{{s*}}{pattern}", count=1000):
                    batch.append(_text(raw))
                    if len(batch) >= BATCH:
                        dropped += await check(batch)
                        batch = []
                dropped += await check(batch)
        return dropped

    async def _drop_orphans(self, names: list[str]) -> int:
        """`esc:{sN}:tl:<id>` / `th:<id>` with no TTL and no incident `<id>`: deleted."""
        found = [(name, inc) for name in names if (inc := _incident_of(name)) is not None]
        async with self.client.pipeline(transaction=False) as pipe:
            for name, inc in found:
                pipe.pttl(name)
                pipe.exists(inc)
            rows = await pipe.execute()
        # nothing re-creates an incident hash once gone, so check-then-delete is safe here
        orphans = [
            name
            for (name, _), ttl, n in zip(found, rows[0::2], rows[1::2], strict=True)
            if ttl == -1 and not n
        ]
        for name in orphans:
            await self.client.delete(name)
        return len(orphans)

    async def _drop_dangling(self, pointers: list[str]) -> int:
        """Key pointers with no TTL naming an incident that is gone (compare-and-delete)."""
        async with self.client.pipeline(transaction=False) as pipe:
            for name in pointers:
                pipe.pttl(name)
                pipe.get(name)
            rows = await pipe.execute()
        named = [
            (p, _text(v))
            for p, ttl, v in zip(pointers, rows[0::2], rows[1::2], strict=True)
            if ttl == -1 and v
        ]
        checked = [(p, v, inc) for p, v in named if (inc := _incident_key(v)) is not None]
        async with self.client.pipeline(transaction=False) as pipe:
            for _, _, inc in checked:
                pipe.exists(inc)
            exists = await pipe.execute()
        dropped = 0
        for (pointer, incident_id, _), n in zip(checked, exists, strict=True):
            if not n:  # the repair script deletes it only if it still names that incident
                timers = keys.timers(keys.shard_of_id(incident_id))
                await self.repair_script(keys=[timers, pointer], args=["", "", "", incident_id])
                dropped += 1
        return dropped

    async def trim_dead_letters(self) -> int:
        """Dead letters older than the retention period (their incidents are gone by then)."""
        if self.retention_ms <= 0:
            return 0
        with store_errors("trim dead letters"):
            seconds, micros = await self.client.time()
            min_id = seconds * 1000 + micros // 1000 - self.retention_ms  # stream ids are Redis's ms
            trimmed = 0
            for shard in range(keys.SHARDS):
                trimmed += int(
                    await self.client.xtrim(keys.dead_letters(shard), minid=min_id, approximate=False)
                )
        return trimmed

    async def drop_idle_consumers(self, idle_ms: int) -> int:
        """Delivery consumers idle that long with nothing pending: replicas that are gone."""
        dropped = 0
        channels = [keys.DISPATCH, *(kind.name for kind in CHANNEL_KINDS)]
        with store_errors("drop idle consumers"):
            for channel, urgent in ((c, u) for c in channels for u in keys.LANES):
                for shard in range(keys.SHARDS):
                    stream = keys.stream(channel, shard, urgent)
                    args: list[str | int] = [keys.DELIVERY_GROUP, idle_ms]
                    dropped += int(await self.consumers_script(keys=[stream], args=args))
        return dropped
