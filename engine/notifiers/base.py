"""The one Protocol every channel adapter implements. What they send (Message) belongs to the core."""

from typing import Protocol

from engine.messages import Message


class Notifier(Protocol):
    """Send one message; raise RetryableDeliveryError or PermanentDeliveryError on failure."""

    async def send(self, message: Message) -> None: ...
