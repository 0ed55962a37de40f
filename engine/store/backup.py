"""The engine's whole Redis state as versioned JSON lines, and back (`export` / `import`).

Logical, not DUMP/RESTORE: a DUMP payload is refused by an older Redis (the embedded 6.2 would not
take a 7.x one), is opaque to people and tools, and carries what must not come back as is: the
consumers and pending lists of the old deployment's replicas. Here every key is one line, by type
(strings, hashes, lists, sorted sets with their scores, streams with their entries and group
names), with its expiry as an absolute time, so timers keep their due times and retained
incidents their end of retention, across any Redis version and between standalone and Cluster.

Export reads each shard in one Lua step (snapshot.lua): a consistent state per shard, also of a
running engine, whose steps each touch one shard. Import recreates a stream's consumer group at
its start: the stream holds only work not yet done (an acked entry is deleted), so what was
pending on a replica of the old deployment is delivered again, at least once, not lost.

The store's epoch (storewatch.py) is not copied: a restored state must not pose as the state a
watching engine knew. Import keeps the target's epoch when it has one (engines started on that
Redis go on without an alarm) and writes a fresh one otherwise; the header records the source's.
"""

import base64
import datetime
import secrets
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from engine import __version__
from engine.errors import EngineError
from engine.store import keys
from engine.store.rediscore import AnyRedis

FORMAT = "escalation-engine-state"
VERSION = 1
WRITE_BATCH = 1000  # commands per pipeline round trip on import
Record = dict[str, Any]


class BackupError(EngineError):
    """An export file that cannot be imported, or a target that must not be written."""


def _script() -> str:
    return resources.files("engine.store").joinpath("scripts", "snapshot.lua").read_text()


def encode(raw: bytes | str | int) -> Any:
    """A Redis string as JSON: text when it is UTF-8 (all the engine writes), else {"b64": ...}."""
    if isinstance(raw, int):
        raw = str(raw).encode()
    if isinstance(raw, str):
        return raw
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return {"b64": base64.b64encode(raw).decode()}


def decode(value: Any) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, dict) and isinstance(value.get("b64"), str):
        return base64.b64decode(value["b64"], validate=True)
    raise BackupError(f"not a Redis string: {value!r:.80}")


def _pairs(flat: list[Any]) -> list[list[Any]]:
    return [[encode(flat[i]), encode(flat[i + 1])] for i in range(0, len(flat), 2)]


def _value(kind: str, raw: Any) -> Any:
    if kind == "string":
        return encode(raw)
    if kind == "hash":
        return sorted(_pairs(raw), key=lambda p: str(p[0]))  # hash order differs between servers
    if kind == "list":
        return [encode(x) for x in raw]
    if kind == "zset":
        return _pairs(raw)  # by score, then member: the same on every server
    if kind == "set":
        return sorted((encode(x) for x in raw), key=str)
    entries, groups = raw
    return {
        "entries": [[encode(entry_id), _pairs(fields)] for entry_id, fields in entries],
        "groups": sorted(encode(g) for g in groups),
    }


def shard_tag(key: str) -> str | None:
    """`esc:{s3}` for a key of shard 3; None for the keys outside every shard."""
    head, sep, _ = key.partition("}")
    prefix = f"{keys.PREFIX}:{{s"
    if sep and head.startswith(prefix) and head[len(prefix) :].isdigit():
        return head + "}"
    return None


@dataclass(slots=True)
class Summary:
    """What a file holds, for people: counted while exporting or importing."""

    keys: int = 0
    incidents: int = 0
    timers: int = 0
    undelivered: int = 0  # stream entries: decided or queued notifications not yet done
    dead_letters: int = 0
    expired: int = 0  # records whose expiry passed before the import: left out
    by_type: dict[str, int] = field(default_factory=dict)

    def count(self, record: Record) -> None:
        key, kind, value = record["key"], record["type"], record["value"]
        self.keys += 1
        self.by_type[kind] = self.by_type.get(kind, 0) + 1
        self.incidents += ":inc:" in key
        if key.endswith(":timers"):
            self.timers += len(value)
        if kind == "stream":
            if key.endswith(":dead"):
                self.dead_letters += len(value["entries"])
            else:
                self.undelivered += len(value["entries"])

    def __str__(self) -> str:
        text = (
            f"{self.keys} keys: {self.incidents} incidents, {self.timers} timers, "
            f"{self.undelivered} undelivered notifications, {self.dead_letters} dead letters"
        )
        return text + (f" ({self.expired} expired meanwhile, left out)" if self.expired else "")


