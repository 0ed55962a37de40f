"""Per-endpoint send rates where the provider documents one, and pauses a 429 asks for.

PagerDuty Events API: 120 events per minute per routing key. Slack chat.postMessage: about one
message per second per channel, short bursts allowed. A token bucket per (channel, endpoint);
times are monotonic seconds passed in.
"""

from dataclasses import dataclass, field

# channel kind -> (tokens per second, burst)
RATES: dict[str, tuple[float, float]] = {
    "pagerduty": (2.0, 20.0),
    "slack": (1.0, 3.0),
    "telegram": (1.0, 3.0),  # Telegram: about one message per second per chat
}


@dataclass(slots=True)
class Bucket:
    rate: float
    burst: float
    tokens: float
    at: float
    paused_until: float = 0.0
    urgent_next: float = 0.0  # the earliest turn the next urgent send may jump to


@dataclass(slots=True)
class RateLimits:
    rates: dict[str, tuple[float, float]] = field(default_factory=lambda: dict(RATES))
    _buckets: dict[tuple[str, str], Bucket] = field(default_factory=dict)

    def wait_s(
        self, channel: str, endpoint: str, now: float, max_wait_s: float = float("inf"), urgent: bool = False
    ) -> float:
        """How long a send must wait for its turn, its turn reserved (0: go now). A wait longer
        than `max_wait_s` reserves nothing: the caller parks the send and asks again later.

        An `urgent` send takes the next turn the rate gives, ahead of the turns a backlog has
        reserved: the turns after it move back by one, and the sends already parked for theirs
        go at the time they were given, a burst of one more. Urgent sends that jump are spaced
        at the rate among themselves: k of them at once wait 1/rate to k/rate."""
        rate = self.rates.get(channel)
        key = (channel, endpoint)
        b = self._buckets.get(key)
        if b is None:
            if rate is None:
                return 0.0
            b = self._buckets[key] = Bucket(rate[0], rate[1], rate[1], now)
        if now < b.paused_until:
            return b.paused_until - now
        if rate is None:
            return 0.0
        b.tokens = min(b.burst, b.tokens + (now - b.at) * b.rate)
        b.at = now
        if urgent and b.tokens < 1.0:  # ahead of the reserved turns, one turn after the last jump
            wait = max((1.0 - max(b.tokens, 0.0)) / b.rate, b.urgent_next - now)
        else:
            wait = max(0.0, (1.0 - b.tokens) / b.rate)
        if wait <= max_wait_s:
            b.tokens -= 1.0  # may go below 0: the sends queued behind it wait their turn
            if urgent:
                b.urgent_next = now + wait + 1.0 / b.rate
        return wait

    def paused(self, channel: str, endpoint: str, now: float) -> bool:
        """Held by a provider's "retry after" (no turn is reserved while it lasts)."""
        b = self._buckets.get((channel, endpoint))
        return b is not None and now < b.paused_until

    def pause(self, channel: str, endpoint: str, seconds: float, now: float) -> None:
        """The provider said "retry after": hold every send to this endpoint until then (the
        caller caps `seconds`: a proxy's Retry-After of a day must not silence a channel)."""
        key = (channel, endpoint)
        b = self._buckets.get(key)
        if b is None:
            rate, burst = self.rates.get(channel, (0.0, 0.0))
            b = self._buckets[key] = Bucket(rate, burst, burst, now)
        b.paused_until = max(b.paused_until, now + seconds)
