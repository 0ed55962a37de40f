"""SIGHUP / POST /-/reload: load the policy directory again, validate it whole, swap atomically.

An invalid set is refused with every `file:line` problem (logged and returned) and the running
set is kept. Readers take one snapshot per unit of work (PolicyRef), so a swap never splits a
webhook between two policy sets. Open incidents continue under the new set from their current
level; channels whose settings changed get new notifiers.
"""

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from engine.clock import Clock
from engine.errors import PolicyError
from engine.metrics import Metrics
from engine.policy.heartbeats import heartbeat_rules
from engine.policy.loader import load_policies
from engine.policy.models import PolicySet
from engine.policy.ref import PolicyRef

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class ReloadResult:
    ok: bool
    problems: list[str] = field(default_factory=list)
    summary: str = ""


def record_policies(metrics: Metrics, policies: PolicySet, now_ms: int) -> None:
    """What the metrics say about the policy set in force."""
    targets = {name: sev.ack_within for name, sev in policies.severities.items()}
    metrics.set_policies(targets, heartbeat_rules(policies), now_ms / 1000)


class Reloader:
    """Owns the policy set in force: one reload at a time, all or nothing."""

    def __init__(
        self,
        path: Path,
        ref: PolicyRef,
        metrics: Metrics,
        clock: Clock,
        on_swap: Callable[[PolicySet, PolicySet], None] = lambda old, new: None,
    ) -> None:
        self.path = path
        self.ref = ref
        self.metrics = metrics
        self.clock = clock
        self.on_swap = on_swap
        self._lock = asyncio.Lock()

    async def reload(self, reason: str) -> ReloadResult:
        async with self._lock:
            try:  # files and validation off the event loop: pages keep flowing meanwhile
                policies = await asyncio.to_thread(load_policies, self.path)
            except PolicyError as exc:
                self.metrics.config_ok.set(0)
                log.error(
                    "policies_reload_refused", reason=reason, path=str(self.path), problems=exc.problems
                )
                return ReloadResult(False, exc.problems)
            old, self.ref.current = self.ref.current, policies
            record_policies(self.metrics, policies, self.clock.now_ms())
            self.on_swap(old, policies)
            log.info("policies_reloaded", reason=reason, path=str(self.path), policies=policies.summary())
            return ReloadResult(True, summary=policies.summary())