async def engine_keys(client: AnyRedis, limit: int | None = None) -> list[str]:
    """The engine's keys (every node of a Cluster), in no particular order."""
    found: list[str] = []
    async for raw in client.scan_iter(match=f"{keys.PREFIX}:*", count=1000):
        found.append(raw.decode() if isinstance(raw, bytes) else raw)
        if limit is not None and len(found) >= limit:
            break
    return found


async def export_records(client: AnyRedis, summary: Summary) -> AsyncIterator[Record]:
    """The header, then every key shard by shard (each shard read in one atomic step), then the
    keys outside the shards, then a trailer with the count (a truncated file is refused)."""
    snapshot = client.register_script(_script())
    names = await engine_keys(client)
    by_shard: dict[str, list[str]] = {}
    lone: list[str] = []
    for name in names:
        tag = shard_tag(name)
        if tag is None:
            lone.append(name)
        else:
            by_shard.setdefault(tag, []).append(name)
    seconds, micros = await client.time()
    epoch = await client.get(keys.epoch())
    yield {
        "format": FORMAT,
        "version": VERSION,
        "engine_version": __version__,
        "exported_at": datetime.datetime.fromtimestamp(seconds, datetime.UTC).isoformat(),
        "exported_at_ms": seconds * 1000 + micros // 1000,
        "shards": keys.SHARDS,
        "source_epoch": None if epoch is None else encode(epoch),
    }
    # every shard, even one without keys at the scan: its index may name incidents opened since
    groups: list[tuple[str, list[str]]] = []
    for shard in range(keys.SHARDS):
        index = keys.index(shard)
        tag = index.removesuffix(":index")
        groups.append((tag, [index, *sorted(set(by_shard.pop(tag, [])) - {index})]))
    lone += [name for names in by_shard.values() for name in names]  # a tag of no shard: key by key
    groups += [("", [name]) for name in sorted(lone) if name != keys.epoch()]
    for tag, group in groups:
        now_ms, rows = await snapshot(keys=group, args=[tag])
        records = [_record(row, int(now_ms)) for row in rows]
        for record in sorted(records, key=lambda r: str(r["key"])):
            summary.count(record)
            yield record
    yield {"end": True, "records": summary.keys}


def _record(row: list[Any], now_ms: int) -> Record:
    raw_key, kind, pttl, value = row
    kind = encode(kind)
    expire_at = None
    if int(pttl) >= 0:  # to the second: a second export of an import then reads the same time
        expire_at = round((now_ms + int(pttl)) / 1000) * 1000
    return {"key": encode(raw_key), "type": kind, "expire_at_ms": expire_at, "value": _value(kind, value)}


def check_file(lines: Iterable[tuple[int, Any]]) -> tuple[Record, int]:
    """The header and the number of records of an export, checked whole (line number, parsed
    line) before anything is written: a truncated or foreign file is refused up front."""
    it = iter(lines)
    _, first = next(it, (1, None))
    header = check_header(first)
    for count, (n, record) in enumerate(it):
        if isinstance(record, dict) and record.get("end") is True:
            if record.get("records") != count:
                raise BackupError(
                    f"line {n}: the trailer counts {record.get('records')} records, found {count}"
                )
            if next(it, None) is not None:
                raise BackupError(f"line {n + 1}: lines after the trailer")
            return header, count
        check_record(n, record)
    raise BackupError("the file ends without its trailer line: truncated (an export that did not finish?)")


