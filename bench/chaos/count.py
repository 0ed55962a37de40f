"""Counting: what each incident should have paged (from its script and the ladder) against what the
receivers accepted, plus the engine's own timeline of every incident.

A message is (incident, channel, action, level). Expected once each:

- a trigger for every target of every level the script let fire (all three, or level 0 only
  after an early acknowledgement);
- an acknowledgement, and a resolution, to every channel paged so far, when the script did them.

Lost: expected, never accepted. Doubled: the engine decided a message twice (a webhook key with
two event ids, or two "paged" timeline entries for one level). Unexpected: accepted but not
expected (a page after an acknowledgement, another incident's address). Redelivered: extra
copies of a message already accepted: the at-least-once cost of a kill between the receiver's
answer and the engine's record of it.
"""

import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bench.chaos.policy import LEVEL_OFFSETS_S
from bench.chaos.replicas import Kill
from bench.chaos.sinks import Key, Recorder, Seen
from bench.chaos.workload import Life, mirror_keys, page_keys

_PAGED = re.compile(r"\(level (\d+)")
SLOWEST = 10  # the latest messages, described in the report


def _clock(at: float) -> str:
    return datetime.fromtimestamp(at).strftime("%H:%M:%S.%f")[:-3]


@dataclass
class Tally:
    incidents: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    early_fallbacks: int = 0
    ambiguous: int = 0  # early acks answered so late that level 1 may have fired: timeline decides
    expected: Counter[str] = field(default_factory=Counter)  # per category: trigger, acknowledge, resolve
    received: Counter[str] = field(default_factory=Counter)
    redelivered: Counter[str] = field(default_factory=Counter)
    by_channel: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    lost: list[str] = field(default_factory=list)
    doubled: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    timeline: list[str] = field(default_factory=list)  # the engine's record disagrees with the script
    errors: list[str] = field(default_factory=list)  # scripts that failed, unreadable deliveries
    lateness_s: list[float] = field(default_factory=list)  # page arrival - its level's deadline
    mirror_s: list[float] = field(default_factory=list)  # ack/resolve arrival - when it was done
    gap_s: list[float] = field(default_factory=list)  # first copy -> its redelivery
    decided_s: list[float] = field(default_factory=list)  # a level's "paged" entry - its deadline
    delivery_s: list[float] = field(default_factory=list)  # first arrival - when it was decided
    slowest: list[tuple[float, str]] = field(default_factory=list)  # (lateness, what), latest first
    slowest_reclaims: list[tuple[float, str]] = field(default_factory=list)
    # messages pending on a replica when it was killed: kill -> first arrival after it
    reclaim_s: list[float] = field(default_factory=list)
    held_arrived_before: int = 0  # held, but it had reached its receiver before the kill; not re-sent
    held_never: int = 0  # held, and never reached its receiver

    @property
    def failed(self) -> bool:
        return bool(self.lost or self.doubled or self.unexpected or self.timeline or self.errors)


def _ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _entries(detail: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e for e in detail.get("timeline", []) if e.get("kind") == kind]


def _paged_levels(detail: dict[str, Any]) -> Counter[int]:
    found = (_PAGED.search(str(e.get("text"))) for e in _entries(detail, "paged"))
    return Counter(int(m.group(1)) - 1 for m in found if m)


def _check_timeline(t: Tally, life: Life, levels: tuple[int, ...], detail: dict[str, Any]) -> None:
    where = f"incident {life.incident} (#{life.n}, {life.kind})"
    paged = _paged_levels(detail)
    for level, times in sorted(paged.items()):
        if times > 1:
            t.doubled.append(f"{where}: level {level} paged {times} times on the timeline")
        if level not in levels:
            t.unexpected.append(f"{where}: level {level} paged on the timeline, not expected")
    for level in levels:
        if level not in paged:
            t.timeline.append(f"{where}: level {level} never paged on the timeline")
    for kind, done in (("acknowledged", life.acked_at), ("resolved", life.resolved_at)):
        count = len(_entries(detail, kind))
        if count != (1 if done is not None else 0):
            t.timeline.append(f"{where}: {count} '{kind}' timeline entries")
    if life.resolved_at is not None and detail.get("status") != "resolved":
        t.timeline.append(f"{where}: status {detail.get('status')} after it was resolved")


def _paged_at(detail: dict[str, Any]) -> dict[int, float]:
    """When each level was decided (its first "paged" timeline entry)."""
    found: dict[int, float] = {}
    for e in reversed(_entries(detail, "paged")):
        if m := _PAGED.search(str(e.get("text"))):
            found[int(m.group(1)) - 1] = _ts(str(e["at"]))
    return found


