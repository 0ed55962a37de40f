"""Delivery: the dispatcher and one worker per channel kind, each on its own stream.

A commit's notifications land on the decided outbox; the dispatcher resolves each to addresses
and queues one send per address on that channel's stream; each channel's worker sends its own
queue. A Slack outage (or a 429 asking for 30 s) fills Slack's queue only: PagerDuty's worker
never waits on it.
"""

import asyncio
from collections.abc import Callable, Mapping

from engine.clock import Clock
from engine.delivery.breaker import Breakers, State
from engine.delivery.consumer import Consumer, DeliveryConfig, Shared
from engine.delivery.dispatch import Dispatcher
from engine.delivery.links import LinkSecret
from engine.delivery.worker import ChannelWorker
from engine.metrics import Metrics
from engine.notifiers.base import Notifier
from engine.policy.channels import CHANNEL_KINDS
from engine.policy.models import PolicySet
from engine.store import keys
from engine.store.base import Pending, Store

__all__ = ["Delivery", "DeliveryConfig"]


class Delivery:
    """Owns the outbox consumers: the dispatcher and a worker for every channel kind (an idle
    one costs one pipelined read per poll), so a channel added by a reload is served at once."""

    def __init__(
        self,
        store: Store,
        notifiers: Mapping[str, Notifier],
        policies: Callable[[], PolicySet],
        clock: Clock,
        metrics: Metrics,
        config: DeliveryConfig,
    ) -> None:
        def breaker_changed(channel: str, endpoint: str, state: State) -> None:
            metrics.breaker_state.labels(channel, endpoint).set(int(state))

        self.shared = Shared(
            store,
            policies,
            clock,
            metrics,
            config,
            notifiers,
            breakers=Breakers(config.breaker_failures, config.breaker_open_s, breaker_changed),
            wake=self._wake_channel,
        )
        self.dispatcher = Dispatcher(self.shared)
        self.workers = {kind.name: ChannelWorker(self.shared, kind.name) for kind in CHANNEL_KINDS}
        self.wake = self.dispatcher.wake  # a commit wrote to the decided outbox

    @property
    def consumers(self) -> list[Consumer]:
        return [self.dispatcher, *self.workers.values()]

    @property
    def notifiers(self) -> Mapping[str, Notifier]:
        return self.shared.notifiers

    @notifiers.setter
    def notifiers(self, notifiers: Mapping[str, Notifier]) -> None:
        self.shared.notifiers = notifiers

    @property
    def link_secret(self) -> LinkSecret | None:
        return self.shared.link_secret

    @link_secret.setter
    def link_secret(self, secret: LinkSecret | None) -> None:
        self.shared.link_secret = secret

    def _wake_channel(self, channel: str) -> None:
        if channel == keys.DISPATCH:
            self.dispatcher.wake.set()
        elif channel in self.workers:
            self.workers[channel].wake.set()

    def stop(self) -> None:
        for consumer in self.consumers:
            consumer.stop()

    async def run(self) -> None:
        await asyncio.gather(*(consumer.run() for consumer in self.consumers))

    @property
    def config(self) -> DeliveryConfig:
        return self.shared.config

    async def ensure_groups(self) -> None:
        await self.shared.store.ensure_groups([c.channel for c in self.consumers])

    async def drain(self) -> int:
        """Every consumer in turn until none has anything due (tests step with this): how many
        sends the channel workers handled (a dispatch alone is not counted)."""
        handled = 0
        while True:
            done = 0
            for consumer in self.consumers:
                s = self.shared
                await s.store.pump_retries(s.clock.now_ms(), channel=consumer.channel)
                entries = await s.store.read_outbox(s.config.consumer, s.config.batch, consumer.channel)
                for e in entries:
                    await consumer.handle(e)
                done += len(entries)
                handled += len(entries) if consumer is not self.dispatcher else 0
            if not done:
                return handled

    async def handle(self, entry: Pending) -> None:
        """Handle one entry as the consumer of its stream would (tests drive steps with this)."""
        consumer = self.dispatcher if entry.channel == keys.DISPATCH else self.workers[entry.channel]
        await consumer.handle(entry)