def check_header(header: Any) -> Record:
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise BackupError(f"not an escalation-engine export (the first line is no {FORMAT} header)")
    version = header.get("version")
    if not isinstance(version, int) or version > VERSION:
        made_by = header.get("engine_version", "?")
        raise BackupError(
            f"export format version {version} (by escalation-engine {made_by}): this one reads {VERSION}"
        )
    if header.get("shards") != keys.SHARDS:
        raise BackupError(f"export of {header.get('shards')} shards; this engine has {keys.SHARDS}")
    return header


def check_record(n: int, record: Any) -> None:
    kinds: dict[str, type | tuple[type, ...]] = {
        "string": (str, dict),
        "hash": list,
        "list": list,
        "zset": list,
        "set": list,
        "stream": dict,
    }
    if not isinstance(record, dict) or not isinstance(record.get("key"), str):
        raise BackupError(f"line {n}: not a key record")
    key, kind = record["key"], record.get("type")
    if not key.startswith(f"{keys.PREFIX}:"):
        raise BackupError(f"line {n}: {key!r} is not an engine key")
    if kind not in kinds or not isinstance(record.get("value"), kinds[kind]):
        raise BackupError(f"line {n}: {key}: bad type {kind!r} or value")
    expire_at = record.get("expire_at_ms")
    if expire_at is not None and not isinstance(expire_at, int):
        raise BackupError(f"line {n}: {key}: expire_at_ms must be a number or null")


def _commands(record: Record) -> Iterator[tuple[Any, ...]]:
    """The Redis commands that recreate one record's key."""
    key, kind, value = record["key"], record["type"], record["value"]
    if kind == "string":
        yield ("SET", key, decode(value))
    elif kind == "hash":
        for i in range(0, len(value), WRITE_BATCH):
            yield ("HSET", key, *(decode(x) for pair in value[i : i + WRITE_BATCH] for x in pair))
    elif kind == "list":
        for i in range(0, len(value), WRITE_BATCH):
            yield ("RPUSH", key, *(decode(x) for x in value[i : i + WRITE_BATCH]))
    elif kind == "zset":
        for i in range(0, len(value), WRITE_BATCH):
            yield ("ZADD", key, *(x for m, s in value[i : i + WRITE_BATCH] for x in (decode(s), decode(m))))
    elif kind == "set":
        yield ("SADD", key, *(decode(x) for x in value))
    else:
        for entry_id, fields in value["entries"]:
            yield ("XADD", key, decode(entry_id), *(decode(x) for pair in fields for x in pair))
        for group in value["groups"]:
            # from the start: every entry still in the stream is work not yet done
            yield ("XGROUP", "CREATE", key, decode(group), "0", "MKSTREAM")
    if record.get("expire_at_ms") is not None:
        yield ("PEXPIREAT", key, record["expire_at_ms"])


async def import_records(
    client: AnyRedis, records: Iterable[Record], *, force: bool, summary: Summary
) -> None:
    """Write the records into the target. A target holding engine keys is refused unless
    `force`, which first deletes them (all but the epoch: engines watching it see no change)."""
    found = [k for k in await engine_keys(client, limit=100) if k != keys.epoch()]
    if found and not force:
        raise BackupError(
            f"the target Redis already holds engine state (e.g. {sorted(found)[0]}): import into an empty "
            "one, or pass --force to replace that state (stop the engines on it first)"
        )
    if found:
        await _execute(
            client, [("UNLINK", name) for name in await engine_keys(client) if name != keys.epoch()]
        )
    seconds, micros = await client.time()
    now_ms = seconds * 1000 + micros // 1000
    pending: list[tuple[Any, ...]] = []
    for record in records:
        if record.get("expire_at_ms") is not None and record["expire_at_ms"] <= now_ms:
            summary.expired += 1
            continue
        summary.count(record)
        pending.extend(_commands(record))
        if len(pending) >= WRITE_BATCH:
            await _execute(client, pending)
            pending = []
    await _execute(client, pending)
    await client.set(keys.epoch(), secrets.token_hex(8), nx=True)  # written last: the state is whole


async def _execute(client: AnyRedis, commands: list[tuple[Any, ...]]) -> None:
    async with client.pipeline(transaction=False) as pipe:
        for command in commands:
            pipe.execute_command(*command)
        await pipe.execute()
