"""The outbox in Redis: per shard, the decided stream and one stream per channel kind, each with
the delivery consumer group, a retry set, and the shard's dead letters. Each queue has two
lanes (two streams, two retry sets): the urgent one is read first."""

from collections.abc import Iterable
from typing import Any

from redis.exceptions import RedisError, ResponseError

from engine.errors import StoreError
from engine.outbox import OutboxMessage
from engine.store import keys
from engine.store.base import DeadLetter, OutboxEntry, Pending, UnreadableEntry
from engine.store.shared import RedisShared

Lane = tuple[int, bool]  # (shard, urgent): one stream of a queue


# a queue's streams, the urgent lanes first (a read takes them in this order)
_ALL_LANES: list[Lane] = [(shard, urgent) for urgent in keys.LANES for shard in range(keys.SHARDS)]
_URGENT_LANES: list[Lane] = [lane for lane in _ALL_LANES if lane[1]]


def _lanes(urgent_only: bool = False) -> list[Lane]:
    return _URGENT_LANES if urgent_only else _ALL_LANES


def _pending(lane: Lane, entry_id: bytes, fields: dict[bytes, bytes], channel: str) -> Pending:
    """An outbox entry, or an unreadable one: never an exception that would stop the whole read."""
    raw = fields.get(b"m", b"")
    shard, urgent = lane
    try:
        return OutboxEntry(shard, entry_id.decode(), OutboxMessage.from_json(raw), channel, urgent)
    except (ValueError, KeyError, TypeError) as exc:
        problem = f"{type(exc).__name__}: {exc}"
        return UnreadableEntry(shard, entry_id.decode(), raw, problem, channel, urgent)


def _entries(rows: list[Any], lanes: list[Lane], channel: str) -> list[Pending]:
    """XREADGROUP's [stream, [(id, fields), ...]] rows as entries of the lanes those streams are."""
    lane_of = {keys.stream(channel, *lane).encode(): lane for lane in lanes}
    return [
        _pending(lane_of[bytes(stream)], entry_id, fields, channel)
        for stream, entries in rows
        for entry_id, fields in entries
    ]


def _channel_of(message: OutboxMessage) -> str:
    """Where a message goes: its address's channel queue once narrowed, else the dispatch stream."""
    return message.address.channel if message.address is not None else keys.DISPATCH


def _stream_of(entry: Pending) -> str:
    """The stream an entry was read from."""
    return keys.stream(entry.channel, entry.shard, entry.urgent)


def _text(value: bytes | None) -> str:
    return (value or b"").decode("utf-8", "replace")


