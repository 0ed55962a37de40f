"""The Store protocol: what the processor, scheduler, delivery, API and tests need from storage."""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from engine.alerts import Alert
from engine.errors import StoreError
from engine.events import Decision
from engine.incident import Incident
from engine.outbox import OutboxMessage
from engine.timeline import TimelineEntry


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """An outbox message as read from one shard's stream, until it is acked."""

    shard: int
    entry_id: str
    message: OutboxMessage
    channel: str = ""  # the stream it was read from: a channel kind, or "" for the decided outbox
    urgent: bool = False  # read from that queue's urgent lane


@dataclass(frozen=True, slots=True)
class UnreadableEntry:
    """A stream entry that is not an outbox message (corrupt, or written by something else)."""

    shard: int
    entry_id: str
    raw: bytes
    problem: str
    channel: str = ""
    urgent: bool = False


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A notification given up on for good, kept for people to see (and one day re-drive)."""

    shard: int
    entry_id: str
    message: str  # the outbox message as it was stored (JSON), or the unreadable bytes
    reason: str
    at_ms: int
    channel: str = ""  # the channel it failed on ("" before it was split by channel)

    @property
    def id(self) -> str:
        """How the API names it: shard and stream entry id, e.g. `3-1733100000000-0`."""
        return f"{self.shard}-{self.entry_id}"


Pending = OutboxEntry | UnreadableEntry


@dataclass(frozen=True, slots=True)
class DueTimer:
    """A due timer read with its incident's record (None: a heartbeat's timer, or gone)."""

    member: str  # an incident id, or a heartbeat's timer
    due_ms: int
    incident: Incident | None


class Store(Protocol):
    """Persists what decide() returned, one atomic step per decision (see RedisStore)."""

    async def ping(self) -> bool: ...
    def pipelined(self) -> bool: ...  # commands of one loop turn share a round trip
    async def close(self) -> None: ...

    # incidents
    async def load(self, incident_id: str, alerts: bool = True) -> Incident | None: ...
    async def load_shown(self, incident_id: str, limit: int) -> Incident | None: ...
    async def load_by_key(
        self, incident_key: str, fingerprints: list[str] | None = None
    ) -> Incident | None: ...
    async def commit(
        self, previous: Incident | None, decision: Decision, now_ms: int, outbox: list[OutboxMessage]
    ) -> None: ...
    async def commit_many(
        self, commits: Sequence[tuple[Incident | None, Decision, int, list[OutboxMessage]]]
    ) -> list[bool | StoreError]: ...
    async def count_duplicates(self, incident_id: str, n: int) -> None: ...
    async def count_repeats(self, groups: Sequence[tuple[str, Sequence[Alert]]]) -> list[str | None]: ...
    async def settled(self, incident_id: str) -> None: ...
    async def list_incidents(self, limit: int, alerts: int | None = None) -> list[Incident]: ...
    async def open_counts(self) -> dict[tuple[str, str], int]: ...
    async def timeline(self, incident_id: str) -> list[TimelineEntry]: ...
    async def append_timeline(self, incident_id: str, entry: TimelineEntry) -> None: ...

    # timers
    async def due_timers(self, now_ms: int, limit: int) -> list[tuple[str, int]]: ...
    async def due_incidents(self, now_ms: int, limit: int, shard: int) -> list[DueTimer]: ...
    async def next_due_ms(self) -> tuple[int | None, int | None]: ...
    async def repair_timer(self, incident_id: str, seen_due_ms: int, due_ms: int | None) -> None: ...

    # outbox
    async def ensure_groups(self, channels: Iterable[str] = ("",)) -> None: ...
    async def read_outbox(
        self, consumer: str, count: int, channel: str = "", urgent_only: bool = False
    ) -> list[Pending]: ...
    async def claim_stale(
        self, consumer: str, min_idle_ms: int, count: int, channel: str = "", urgent_only: bool = False
    ) -> list[Pending]: ...
    async def ack(self, entry: OutboxEntry) -> None: ...
    async def keep(self, consumer: str, entries: list[Pending], channel: str = "") -> None: ...
    async def move(
        self, entry: Pending, sends: list[OutboxMessage], parked: list[tuple[int, OutboxMessage]]
    ) -> bool: ...
    async def delivered(self, entry: OutboxEntry, thread: str | None = None) -> None: ...
    async def dead_letter(
        self, entry: Pending, reason: str, now_ms: int, failover: OutboxMessage | None = None
    ) -> str | None: ...
    async def dead_letters(self, limit: int) -> list[DeadLetter]: ...
    async def redrive(self, dead_letter_id: str) -> OutboxMessage | None: ...
    async def outbox_stats(self, now_ms: int, channel: str = "") -> tuple[int, int, int]: ...

    # chat threads, one-click links
    async def thread(self, incident_id: str, channel: str, address: str) -> str | None: ...
    async def set_thread(self, incident_id: str, channel: str, address: str, ref: str) -> None: ...
    async def link_secret(self) -> bytes: ...
    async def use_once(self, digest: str, until_ms: int) -> bool: ...
    async def forget_use(self, digest: str) -> None: ...
    async def epoch(self, create: bool) -> str | None: ...

    # heartbeats
    async def beat(self, rule: str, now_ms: int, due_ms: int) -> None: ...
    async def heartbeats(self) -> dict[str, int]: ...
    async def retry_later(self, entry: OutboxEntry, retries: list[tuple[int, OutboxMessage]]) -> None: ...
    async def pump_retries(self, now_ms: int, limit: int = 100, channel: str = "") -> int: ...
