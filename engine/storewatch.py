"""Notices when Redis lost the engine's state (restarted without persistence, flushed) and says
so loudly: readiness fails, escalation_store_state_lost is 1, an error is logged. Paging on from
an empty state would silently drop every open incident's escalation."""

import structlog

from engine.errors import StoreError
from engine.metrics import Metrics
from engine.store.base import Store

log = structlog.get_logger(__name__)


class StoreWatch:
    def __init__(self, store: Store, metrics: Metrics) -> None:
        self.store = store
        self.metrics = metrics
        self.known: str | None = None
        self.lost = False

    async def check(self) -> None:
        """Learn the store's epoch once (writing it into an empty Redis), then compare each time."""
        try:
            if self.known is None:
                self.known = await self.store.epoch(create=True)
                return
            now = await self.store.epoch(create=False)
        except StoreError:
            return  # unreachable is readiness's business, not a loss
        if now != self.known and not self.lost:
            self.lost = True
            self.metrics.store_state_lost.set(1)
            log.error(
                "store_state_lost",
                detail="Redis no longer holds this engine's state (restarted without persistence, or "
                "flushed): open incidents and their timers are gone. Readiness fails until the engine "
                "is restarted; check the Redis persistence (appendonly yes) and re-open what is missing.",
            )

    @property
    def problem(self) -> str:
        return (
            "store state lost: Redis restarted empty or was flushed; restart the engine\n"
            if self.lost
            else ""
        )