class RedisOutbox(RedisShared):
    """Outbox streams: read by the delivery group, claimed from dead replicas, acked, moved on."""

    async def ensure_groups(self, channels: Iterable[str] = (keys.DISPATCH,)) -> None:
        for channel in channels:
            for lane in _lanes():
                try:
                    await self.client.xgroup_create(
                        keys.stream(channel, *lane), keys.DELIVERY_GROUP, id="0", mkstream=True
                    )
                except ResponseError as exc:
                    if "BUSYGROUP" not in str(exc):
                        raise StoreError(f"create delivery group: {exc}") from exc
                except (RedisError, OSError) as exc:
                    raise StoreError(f"create delivery group: {exc}") from exc

    async def read_outbox(
        self, consumer: str, count: int, channel: str = keys.DISPATCH, urgent_only: bool = False
    ) -> list[Pending]:
        """Up to `count` new entries of each lane of each shard, the urgent lanes' first."""
        lanes = _lanes(urgent_only)
        streams = [keys.stream(channel, *lane) for lane in lanes]
        if self.batcher is not None:  # standalone: every shard's stream in one command
            group: list[str | int] = ["GROUP", keys.DELIVERY_GROUP, consumer, "COUNT", count]
            rows = await self.command(
                "read outbox", "XREADGROUP", *group, "STREAMS", *streams, *[">"] * len(streams)
            )
            return _entries(rows or [], lanes, channel)

        async def read() -> list[Pending]:  # a Cluster: one command per shard (each its own slot)
            async with self.client.pipeline(transaction=False) as pipe:
                for stream in streams:
                    pipe.xreadgroup(keys.DELIVERY_GROUP, consumer, {stream: ">"}, count=count)
                rows = await pipe.execute()
            return _entries([r for row in rows for r in (row or [])], lanes, channel)

        return await self._run("read outbox", read)

    async def claim_stale(
        self,
        consumer: str,
        min_idle_ms: int,
        count: int,
        channel: str = keys.DISPATCH,
        urgent_only: bool = False,
    ) -> list[Pending]:
        """Take over deliveries a dead replica left pending (of the urgent lanes only, or of both)."""
        lanes = _lanes(urgent_only)

        async def read() -> list[Pending]:
            async with self.client.pipeline(transaction=False) as pipe:
                for lane in lanes:
                    pipe.xautoclaim(
                        keys.stream(channel, *lane), keys.DELIVERY_GROUP, consumer, min_idle_ms, "0-0", count
                    )
                rows = await pipe.execute()
            return [
                _pending(lane, entry_id, fields, channel)
                for lane, row in zip(lanes, rows, strict=True)
                for entry_id, fields in row[1]
                if fields is not None
            ]

        return await self._run("claim stale deliveries", read)

    async def keep(self, consumer: str, entries: list[Pending], channel: str = keys.DISPATCH) -> None:
        """Claim `entries` again for `consumer` (resetting their idle time): still being worked on."""

        async def touch() -> None:
            async with self.client.pipeline(transaction=False) as pipe:
                for e in entries:
                    pipe.xclaim(_stream_of(e), keys.DELIVERY_GROUP, consumer, 0, [e.entry_id], justid=True)
                await pipe.execute()

        await self._run("keep deliveries", touch)

    async def ack(self, entry: OutboxEntry) -> None:
        """Done with an entry: ack and delete it, so the stream holds only undelivered work."""
        stream = _stream_of(entry)

        async def write() -> None:
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.xack(stream, keys.DELIVERY_GROUP, entry.entry_id)
                pipe.xdel(stream, entry.entry_id)
                await pipe.execute()

        await self._run("ack delivery", write)

    async def move(
        self, entry: Pending, sends: list[OutboxMessage], parked: list[tuple[int, OutboxMessage]]
    ) -> bool:
        """Ack `entry` and, in the same atomic step, queue `sends` on their channels' streams and
        park `parked` (due_ms, message) in their retry sets: all in the entry's hash slot.
        False (and nothing queued) when this consumer no longer held the entry."""
        ks = [_stream_of(entry)]
        args: list[str | int] = [keys.DELIVERY_GROUP, entry.entry_id]

        def slot(key: str) -> int:
            if key not in ks:
                ks.append(key)
            return ks.index(key) + 1  # Lua indexes KEYS from 1

        for message in sends:
            where = keys.stream(_channel_of(message), entry.shard, message.urgent)
            args += [slot(where), "", message.to_json()]
        for due_ms, message in parked:
            where = keys.parked(_channel_of(message), entry.shard, message.urgent)
            args += [slot(where), due_ms, message.to_json()]
        return bool(await self._call("move delivery", lambda: self.scripts["move"](keys=ks, args=args)))

    async def retry_later(self, entry: OutboxEntry, retries: list[tuple[int, OutboxMessage]]) -> None:
        """Ack the entry and park its retries (due_ms, message) in one atomic step."""
        await self.move(entry, [], retries)

    async def delivered(self, entry: OutboxEntry, thread: str | None = None) -> None:
        """Ack a sent entry, keeping the notifier's thread reference in the same step."""
        if thread is None:
            await self.ack(entry)
            return
        msg = entry.message
        assert msg.address is not None
        ks = [_stream_of(entry), keys.threads(msg.incident_id)]
        field = f"{msg.address.channel}:{msg.address.name}"
        args: list[str | int] = [keys.DELIVERY_GROUP, entry.entry_id, field, thread, self.retention_ms]
        await self._call("ack delivery", lambda: self.scripts["done"](keys=ks, args=args))

    async def pump_retries(self, now_ms: int, limit: int = 100, channel: str = keys.DISPATCH) -> int:
        pairs = [[keys.parked(channel, *lane), keys.stream(channel, *lane)] for lane in _lanes()]
        if self.batcher is not None:  # standalone: every shard's pairs of keys in one script
            ks = [k for pair in pairs for k in pair]
            return int(
                await self._call(
                    "move due retries", lambda: self.scripts["pump"](keys=ks, args=[now_ms, limit])
                )
            )
        moved = 0
        for ks in pairs:

            def pump(ks: list[str] = ks) -> Any:
                return self.scripts["pump"](keys=ks, args=[now_ms, limit])

            moved += int(await self._call("move due retries", pump))
        return moved

    async def dead_letter(
        self, entry: Pending, reason: str, now_ms: int, failover: OutboxMessage | None = None
    ) -> str | None:
        """Move an entry from its stream to the dead letters and queue its `failover`, in one step.
        Returns the dead letter's id (DeadLetter.id); None when this consumer no longer held it."""
        raw = entry.raw if isinstance(entry, UnreadableEntry) else entry.message.to_json().encode()
        ks = [_stream_of(entry), keys.dead_letters(entry.shard)]
        args: list[str | int | bytes] = [
            keys.DELIVERY_GROUP,
            entry.entry_id,
            raw,
            reason,
            now_ms,
            entry.channel,
        ]
        if failover is not None:
            ks.append(keys.stream(_channel_of(failover), entry.shard, failover.urgent))
            args.append(failover.to_json())
        dead_id = await self._call("dead-letter delivery", lambda: self.scripts["dead"](keys=ks, args=args))
        if not dead_id:
            return None
        return f"{entry.shard}-{dead_id.decode() if isinstance(dead_id, bytes) else dead_id}"

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
                    _text(fields.get(b"m")),
                    _text(fields.get(b"reason")),
                    int(fields.get(b"at_ms", 0)),
                    _text(fields.get(b"channel")),
                )
                for shard, row in enumerate(rows)
                for entry_id, fields in row
            ]
            return sorted(found, key=lambda d: d.at_ms, reverse=True)[:limit]

        return await self._run("read dead letters", read)

    async def redrive(self, dead_letter_id: str) -> OutboxMessage | None:
        """Queue a dead letter again, from its first attempt; None when there is no such dead letter
        (or it was re-driven already). Raises ValueError when its content is not an outbox message."""
        head, _, entry_id = dead_letter_id.partition("-")
        if not (head.isdigit() and int(head) < keys.SHARDS and entry_id):
            return None
        shard, dead = int(head), keys.dead_letters(int(head))
        try:
            rows = await self._call("read dead letter", lambda: self.client.xrange(dead, entry_id, entry_id))
        except StoreError as exc:
            if "Invalid stream ID" in str(exc):
                return None
            raise
        if not rows:
            return None
        message = OutboxMessage.from_json(rows[0][1].get(b"m", b"")).first_attempt()
        ks = [dead, keys.stream(_channel_of(message), shard, message.urgent)]
        args = [entry_id, message.to_json()]
        done = await self._call("redrive dead letter", lambda: self.scripts["redrive"](keys=ks, args=args))
        return message if int(done) else None

    async def outbox_stats(self, now_ms: int, channel: str = keys.DISPATCH) -> tuple[int, int, int]:
        """(pending entries, parked retries, age in ms of the oldest pending entry or 0), both
        lanes together."""

        async def read() -> tuple[int, int, int]:
            async with self.client.pipeline(transaction=False) as pipe:
                for lane in _lanes():
                    pipe.xlen(keys.stream(channel, *lane))
                    pipe.zcard(keys.parked(channel, *lane))
                    pipe.xrange(keys.stream(channel, *lane), count=1)
                rows = await pipe.execute()
            pending = sum(int(n) for n in rows[0::3])
            retry = sum(int(n) for n in rows[1::3])
            # a stream entry's id starts with the ms it was added at
            firsts = [int(row[0][0].split(b"-")[0]) for row in rows[2::3] if row]
            return pending, retry, max(0, now_ms - min(firsts)) if firsts else 0

        return await self._run("read outbox stats", read)