def _expected(t: Tally, life: Life, detail: dict[str, Any]) -> dict[Key, tuple[float, float]]:
    """Each expected message: when it became due (its level's deadline, or when the incident was
    acknowledged / resolved) and when the engine decided it (the timeline's entry)."""
    levels = life.levels
    if life.early and life.acked_at is not None and life.acked_at > life.sent_at + LEVEL_OFFSETS_S[1] - 0.1:
        t.ambiguous += 1  # level 1 may have fired first: the engine's timeline says what was paged
        levels = tuple(sorted(_paged_levels(detail)))
    _check_timeline(t, life, levels, detail)
    created = _ts(str(detail["created_at"]))
    paged_at = _paged_at(detail)
    due: dict[Key, tuple[float, float]] = {}
    for level in levels:
        deadline = created + LEVEL_OFFSETS_S[level]
        if level in paged_at:
            t.decided_s.append(paged_at[level] - deadline)
        for key in page_keys(life.incident, life.lane, (level,)):
            due[key] = (deadline, paged_at.get(level, deadline))
    for action, kind in (("acknowledge", "acknowledged"), ("resolve", "resolved")):
        entries = _entries(detail, kind)
        if (life.acked_at if action == "acknowledge" else life.resolved_at) is None or not entries:
            continue
        for key in mirror_keys(life.incident, life.lane, levels, action):
            due[key] = (_ts(str(entries[0]["at"])),) * 2
    return due


def _reclaims(t: Tally, rec: Recorder, kills: list[Kill]) -> None:
    """How long after each kill the messages the killed replica held reached their receivers."""
    for kill in kills:
        for key in kill.held:
            copies = [s.at for s in rec.by_key.get(key, [])]
            after = [at for at in copies if at >= kill.at]
            if after:
                delay = min(after) - kill.at
                t.reclaim_s.append(delay)
                later = sum(1 for k in kills if kill.at < k.at <= min(after))
                what = (
                    f"{' '.join(map(str, key))}: held by replica {kill.replica} killed at {_clock(kill.at)}, "
                    f"arrived {_clock(min(after))}; {later} more kills in between"
                )
                t.slowest_reclaims = sorted([*t.slowest_reclaims, (delay, what)], reverse=True)[:SLOWEST]
            elif copies:
                t.held_arrived_before += 1
            else:
                t.held_never += 1


def _received(t: Tally, key: Key, copies: list[Seen], due: tuple[float, float], kills: list[Kill]) -> None:
    incident, channel, action, level = key
    copies = sorted(copies, key=lambda s: s.at)
    (due_at, decided_at), first = due, copies[0].at
    (t.lateness_s if action == "trigger" else t.mirror_s).append(first - due_at)
    t.delivery_s.append(first - decided_at)
    between = sum(1 for k in kills if decided_at <= k.at <= first)
    t.slowest.append(
        (
            first - due_at,
            f"{incident} {channel} {action} level {level}: due {_clock(due_at)}, decided "
            f"{_clock(decided_at)}, arrived {_clock(first)}; {len(copies)} copies; {between} kills between",
        )
    )
    t.slowest = sorted(t.slowest, reverse=True)[:SLOWEST]
    ids = {s.event_id for s in copies if s.event_id}
    if len(ids) > 1:
        t.doubled.append(f"{incident} {channel} {action} level {level}: {len(ids)} distinct event ids")
    if len(copies) > 1:
        t.redelivered[action] += len(copies) - 1
        t.by_channel[channel]["redelivered"] += len(copies) - 1
        t.by_channel[channel][f"{action}.redelivered"] += len(copies) - 1
        t.gap_s.append(copies[1].at - copies[0].at)


def tally(lives: list[Life], rec: Recorder, details: dict[str, dict[str, Any]], kills: list[Kill]) -> Tally:
    t = Tally(incidents=len(lives))
    owner = {life.incident: life for life in lives if life.incident}
    expected: dict[Key, tuple[float, float]] = {}
    for life in lives:
        t.kinds[life.kind] += 1
        t.early_fallbacks += life.fallback
        if life.error:
            t.errors.append(f"#{life.n} ({life.kind}): {life.error}")
        detail = details.get(life.incident)
        if detail is None:
            if life.incident:
                t.errors.append(f"#{life.n}: incident {life.incident} could not be read back")
            continue
        expected.update(_expected(t, life, detail))
    for key, (due_at, decided_at) in expected.items():
        incident, channel, action, level = key
        t.expected[action] += 1
        t.by_channel[channel]["expected"] += 1
        t.by_channel[channel][f"{action}.expected"] += 1
        copies = rec.by_key.get(key)
        if not copies:
            life = owner[incident]
            t.lost.append(
                f"{incident} (#{life.n}, {life.kind}): {action} level {level} on {channel}, due at "
                f"{datetime.fromtimestamp(due_at).isoformat(timespec='milliseconds')}"
            )
            continue
        t.received[action] += 1
        t.by_channel[channel]["received"] += 1
        t.by_channel[channel][f"{action}.received"] += 1
        _received(t, key, copies, (due_at, decided_at), kills)
    for key, copies in rec.by_key.items():
        life_of = owner.get(key[0])
        if key not in expected:
            what = f"{key[0]} {key[1]} {key[2]} level {key[3]}"
            t.unexpected.append(f"{what}: {len(copies)} copies, not expected")
        elif life_of is not None and any(s.lane != life_of.lane for s in copies):
            t.unexpected.append(f"{key[0]} {key[1]} {key[2]}: sent to another lane's address")
    t.errors += [f"accepted but unreadable: {what}" for what in rec.unreadable]
    _reclaims(t, rec, kills)
    return t


def pct(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]
