"""Every Redis key the engine uses, in one place.

State is sharded by a hash tag `{sN}`: an incident, its timeline, its key pointer and the
shard's timers, outbox and indexes share one tag, so every atomic step touches one hash slot
and the same code runs on Redis Cluster.
"""

import functools
import hashlib
import os
import zlib

SHARDS = 16
PREFIX = "esc"
DELIVERY_GROUP = "delivery"


def shard_of_key(incident_key: str) -> int:
    return zlib.crc32(incident_key.encode()) % SHARDS


def shard_of_id(incident_id: str) -> int:
    head, _, _ = incident_id.partition("-")
    shard = int(head, 16)
    if not 0 <= shard < SHARDS:
        raise ValueError(incident_id)
    return shard


class _Entropy:
    """The OS's random bytes, read 6 KiB at a time: an id is drafted for every decision that
    might open an incident, and a getrandom() call each cost 2 % of ingest CPU. Emptied in a
    forked child, so that two processes never hand out the same bytes."""

    def __init__(self) -> None:
        self.pool, self.at = b"", 0

    def take(self, n: int) -> bytes:
        if self.at + n > len(self.pool):
            self.pool, self.at = os.urandom(6 * 1024), 0
        self.at += n
        return self.pool[self.at - n : self.at]

    def forget(self) -> None:
        self.pool, self.at = b"", 0


_entropy = _Entropy()
os.register_at_fork(after_in_child=_entropy.forget)


def new_incident_id(shard: int) -> str:
    """`<shard hex>-<random>`: the id alone tells which shard holds the incident."""
    return f"{shard:x}-{_entropy.take(6).hex()}"


def _tag(shard: int) -> str:
    return f"{PREFIX}:{{s{shard}}}"


def incident(incident_id: str) -> str:
    return f"{_tag(shard_of_id(incident_id))}:inc:{incident_id}"


def timeline(incident_id: str) -> str:
    return f"{_tag(shard_of_id(incident_id))}:tl:{incident_id}"


@functools.lru_cache(maxsize=16_384)  # every webhook and commit asks; a digest each time showed
def pointer(incident_key: str) -> str:
    """The latest incident opened for an incident key (open, or resolved and kept for dedup)."""
    digest = hashlib.sha1(incident_key.encode(), usedforsecurity=False).hexdigest()[:20]
    return f"{_tag(shard_of_key(incident_key))}:key:{digest}"


def timers(shard: int) -> str:
    """ZSET: member incident id, score the incident's next wake-up in epoch ms."""
    return f"{_tag(shard)}:timers"


def outbox(shard: int) -> str:
    """STREAM of notifications decided in the same step as the state change that caused them."""
    return f"{_tag(shard)}:outbox"


def retries(shard: int) -> str:
    """ZSET: member a delivery to retry (JSON), score when it is due, epoch ms."""
    return f"{_tag(shard)}:retry"


DISPATCH = ""  # the `channel` of the decided-notifications stream, before it is split by channel


LANES = (True, False)  # a queue's lanes, read in this order: urgent first (see outbox.urgent)


def stream(channel: str, shard: int, urgent: bool = False) -> str:
    """STREAM: the decided outbox (channel DISPATCH), or one channel kind's own queue of sends;
    `urgent`: the queue's lane that is read first."""
    base = outbox(shard) if channel == DISPATCH else f"{_tag(shard)}:out:{channel}"
    return base + ":urgent" if urgent else base


def parked(channel: str, shard: int, urgent: bool = False) -> str:
    """ZSET: sends of one channel (or dispatches) waiting for their retry time, score due epoch ms;
    due, they go back onto the lane they were parked from."""
    base = retries(shard) if channel == DISPATCH else f"{_tag(shard)}:retry:{channel}"
    return base + ":urgent" if urgent else base


def dead_letters(shard: int) -> str:
    """STREAM of notifications given up on for good: fields m (message), reason, at_ms."""
    return f"{_tag(shard)}:dead"


def heartbeat_key(rule: str) -> str:
    """The incident key of a heartbeat rule's silence incident."""
    return f"heartbeat|{rule}"


def heartbeat_timer(rule: str) -> str:
    """The timers-set member that fires when `rule`'s heartbeat goes silent: `<shard>-hb:<rule>`,
    so shard_of_id() finds its shard like an incident id's, and no incident id looks like it."""
    return f"{shard_of_key(heartbeat_key(rule)):x}-hb:{rule}"


def heartbeat_rule(member: str) -> str | None:
    """The rule of a heartbeat timer member; None for an incident id."""
    _, sep, rule = member.partition("-hb:")
    return rule if sep else None


def heartbeats(shard: int) -> str:
    """HASH: heartbeat rule -> when its heartbeat alert was last seen, epoch ms."""
    return f"{_tag(shard)}:heartbeats"


def index(shard: int) -> str:
    """ZSET: every incident id by creation time, for listing."""
    return f"{_tag(shard)}:index"


def counts(shard: int) -> str:
    """HASH: open incidents per `state|severity`, kept exact by the commit script."""
    return f"{_tag(shard)}:counts"


def threads(incident_id: str) -> str:
    """HASH: `channel:address` -> what its notifier returned to edit or thread under (Slack ts...)."""
    return f"{_tag(shard_of_id(incident_id))}:th:{incident_id}"


def link_secret() -> str:
    """STRING: the random secret signing one-click links, shared by every replica (unless set)."""
    return f"{PREFIX}:link-secret"


def used_link(digest: str) -> str:
    """STRING, expiring with its link: a one-click link that was used (links are single use)."""
    return f"{PREFIX}:used-link:{digest}"


def epoch() -> str:
    """STRING: a random value the first engine writes into an empty Redis. It vanishing means
    Redis lost its data (restarted without persistence, flushed): the engine must not go on
    paging from an empty state without saying so."""
    return f"{PREFIX}:epoch"


ALERT_FIELD = "f:"  # in an incident's hash, one alert's state is the field `f:<fingerprint>`
