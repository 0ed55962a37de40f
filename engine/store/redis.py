"""RedisStore: the Store protocol on Redis; persists what decide() returned, one atomic step each.

Incidents, timelines and timers here; the outbox in outbox.py; the client and scripts in rediscore.py.
"""

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import TypeVar

from engine.alerts import Alert
from engine.errors import ConflictError, StoreError
from engine.events import Decision, Note
from engine.incident import AlertState, Incident
from engine.outbox import OutboxMessage
from engine.store import keys
from engine.store.base import DueTimer
from engine.store.outbox import RedisOutbox
from engine.store.rediscore import AnyRedis, Arg, Observer, raise_if_cancelling
from engine.timeline import TimelineEntry, in_time_order

__all__ = ["AnyRedis", "Observer", "RedisStore", "raise_if_cancelling"]


ALERT = keys.ALERT_FIELD
SHOWN_SCAN = 1_000  # alert fields load_shown() looks at, at most, for the firing ones
CLUSTER_CALLS = 16  # scripts in flight at once for one caller on Cluster, where each key is its own
T = TypeVar("T")


def _incident(
    version: bytes | int, data: bytes, duplicates: bytes | int | None, alerts: dict[str, AlertState]
) -> Incident:
    """An incident from its hash fields: version `v`, record `d`, repeats counted `n`, and the
    alerts read (`f:<fingerprint>`: all of them, or those a webhook names)."""
    inc = Incident.from_json(data, alerts)
    inc.version = int(version)
    inc.duplicates += int(duplicates or 0)
    return inc


def from_hash(row: dict[bytes, bytes]) -> Incident | None:
    """An incident from its whole hash (HGETALL), every alert included; None if it is gone."""
    if b"d" not in row:
        return None
    prefix = ALERT.encode()
    alerts = {}
    for name, value in row.items():
        if name.startswith(prefix):
            fp = name[len(prefix) :].decode()
            alerts[fp] = AlertState.from_json(fp, value)
    return _incident(row.get(b"v", 0), row[b"d"], row.get(b"n"), alerts)


def changed_alerts(previous: Incident | None, decision: Decision) -> list[str | bytes]:
    """(field, state) pairs of the alerts a decision changed: states are replaced, never edited,
    so a changed one is not the object read. A record read with its alerts inline gets all."""
    inc = decision.incident
    assert inc is not None
    before = {} if previous is None or decision.opened or previous.alerts_inline else previous.alerts
    out: list[str | bytes] = []
    for fp, state in inc.alerts.items():
        if before.get(fp) is not state:
            out += [ALERT + fp, state.to_json()]
    return out


def count_field(inc: Incident | None) -> str:
    return f"{inc.status}|{inc.severity}" if inc is not None and inc.is_open else ""


Commit = tuple[Incident | None, Decision, int, list[OutboxMessage]]  # previous, decision, now, outbox


