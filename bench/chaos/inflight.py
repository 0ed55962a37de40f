"""What a killed replica was holding: the outbox entries pending under its consumer name.

Read from Redis right after the SIGKILL, before another replica claims them (that takes the claim
idle window). Each becomes the messages it would deliver, so the count can say how long after
the kill each one reached its receiver: the reclaim delay of issue 12 (a median of 61 s before
delivery kept its claims alive and claimed after 10 s).
"""

import contextlib
import socket

import redis.asyncio
from redis.exceptions import RedisError

from bench.chaos.policy import CHANNELS
from bench.chaos.sinks import Key
from engine.outbox import OutboxMessage
from engine.store import keys

STREAMS = [
    keys.stream(ch, shard, urgent)
    for ch in (keys.DISPATCH, *CHANNELS)
    for urgent in keys.LANES
    for shard in range(keys.SHARDS)
]


def consumer_name(pid: int) -> str:
    """The delivery consumer a replica reads as (engine/app.py: host name and process id)."""
    return f"{socket.gethostname()}-{pid}"


def _key(raw: bytes) -> Key | None:
    try:
        msg = OutboxMessage.from_json(raw)
    except (ValueError, KeyError, TypeError):
        return None
    channel = msg.address.channel if msg.address is not None else msg.target.partition(":")[0]
    level = msg.level if msg.action.value == "trigger" else 0
    return (msg.incident_id, channel, msg.action.value, level)


async def held_by(client: "redis.asyncio.Redis", pid: int) -> list[Key]:
    """The messages pending under the replica `pid`'s consumer (empty when Redis cannot say)."""
    consumer = consumer_name(pid)
    with contextlib.suppress(RedisError, OSError):
        async with client.pipeline(transaction=False) as pipe:
            for stream in STREAMS:
                pipe.xpending_range(stream, keys.DELIVERY_GROUP, "-", "+", 1000, consumername=consumer)
            rows = await pipe.execute(raise_on_error=False)
        wanted = [
            (stream, row["message_id"])
            for stream, found in zip(STREAMS, rows, strict=True)
            if isinstance(found, list)
            for row in found
        ]
        if not wanted:
            return []
        async with client.pipeline(transaction=False) as pipe:
            for stream, entry_id in wanted:
                pipe.xrange(stream, entry_id, entry_id)
            entries = await pipe.execute(raise_on_error=False)
        held = []
        for got in entries:
            for _id, fields in got if isinstance(got, list) else []:
                key = _key(fields.get(b"m", b""))
                if key is not None:
                    held.append(key)
        return held
    return []
