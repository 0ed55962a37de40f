"""The one Protocol every channel adapter implements. What they send (Message) belongs to the core."""

from typing import Protocol, runtime_checkable

from engine.messages import Message

DEFAULT_TIMEOUT_S = 10.0  # a send's budget when none is given (serve gives DELIVERY_TIMEOUT_S)


class Notifier(Protocol):
    """Send one message; raise RetryableDeliveryError or PermanentDeliveryError on failure.

    A notifier touches no state. What a chat needs to edit or thread under its first message
    (Slack's channel and ts, Telegram's message id) it returns from send() as an opaque string;
    delivery keeps it per incident and address and passes it back as `thread` next time.
    """

    async def send(self, message: Message, thread: str | None = None) -> str | None:
        """Deliver `message`; return the thread reference to keep (None: keep the one held)."""
        ...

    def endpoint(self, address: str) -> str:
        """The endpoint `address` is sent through, for its circuit breaker and rate limit
        (a PagerDuty service, one SMTP server, a Slack channel...)."""
        ...

    def unusable(self, address: str) -> str | None:
        """Why no send to `address` can go at all, known without trying (a secret missing or
        unreadable, an address not configured); None when it may. Such a send fails at once,
        before any rate-limit turn: a backlog of them fails over now, not one turn at a time."""
        ...


@runtime_checkable
class Closable(Protocol):
    """A notifier holding connections of its own (e-mail's open SMTP sessions), ended by aclose()."""

    async def aclose(self) -> None: ...