def _commit_call(
    previous: Incident | None, decision: Decision, now_ms: int, outbox: list[OutboxMessage], retention_ms: int
) -> tuple[list[str], list[str | int | bytes]]:
    """The commit script's keys and arguments for a decision; sets the incident's new version."""
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
    args: list[str | int | bytes] = [
        expected,
        expected_ptr,
        inc.id,
        inc.to_json(),
        "" if inc.timer_ms is None else inc.timer_ms,
        inc.created_ms,
        old_field,
        count_field(inc),
        retention_ms,
        0 if decision.opened else decision.duplicates,  # an opening's repeats were the old incident's
        len(notes),
        *notes,
        len(outbox),
        *(m.to_json() for m in outbox),
    ]
    alerts = changed_alerts(previous, decision)
    args += [len(alerts) // 2, *alerts]
    ks = [
        keys.incident(inc.id),
        keys.timeline(inc.id),
        keys.pointer(inc.key),
        keys.timers(shard),
        keys.outbox(shard),
        keys.index(shard),
        keys.counts(shard),
        keys.stream(keys.DISPATCH, shard, urgent=True),
    ]
    return ks, args


def _put_back(decision: Decision) -> None:
    """A commit not taken: the incident keeps the version it was read at."""
    assert decision.incident is not None
    decision.incident.version = 0 if decision.opened else decision.incident.version - 1


class RedisStore(RedisOutbox):
    """Incidents, timelines, timers and the outbox in Redis, sharded by hash tag (see keys.py).

    Every decision is one Lua step guarded by the incident's version; a duplicate-only webhook
    is one counter bump on the incident's hash, with no version change.
    """

    # incidents -----------------------------------------------------------------------------

    async def load(self, incident_id: str, alerts: bool = True) -> Incident | None:
        """The incident with all its alerts, or (alerts=False) its record and aggregate only."""
        try:
            key = keys.incident(incident_id)
        except ValueError:
            return None
        if alerts:
            return from_hash(await self.command("load incident", "HGETALL", key))
        raw = await self.command("load incident", "HMGET", key, "v", "d", "n")
        return None if raw[1] is None else _incident(raw[0], raw[1], raw[2], {})

    async def load_shown(self, incident_id: str, limit: int) -> Incident | None:
        """The incident with at most `limit` of its alerts, the firing ones first among the first
        SHOWN_SCAN looked at: what a message shows, read at the same cost at 10 alerts as at 10,000.
        A record from before the labels aggregate was kept (Incident.common) comes with them all."""
        try:
            key = keys.incident(incident_id)
        except ValueError:
            return None
        shown = self.scripts["shown"]
        row = await self._call("load incident", lambda: shown(keys=[key], args=[limit, SHOWN_SCAN]))
        if not row:
            return None
        fields = dict(zip(row[3::2], row[4::2], strict=True))  # the alerts read, as HGETALL names them
        inc = from_hash({b"v": row[0] or b"0", b"d": row[1], b"n": row[2] or b"0", **fields})
        if inc is not None and inc.common is None and (inc.alert_total or 0) > len(inc.alerts):
            return await self.load(incident_id)
        return inc

    async def load_by_key(self, incident_key: str, fingerprints: list[str] | None = None) -> Incident | None:
        """The incident a key points at, with only the named alerts (the aggregate covers the rest),
        and its only alert when it has one (whose labels the next alert to join is compared with)."""
        pointer = keys.pointer(incident_key)
        fps = list(dict.fromkeys(fingerprints or ()))
        fields = [ALERT + fp for fp in fps]
        read = self.scripts["read"]
        row = await self._call("load incident by key", lambda: read(keys=[pointer], args=fields))
        if not row:
            return None
        incident_id, version, data, duplicates = bytes(row[0]).decode(), row[1], row[2], row[3]
        inc = None
        if data is not None:
            named = row[4 : 4 + len(fps)]
            found = {fp: AlertState.from_json(fp, v) for fp, v in zip(fps, named, strict=True) if v}
            if len(row) > 4 + len(fps):  # its only alert (see read.lua)
                fp = bytes(row[-2])[len(ALERT) :].decode()
                found.setdefault(fp, AlertState.from_json(fp, row[-1]))
            inc = _incident(version, data, duplicates, found)
        else:  # the incident is gone (evicted, deleted): forget the dangling pointer
            ks = [keys.timers(keys.shard_of_key(incident_key)), pointer]
            await self._call(
                "drop dangling pointer",
                lambda: self.scripts["repair"](keys=ks, args=["", "", "", incident_id]),
            )
        return inc

    async def repair_timer(self, incident_id: str, seen_due_ms: int, due_ms: int | None) -> None:
        """Move a timer the incident no longer wants (or remove it) unless someone moved it meanwhile."""
        timers = keys.timers(keys.shard_of_id(incident_id))
        args: list[str | int] = [incident_id, seen_due_ms, "" if due_ms is None else due_ms, ""]
        # the pointer slot is unused here; the timers key stands in so both keys share a hash slot
        await self._call("repair timer", lambda: self.scripts["repair"](keys=[timers, timers], args=args))

    async def count_duplicates(self, incident_id: str, n: int) -> None:
        """Count repeats of alerts an incident already has: no rewrite, no version bump."""
        key = keys.incident(incident_id)
        await self.durable("count duplicates", "count", [key], [n])

    async def count_repeats(self, groups: Sequence[tuple[str, Sequence[Alert]]]) -> list[str | None]:
        """The duplicate fast path, per (incident key, alerts): where every alert is a repeat of
        what the key's open incident holds, count them (as count_duplicates would) and give the
        incident's id; None, having written nothing for that key, otherwise. Reads nothing out:
        one script for them all on a standalone Redis, one per key (its own slot) on Cluster."""
        if self.batcher is not None:
            return await self._repeats(groups)
        return [found for [found] in await self._side_by_side([partial(self._repeats, [g]) for g in groups])]

    async def _side_by_side(self, calls: Sequence[Callable[[], Awaitable[T]]]) -> list[T]:
        """Every call's result, in order: all at once where the batcher pipelines them, at most
        CLUSTER_CALLS in flight on Cluster (each its own script call and connection there)."""
        size = max(len(calls), 1) if self.batcher is not None else CLUSTER_CALLS
        out: list[T] = []
        for first in range(0, len(calls), size):
            out += await asyncio.gather(*(call() for call in calls[first : first + size]))
        return out

    async def _repeats(self, groups: Sequence[tuple[str, Sequence[Alert]]]) -> list[str | None]:
        pointers = [keys.pointer(key) for key, _ in groups]
        args: list[Arg] = [len(alerts) for _, alerts in groups]
        for _, alerts in groups:
            for a in alerts:
                args += [
                    ALERT + a.fingerprint,
                    a.status.value,
                    a.starts_at_ms,
                    "" if a.ends_at_ms is None else a.ends_at_ms,
                ]
        found = await self.durable("count repeats", "repeat", pointers, args)
        return [None if f is None else bytes(f).decode() for f in found]

    async def settled(self, incident_id: str) -> None:
        """With min_replicas, a write replicas must acknowledge before a no-change answer: the state
        it rests on may be a commit refused as not replicated, still only on the master."""
        if self.min_replicas > 0:
            await self.count_duplicates(incident_id, 0)  # HINCRBY 0: a write, replicated, changes nothing

    async def commit(
        self, previous: Incident | None, decision: Decision, now_ms: int, outbox: list[OutboxMessage]
    ) -> None:
        """Write the decision if nobody wrote the incident since `previous` was read."""
        [written] = await self.commit_many([(previous, decision, now_ms, outbox)])
        if isinstance(written, StoreError):
            raise written
        if not written:
            raise ConflictError("commit decision: incident changed concurrently")

    async def commit_many(self, commits: Sequence[Commit]) -> list[bool | StoreError]:
        """Several decisions side by side, each its own guarded step: True where written, False
        where the incident changed since it was read, a StoreError where Redis failed. On a
        standalone Redis without required replicas they share the turn's pipeline with no task
        each (a timer storm's batch)."""
        calls = [_commit_call(*c, self.retention_ms) for c in commits]
        if self.batcher is not None and self.min_replicas <= 0:  # futures in the turn's pipeline
            futures = [self.scripts["commit"](keys=ks, args=args) for ks, args in calls]
            started = time.perf_counter()
            replies = await asyncio.gather(*futures, return_exceptions=True)
            failed = any(isinstance(r, BaseException) for r in replies)
            self.observe("commit decisions", time.perf_counter() - started, not failed)
        else:  # durable: with redis_min_replicas, WAITed for on the same connection (see RedisCore)
            steps = [self.durable("commit decision", "commit", ks, args) for ks, args in calls]
            replies = await asyncio.gather(*steps, return_exceptions=True)
        out: list[bool | StoreError] = []
        for (_, decision, _, _), reply in zip(commits, replies, strict=True):
            if reply != 1:
                _put_back(decision)
            if isinstance(reply, StoreError):
                out.append(reply)
            elif isinstance(reply, Exception):
                out.append(StoreError(f"commit decision: {reply}"))
            elif isinstance(reply, BaseException):
                raise reply  # a cancellation
            else:
                out.append(reply == 1)
        return out

    async def timeline(self, incident_id: str) -> list[TimelineEntry]:
        """The incident's timeline in time order (see in_time_order for why it is sorted here)."""
        raw = await self._call("read timeline", lambda: self.client.lrange(keys.timeline(incident_id), 0, -1))
        return in_time_order([TimelineEntry.from_json(r) for r in raw])

    async def append_timeline(self, incident_id: str, entry: TimelineEntry) -> None:
        pair = [keys.incident(incident_id), keys.timeline(incident_id)]  # one hash slot
        await self._call("append timeline", lambda: self.scripts["append"](keys=pair, args=[entry.to_json()]))

    async def list_incidents(self, limit: int, alerts: int | None = None) -> list[Incident]:
        """The newest `limit` incidents across all shards, each with every alert, or (`alerts`) with
        at most that many as load_shown() reads them: a list costs the same whatever they hold."""
        if alerts is not None:
            newest = await self._run("list incidents", lambda: self._newest(limit))
            found = await self._side_by_side([partial(self.load_shown, i, alerts) for _, i in newest])
            await self._forget([i for (_, i), inc in zip(newest, found, strict=True) if inc is None])
            return [inc for inc in found if inc is not None]

        async def read() -> list[Incident]:
            newest = await self._newest(limit)
            async with self.client.pipeline(transaction=False) as pipe:
                for _, incident_id in newest:
                    pipe.hgetall(keys.incident(incident_id))
                rows = await pipe.execute()
            out = []
            expired: list[str] = []
            for (_, incident_id), row in zip(newest, rows, strict=True):
                inc = from_hash(row)
                if inc is None:  # expired after the retention period
                    expired.append(incident_id)
                    continue
                out.append(inc)
            await self._forget(expired)
            return out

        return await self._run("list incidents", read)

    async def _newest(self, limit: int) -> list[tuple[float, str]]:
        """(created, id) of the newest `limit` incidents in the shards' indexes."""
        async with self.client.pipeline(transaction=False) as pipe:
            for shard in range(keys.SHARDS):
                pipe.zrevrange(keys.index(shard), 0, limit - 1, withscores=True)
            per_shard = await pipe.execute()
        return sorted(
            ((score, member.decode()) for rows in per_shard for member, score in rows), reverse=True
        )[:limit]

    async def _forget(self, expired: list[str]) -> None:
        """Index entries of incidents gone after the retention period."""
        for incident_id in expired:
            await self.client.zrem(keys.index(keys.shard_of_id(incident_id)), incident_id)

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
        """(member, due ms) of every shard's due timers (up to `limit` each), earliest first."""
        shards = await asyncio.gather(*(self.due_incidents(now_ms, limit, n) for n in range(keys.SHARDS)))
        return sorted(((t.member, t.due_ms) for due in shards for t in due), key=lambda t: t[1])

    async def due_incidents(self, now_ms: int, limit: int, shard: int) -> list[DueTimer]:
        """Up to `limit` of a shard's due timers, earliest first, each with its incident's record
        (alerts left out: a timer's decision needs none), in one script."""

        async def read() -> list[DueTimer]:
            row = await self.scripts["due"](keys=[keys.timers(shard)], args=[now_ms, limit])
            out = []
            for i in range(0, len(row), 5):
                member, due, version, data, repeats = row[i : i + 5]
                try:
                    inc = None if data is None else _incident(version, data, repeats, {})
                except Exception:  # unreadable: left to fire(), which reports it and moves its timer on
                    inc = None
                out.append(DueTimer(member.decode(), int(float(due)), inc))
            return out

        return await self._run("read due timers", read)

    async def next_due_ms(self) -> tuple[int | None, int | None]:
        """Earliest (timer, delivery retry) over all shards; None where there is none."""

        async def read() -> tuple[int | None, int | None]:
            async with self.client.pipeline(transaction=False) as pipe:
                for shard in range(keys.SHARDS):
                    pipe.zrange(keys.timers(shard), 0, 0, withscores=True)
                    for urgent in keys.LANES:
                        pipe.zrange(keys.parked(keys.DISPATCH, shard, urgent), 0, 0, withscores=True)
                rows = await pipe.execute()
            timers = [int(score) for row in rows[0::3] for _, score in row]
            retries = [int(score) for i, row in enumerate(rows) if i % 3 for _, score in row]
            return (min(timers) if timers else None), (min(retries) if retries else None)

        return await self._run("read next timer", read)

    # outbox --------------------------------------------------------------------------------

    # heartbeats -------------------------------------------------------------------------

    async def beat(self, rule: str, now_ms: int, due_ms: int) -> None:
        """The heartbeat of `rule` was seen now: record it and move its silence timer to due_ms."""
        shard = keys.shard_of_key(keys.heartbeat_key(rule))
        ks = [keys.heartbeats(shard), keys.timers(shard)]
        args: list[str | int] = [rule, now_ms, due_ms, keys.heartbeat_timer(rule)]
        await self.durable("record heartbeat", "beat", ks, args)

    async def heartbeats(self) -> dict[str, int]:
        """When each heartbeat rule's alert was last seen (epoch ms), across all shards."""

        async def read() -> dict[str, int]:
            async with self.client.pipeline(transaction=False) as pipe:
                for shard in range(keys.SHARDS):
                    pipe.hgetall(keys.heartbeats(shard))
                rows = await pipe.execute()
            return {rule.decode(): int(ms) for row in rows for rule, ms in row.items()}

        return await self._run("read heartbeats", read)
