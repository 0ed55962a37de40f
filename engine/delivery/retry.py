"""How a send attempt ends: delivered, retry later (when), or given up. Pure but for the jitter."""

import random
from dataclasses import dataclass
from enum import StrEnum

from engine.errors import RetryableDeliveryError
from engine.timeline import EntryKind


class Outcome(StrEnum):  # the `outcome` label of escalation_notifications_total
    SUCCESS = "success"
    RETRY = "retry"
    FAILED = "failed"

    @property
    def timeline_kind(self) -> EntryKind:
        """How the timeline records an attempt that ended this way."""
        return {
            Outcome.SUCCESS: EntryKind.DELIVERED,
            Outcome.RETRY: EntryKind.DELIVERY_RETRY,
            Outcome.FAILED: EntryKind.DELIVERY_FAILED,
        }[self]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    backoff_s: float = 2.0
    backoff_max_s: float = 300.0
    max_attempts: int = 12


@dataclass(frozen=True, slots=True)
class Attempt:
    outcome: Outcome
    text: str  # for the timeline: what happened, to whom
    retry_in_s: float | None = None


# providers ask for seconds to a minute; a proxy's Retry-After of a day must not hold a page that long
MAX_RETRY_AFTER_S = 600.0
_JITTER = random.Random()  # noqa: S311 - jitter, not security; its own, to leave the global state alone


def backoff_s(attempt: int, base_s: float, max_s: float) -> float:
    """Full jitter: uniform in [base/2, min(max, base * 2**attempt)]."""
    ceiling = min(max_s, base_s * 2**attempt)
    return _JITTER.uniform(min(base_s / 2, ceiling), ceiling)


def judge(
    where: str, error: Exception | None, attempt: int, policy: RetryPolicy, timeout_s: float
) -> Attempt:
    """The outcome of attempt number `attempt` (0-based) that raised `error` (None: it worked)."""
    if error is None:
        return Attempt(Outcome.SUCCESS, f"{where} delivered")
    if not isinstance(error, RetryableDeliveryError | TimeoutError):  # PermanentDeliveryError
        return Attempt(Outcome.FAILED, f"{where} failed: {error}")
    reason = str(error) or f"no answer within {timeout_s:g}s"
    if attempt + 1 >= policy.max_attempts:
        return Attempt(Outcome.FAILED, f"{where} gave up after {attempt + 1} attempts: {reason}")
    asked = error.retry_after_s if isinstance(error, RetryableDeliveryError) else None
    asked = min(asked, MAX_RETRY_AFTER_S) if asked is not None else None
    delay = max(asked or 0.0, backoff_s(attempt, policy.backoff_s, policy.backoff_max_s))
    return Attempt(Outcome.RETRY, f"{where} failed ({reason}); retry in {delay:.1f}s", delay)
