"""The outbox in Redis: a stream per shard with a consumer group, retries, dead letters."""

from typing import Any

from redis.exceptions import RedisError, ResponseError

from engine.errors import StoreError
from engine.outbox import OutboxMessage
from engine.store import keys
from engine.store.base import DeadLetter, OutboxEntry, Pending, UnreadableEntry
from engine.store.rediscore import RedisCore


def _pending(shard: int, entry_id: bytes, fields: dict[bytes, bytes]) -> Pending:
    """An outbox entry, or an unreadable one: never an exception that would stop the whole read."""
    raw = fields.get(b"m", b"")
    try:
        return OutboxEntry(shard, entry_id.decode(), OutboxMessage.from_json(raw))
    except (ValueError, KeyError, TypeError) as exc:
        problem = f"{type(exc).__name__}: {exc}"
        return UnreadableEntry(shard, entry_id.decode(), raw, problem)


class RedisOutbox(RedisCore):
    """Outbox streams: read by the delivery group, claimed from dead replicas, acked, retried."""

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
        await self._call("dead-letter delivery", lambda: self.scripts["dead"](keys=ks, args=args))

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
        await self._call("schedule delivery retry", lambda: self.scripts["retry"](keys=ks, args=args))

    async def pump_retries(self, now_ms: int, limit: int = 100) -> int:
        moved = 0
        for shard in range(keys.SHARDS):
            ks = [keys.retries(shard), keys.outbox(shard)]

            def pump(ks: list[str] = ks) -> Any:
                return self.scripts["pump"](keys=ks, args=[now_ms, limit])

            moved += int(await self._call("move due retries", pump))
        return moved

    async def outbox_stats(self, now_ms: int) -> tuple[int, int, int]:
        """(pending entries, parked retries, age in ms of the oldest pending entry or 0)."""

        async def read() -> tuple[int, int, int]:
            async with self.client.pipeline(transaction=False) as pipe:
                for shard in range(keys.SHARDS):
                    pipe.xlen(keys.outbox(shard))
                    pipe.zcard(keys.retries(shard))
                    pipe.xrange(keys.outbox(shard), count=1)
                rows = await pipe.execute()
            pending = sum(int(n) for n in rows[0::3])
            retry = sum(int(n) for n in rows[1::3])
            # a stream entry's id starts with the ms it was added at
            firsts = [int(row[0][0].split(b"-")[0]) for row in rows[2::3] if row]
            return pending, retry, max(0, now_ms - min(firsts)) if firsts else 0

        return await self._run("read outbox stats", read)
