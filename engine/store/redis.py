"""RedisStore: the Store protocol on Redis; persists what decide() returned, one atomic step each."""

import asyncio
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError, ResponseError

from engine.errors import ConflictError, StoreError
from engine.events import Decision, Note
from engine.incident import Incident
from engine.outbox import OutboxMessage
from engine.store import keys
from engine.store.base import DeadLetter, OutboxEntry, Pending, UnreadableEntry
from engine.timeline import TimelineEntry, in_time_order

AnyRedis = Redis | RedisCluster
T = TypeVar("T")


def _script(name: str) -> str:
    return resources.files("engine.store").joinpath("scripts", name).read_text()


def raise_if_cancelling() -> None:
    """redis-py can turn a cancelled read into a connection error; do not let a loop swallow the cancel."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _incident(version: bytes | int, data: bytes, duplicates: bytes | int | None) -> Incident:
    """An incident from its hash fields: version `v`, record `d`, repeats counted `n`."""
    inc = Incident.from_json(data)
    inc.version = int(version)
    inc.duplicates += int(duplicates or 0)
    return inc


def _pending(shard: int, entry_id: bytes, fields: dict[bytes, bytes]) -> Pending:
    """An outbox entry, or an unreadable one: never an exception that would stop the whole read."""
    raw = fields.get(b"m", b"")
    try:
        return OutboxEntry(shard, entry_id.decode(), OutboxMessage.from_json(raw))
    except (ValueError, KeyError, TypeError) as exc:
        problem = f"{type(exc).__name__}: {exc}"
        return UnreadableEntry(shard, entry_id.decode(), raw, problem)


def count_field(inc: Incident | None) -> str:
    return f"{inc.status}|{inc.severity}" if inc is not None and inc.is_open else ""


class RedisStore:
    """Incidents, timelines, timers and the outbox in Redis, sharded by hash tag (see keys.py).

    Every decision is one Lua step guarded by the incident's version; a duplicate-only webhook
    is one counter bump on the incident's hash, with no version change.
    """

    def __init__(self, client: AnyRedis, *, retention_ms: int = 30 * 86_400_000) -> None:
        self.client = client
        self.retention_ms = retention_ms
        self._commit = client.register_script(_script("commit.lua"))
        self._pump = client.register_script(_script("pump.lua"))
        self._retry = client.register_script(_script("retry.lua"))
        self._repair = client.register_script(_script("repair.lua"))
        self._read = client.register_script(_script("read.lua"))
        self._count = client.register_script(_script("count.lua"))
        self._dead = client.register_script(_script("dead.lua"))

    async def _call(self, step: str, fn: Callable[[], Any]) -> Any:
        """Await fn(), turning Redis and socket failures into StoreError naming the step."""
        return await self._run(step, fn)

    async def _run(self, step: str, fn: Callable[[], Awaitable[T]]) -> T:
        try:
            return await fn()
        except (RedisError, OSError) as exc:
            raise_if_cancelling()  # redis-py can turn a cancelled read into a connection error
            raise StoreError(f"{step}: {exc}") from exc

    async def ping(self) -> bool:
        return bool(await self._call("ping", self.client.ping))

    async def close(self) -> None:
        await self.client.aclose()

    # incidents -----------------------------------------------------------------------------

    async def load(self, incident_id: str) -> Incident | None:
        try:
            key = keys.incident(incident_id)
        except ValueError:
            return None
        raw = await self._call("load incident", lambda: self.client.hmget(key, ["v", "d", "n"]))
        return None if raw[1] is None else _incident(*raw)

    async def load_by_key(self, incident_key: str) -> Incident | None:
        pointer = keys.pointer(incident_key)
        row = await self._call("load incident by key", lambda: self._read(keys=[pointer]))
        if not row:
            return None
        incident_id, version, data, duplicates = bytes(row[0]).decode(), row[1], row[2], row[3]
        inc = None
        if data is not None:
            inc = _incident(version, data, duplicates)
        else:  # the incident is gone (evicted, deleted): forget the dangling pointer
            ks = [keys.timers(keys.shard_of_key(incident_key)), pointer]
            await self._call(
                "drop dangling pointer", lambda: self._repair(keys=ks, args=["", "", "", incident_id])
            )
        return inc

    async def repair_timer(self, incident_id: str, seen_due_ms: int, due_ms: int | None) -> None:
        """Move a timer the incident no longer wants (or remove it) unless someone moved it meanwhile."""
        timers = keys.timers(keys.shard_of_id(incident_id))
        args: list[str | int] = [incident_id, seen_due_ms, "" if due_ms is None else due_ms, ""]
        # the pointer slot is unused here; the timers key stands in so both keys share a hash slot
        await self._call("repair timer", lambda: self._repair(keys=[timers, timers], args=args))

    async def count_duplicates(self, incident_id: str, n: int) -> None:
        """Count repeats of alerts an incident already has: no rewrite, no version bump."""
        key = keys.incident(incident_id)
        await self._call("count duplicates", lambda: self._count(keys=[key], args=[n]))

    async def commit(
        self, previous: Incident | None, decision: Decision, now_ms: int, outbox: list[OutboxMessage]
    ) -> None:
        """Write the decision if nobody wrote the incident since `previous` was read."""
        inc = decision.incident
        assert inc is not None
        shard = keys.shard_of_id(inc.id)
        expected = 0 if decision.opened else inc.version
        # opening checks the key still points where it did when read ("-": nowhere)
        expected_ptr = (previous.id if previous is not None else "-") if decision.opened else ""
        inc.version = expected + 1
        notes = [
            TimelineEntry(now_ms, e.kind, e.actor, e.text).to_json()
            for e in decision.effects
            if isinstance(e, Note)
        ]
        old_field = "" if decision.opened else count_field(previous)
        args: list[str | int] = [
            expected,
            expected_ptr,
            inc.id,
            inc.to_json(),
            "" if inc.timer_ms is None else inc.timer_ms,
            inc.created_ms,
            old_field,
            count_field(inc),
            self.retention_ms,
            0 if decision.opened else decision.duplicates,  # an opening's repeats were the old incident's
            len(notes),
            *notes,
            len(outbox),
            *(m.to_json() for m in outbox),
        ]
        ks = [
            keys.incident(inc.id),
            keys.timeline(inc.id),
            keys.pointer(inc.key),
            keys.timers(shard),
            keys.outbox(shard),
            keys.index(shard),
            keys.counts(shard),
        ]
        result = await self._call("commit decision", lambda: self._commit(keys=ks, args=args))
        if result != 1:
            inc.version = expected
            raise ConflictError("commit decision: incident changed concurrently")

    async def timeline(self, incident_id: str) -> list[TimelineEntry]:
        """The incident's timeline in time order (see in_time_order for why it is sorted here)."""
        raw = await self._call("read timeline", lambda: self.client.lrange(keys.timeline(incident_id), 0, -1))
        return in_time_order([TimelineEntry.from_json(r) for r in raw])

    async def append_timeline(self, incident_id: str, entry: TimelineEntry) -> None:
        key = keys.timeline(incident_id)
        await self._call("append timeline", lambda: self.client.rpush(key, entry.to_json()))

    async def list_incidents(self, limit: int) -> list[Incident]:
        """The newest `limit` incidents across all shards."""

        async def read() -> list[Incident]:
            async with self.client.pipeline(transaction=False) as pipe:
                for shard in range(keys.SHARDS):
                    pipe.zrevrange(keys.index(shard), 0, limit - 1, withscores=True)
                per_shard = await pipe.execute()
            newest = sorted(
                ((score, member.decode()) for rows in per_shard for member, score in rows), reverse=True
            )[:limit]
            async with self.client.pipeline(transaction=False) as pipe:
                for _, incident_id in newest:
                    pipe.hmget(keys.incident(incident_id), ["v", "d", "n"])
                rows = await pipe.execute()
            out = []
            expired: list[str] = []
            for (_, incident_id), (v, d, n) in zip(newest, rows, strict=True):
                if d is None:  # expired after the retention period
                    expired.append(incident_id)
                    continue
                out.append(_incident(v, d, n))
            for incident_id in expired:
                await self.client.zrem(keys.index(keys.shard_of_id(incident_id)), incident_id)
            return out

        return await self._run("list incidents", read)

    async def open_counts(self) -> dict[tuple[str, str], int]:
        async def read() -> dict[tuple[str, str], int]:
            async with self.client.pipeline(transaction=False) as pipe:
                for shard in range(keys.SHARDS):
                    pipe.hgetall(keys.counts(shard))
                rows = await pipe.execute()
            total: dict[tuple[str, str], int] = {}
            for row in rows:
                for field, n in row.items():
                    state, _, severity = field.decode().partition("|")
                    total[(state, severity)] = total.get((state, severity), 0) + int(n)
            return total

        return await self._run("read counts", read)

    # timers --------------------------------------------------------------------------------

    async def due_timers(self, now_ms: int, limit: int) -> list[tuple[str, int]]:
        async def read() -> list[tuple[str, int]]:
            async with self.client.pipeline(transaction=False) as pipe:
                for shard in range(keys.SHARDS):
                    pipe.zrangebyscore(
                        keys.timers(shard), "-inf", now_ms, start=0, num=limit, withscores=True
                    )
                rows = await pipe.execute()
            due = [(m.decode(), int(score)) for row in rows for m, score in row]
            return sorted(due, key=lambda t: t[1])

        return await self._run("read due timers", read)

    async def next_due_ms(self) -> tuple[int | None, int | None]:
        """Earliest (timer, delivery retry) over all shards; None where there is none."""

        async def read() -> tuple[int | None, int | None]:
            async with self.client.pipeline(transaction=False) as pipe:
                for shard in range(keys.SHARDS):
                    pipe.zrange(keys.timers(shard), 0, 0, withscores=True)
                    pipe.zrange(keys.retries(shard), 0, 0, withscores=True)
                rows = await pipe.execute()
            timers = [int(score) for row in rows[0::2] for _, score in row]
            retries = [int(score) for row in rows[1::2] for _, score in row]
            return (min(timers) if timers else None), (min(retries) if retries else None)

        return await self._run("read next timer", read)

    # outbox --------------------------------------------------------------------------------

    async def ensure_groups(self) -> None:
        for shard in range(keys.SHARDS):
            try:
                await self.client.xgroup_create(
                    keys.outbox(shard), keys.DELIVERY_GROUP, id="0", mkstream=True
                )
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise StoreError(f"create delivery group: {exc}") from exc
            except (RedisError, OSError) as exc:
                raise StoreError(f"create delivery group: {exc}") from exc

    async def read_outbox(self, consumer: str, count: int) -> list[Pending]:
        async def read() -> list[Pending]:
            async with self.client.pipeline(transaction=False) as pipe:
                for shard in range(keys.SHARDS):
                    pipe.xreadgroup(keys.DELIVERY_GROUP, consumer, {keys.outbox(shard): ">"}, count=count)
                rows = await pipe.execute()
            return [
                _pending(shard, entry_id, fields)
                for shard, row in enumerate(rows)
                for _stream, entries in (row or [])
                for entry_id, fields in entries
            ]

        return await self._run("read outbox", read)

    async def claim_stale(self, consumer: str, min_idle_ms: int, count: int) -> list[Pending]:
        """Take over deliveries a dead replica left pending."""

        async def read() -> list[Pending]:
            async with self.client.pipeline(transaction=False) as pipe:
                for shard in range(keys.SHARDS):
                    pipe.xautoclaim(
                        keys.outbox(shard), keys.DELIVERY_GROUP, consumer, min_idle_ms, "0-0", count
                    )
                rows = await pipe.execute()
            return [
                _pending(shard, entry_id, fields)
                for shard, row in enumerate(rows)
                for entry_id, fields in row[1]
                if fields is not None
            ]

        return await self._run("claim stale deliveries", read)

    async def ack(self, entry: OutboxEntry) -> None:
        """Done with an entry: ack and delete it, so the stream holds only undelivered work."""
        stream = keys.outbox(entry.shard)

        async def write() -> None:
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.xack(stream, keys.DELIVERY_GROUP, entry.entry_id)
                pipe.xdel(stream, entry.entry_id)
                await pipe.execute()

        await self._run("ack delivery", write)

    async def dead_letter(self, entry: Pending, reason: str, now_ms: int) -> None:
        """Move an entry from the outbox to the dead letters, in one atomic step."""
        raw = entry.raw if isinstance(entry, UnreadableEntry) else entry.message.to_json().encode()
        ks = [keys.outbox(entry.shard), keys.dead_letters(entry.shard)]
        args: list[str | int | bytes] = [keys.DELIVERY_GROUP, entry.entry_id, raw, reason, now_ms]
        await self._call("dead-letter delivery", lambda: self._dead(keys=ks, args=args))

    async def dead_letters(self, limit: int) -> list[DeadLetter]:
        """The newest `limit` dead letters across all shards."""

        async def read() -> list[DeadLetter]:
            async with self.client.pipeline(transaction=False) as pipe:
                for shard in range(keys.SHARDS):
                    pipe.xrevrange(keys.dead_letters(shard), count=limit)
                rows = await pipe.execute()
            found = [
                DeadLetter(
                    shard,
                    entry_id.decode(),
                    fields[b"m"].decode("utf-8", "replace"),
                    fields[b"reason"].decode("utf-8", "replace"),
                    int(fields[b"at_ms"]),
                )
                for shard, row in enumerate(rows)
                for entry_id, fields in row
            ]
            return sorted(found, key=lambda d: d.at_ms, reverse=True)[:limit]

        return await self._run("read dead letters", read)

    async def retry_later(self, entry: OutboxEntry, retries: list[tuple[int, OutboxMessage]]) -> None:
        """Ack the entry and park its retries (due_ms, message) in one atomic step: one hash slot."""
        ks = [keys.outbox(entry.shard), keys.retries(entry.shard)]
        args: list[str | int] = [keys.DELIVERY_GROUP, entry.entry_id]
        for due_ms, message in retries:
            args += [due_ms, message.to_json()]
        await self._call("schedule delivery retry", lambda: self._retry(keys=ks, args=args))

    async def pump_retries(self, now_ms: int, limit: int = 100) -> int:
        moved = 0
        for shard in range(keys.SHARDS):
            ks = [keys.retries(shard), keys.outbox(shard)]

            def pump(ks: list[str] = ks) -> Any:
                return self._pump(keys=ks, args=[now_ms, limit])

            moved += int(await self._call("move due retries", pump))
        return moved
