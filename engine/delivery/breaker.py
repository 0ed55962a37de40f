"""A circuit breaker per channel endpoint: closed, open after repeated failures, half-open to probe.

Per replica and in memory: each replica learns an endpoint is down from its own sends, and a
restart starts closed (it costs a few failed sends to learn again, never a lost page). Times are
monotonic seconds passed in, so the rules are testable without waiting.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum


class State(IntEnum):  # the value of the escalation_breaker_state gauge
    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2


@dataclass(slots=True)
class Breaker:
    failures_to_open: int = 5
    open_s: float = 30.0
    state: State = State.CLOSED
    failures: int = 0
    opened_at: float = 0.0
    probe_at: float | None = None  # half-open lets one send through at a time
    held: set[str] = field(default_factory=set)  # incidents whose timeline says so, since it opened

    def allow(self, now: float) -> bool:
        """May a send go now? Open turns half-open when its time is up, and lets one probe through;
        a probe that never reports (parked, crashed) is replaced after another open_s."""
        if self.state is State.OPEN and now - self.opened_at >= self.open_s:
            self.state, self.probe_at = State.HALF_OPEN, None
        if self.state is State.CLOSED:
            return True
        if self.state is State.HALF_OPEN and (self.probe_at is None or now - self.probe_at >= self.open_s):
            self.probe_at = now
            return True
        return False

    def retry_in_s(self, now: float) -> float:
        """How long until a refused send may try again: when the open time is up, or a probe's is."""
        since = self.opened_at if self.state is State.OPEN else (self.probe_at or now)
        return max(0.1, since + self.open_s - now)

    def record(self, ok: bool, now: float) -> bool:
        """Count a send's outcome; True when this changed the state."""
        before = self.state
        self.probe_at = None
        if ok:
            self.state, self.failures = State.CLOSED, 0
            self.held.clear()
        else:
            self.failures += 1
            if self.state is State.HALF_OPEN or self.failures >= self.failures_to_open:
                self.state, self.opened_at = State.OPEN, now
        return self.state is not before


@dataclass(slots=True)
class Breakers:
    """One breaker per (channel, endpoint); `changed` hears every state change (metrics, logs)."""

    failures_to_open: int = 5
    open_s: float = 30.0
    changed: Callable[[str, str, State], None] = lambda channel, endpoint, state: None
    _all: dict[tuple[str, str], Breaker] = field(default_factory=dict)

    def get(self, channel: str, endpoint: str) -> Breaker:
        key = (channel, endpoint)
        if key not in self._all:
            self._all[key] = Breaker(self.failures_to_open, self.open_s)
            self.changed(channel, endpoint, State.CLOSED)
        return self._all[key]

    def is_open(self, channel: str, endpoint: str, now: float) -> bool:
        b = self._all.get((channel, endpoint))
        return b is not None and b.state is State.OPEN and now - b.opened_at < b.open_s

    def allow(self, channel: str, endpoint: str, now: float) -> bool:
        b = self.get(channel, endpoint)
        before = b.state
        allowed = b.allow(now)
        if b.state is not before:
            self.changed(channel, endpoint, b.state)
        return allowed

    def record(self, channel: str, endpoint: str, ok: bool, now: float) -> State | None:
        """Count an outcome; the new state when it changed, else None."""
        b = self.get(channel, endpoint)
        if b.record(ok, now):
            self.changed(channel, endpoint, b.state)
            return b.state
        return None
