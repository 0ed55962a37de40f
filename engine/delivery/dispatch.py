"""The dispatcher: splits each decided notification into one send per address, each queued on
its channel's own stream, so a slow or failing channel never holds up another."""

from engine.delivery.consumer import Consumer, Shared
from engine.delivery.plan import plan
from engine.store import keys
from engine.store.base import OutboxEntry
from engine.timeline import EntryKind


class Dispatcher(Consumer):
    """Reads the decided outbox; resolves each target to addresses as on call now; queues them."""

    def __init__(self, shared: Shared) -> None:
        super().__init__(shared, keys.DISPATCH)

    async def deliver(self, entry: OutboxEntry) -> None:
        s, msg = self.shared, entry.message
        if msg.address is not None:  # already one address (parked before the split): pass it on
            if await s.store.move(entry, [msg], []):
                s.wake(msg.address.channel)
            return
        inc = await s.store.load(msg.incident_id, alerts=False)  # who and whether: no alert needed
        if inc is None:
            await s.store.ack(entry)
            return
        todo = plan(msg, inc, s.policies(), s.notifiers.keys(), s.clock.now_ms())
        if todo.note:
            await s.note(inc.id, EntryKind.NOBODY_ON_CALL, "engine", todo.note)
        if todo.skipped:
            await s.note(
                inc.id,
                EntryKind.PAGE_SKIPPED,
                "engine",
                f"{msg.action} to {msg.target} skipped: {todo.skipped}",
            )
        elif todo.unreachable:
            await s.note(inc.id, EntryKind.DELIVERY_FAILED, "engine", todo.unreachable)
        sends = [msg.to(address) for address in todo.sends]
        # people's own later steps wait in their channel's retry set, parked in the same step
        later = [(msg.decided_ms + after, msg.followup_to(address)) for after, address in todo.later]
        if await s.store.move(entry, sends, later):
            for channel in {address.channel for address in todo.sends}:
                s.wake(channel)
