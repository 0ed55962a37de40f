"""SMTP sessions to one server, kept open for the next mail.

In a storm hundreds of mails a minute go to one relay. A session per mail costs a TCP (and TLS)
handshake, the greeting, EHLO, AUTH and QUIT: 0.8 ms of our CPU per mail on loopback, more with
TLS, and as many new connections at the relay, which may throttle them. A session whose last mail
was accepted is between transactions (the 250 after DATA ended it) and starts the next with MAIL.

- One send at a time uses a session. The newest idle one goes first, so a quiet spell lets the
  rest expire.
- A session idle for `idle_s` is QUIT and closed: well inside the relays' own idle limits (a
  stressed Postfix drops an idle client after 10 s). One the server dropped anyway is seen as gone
  before it is used, or fails its MAIL (a 421, a reset, or no answer within a QUIT's budget: a
  flow a firewall dropped), and the notifier sends the mail on a new session.
- Only a session whose mail was accepted comes back; after any failure it is closed. After
  `max_mails` mails a session is retired: relays cap the mails per connection.
- `aclose()` QUITs and closes them all; no socket outlives it.
"""

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import aiosmtplib

IDLE_S = 5.0
MAX_IDLE = 32  # sessions kept; more sends at once each get a session of their own
MAX_MAILS = 100
QUIT_TIMEOUT_S = 2.0
CLOSE_TIMEOUT_S = 1.0  # for the server's side of a TLS close, before the socket is dropped


class Client(aiosmtplib.SMTP):
    """aiosmtplib's client, holding on to each connection it closes until its socket is closed.

    close() only starts that: over TLS the socket goes once the server answers our close_notify,
    which nobody awaited (a closing event loop then left the socket to the garbage collector).
    aiosmtplib drops a connection only through close()."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._closing: list[tuple[asyncio.BaseTransport, Callable[[], int] | None]] = []
        self.mails = 0  # accepted on this session
        self.in_transaction = False  # MAIL accepted for the mail now being sent
        self.mail_timeout_s: float | None = None  # a kept session's MAIL: its answer, or it is gone

    async def mail(self, *args: Any, **kwargs: Any) -> aiosmtplib.SMTPResponse:
        if self.mail_timeout_s is not None:  # a flow a firewall dropped silently never answers
            kwargs["timeout"] = self.mail_timeout_s
        response = await super().mail(*args, **kwargs)
        self.in_transaction = True
        return response

    def close(self) -> None:
        if self.transport is not None:  # the socket is None when the TLS layer already closed it
            sock = self.transport.get_extra_info("socket")
            self._closing.append((self.transport, sock.fileno if sock is not None else None))
        super().close()

    async def wait_closed(self, timeout_s: float) -> None:
        """Until each socket is closed; one the server holds past `timeout_s` is aborted."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        for transport, fileno in self._closing:
            pause = 0.0  # a plain socket closes on the loop's next turn, TLS after a round trip
            while fileno is not None and fileno() != -1:
                if loop.time() >= deadline:
                    if isinstance(transport, asyncio.WriteTransport):
                        transport.abort()
                        await asyncio.sleep(0)  # closed on the loop's next turn
                    break
                await asyncio.sleep(pause)
                pause = min(pause * 2 or 0.001, 0.05)
        self._closing.clear()

    async def shut(self, quit_s: float, close_s: float) -> None:
        """QUIT (if still connected; its answer waited for at most `quit_s`), then close."""
        try:
            if self.is_connected:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(quit_s):
                        await self.quit()
        finally:  # cancelled mid-QUIT too: the socket is not left to the garbage collector
            self.close()
            await self.wait_closed(close_s)


def gone(exc: BaseException) -> bool:
    """A kept session failed before its MAIL was accepted, so nothing was sent on it: closed
    under us (421: the server is closing it), or MAIL unanswered within `mail_timeout_s`."""
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return exc.code == 421
    return isinstance(exc, ConnectionError | TimeoutError)  # SMTPServerDisconnected is the first


class Sessions:
    """The idle sessions to one server (see the module's doc)."""

    def __init__(
        self, max_idle: int = MAX_IDLE, quit_s: float = QUIT_TIMEOUT_S, close_s: float = CLOSE_TIMEOUT_S
    ) -> None:
        self.idle_s, self.max_idle, self.max_mails = IDLE_S, max_idle, MAX_MAILS
        self.quit_s, self.close_s = quit_s, close_s
        self.mail_timeout_s = quit_s  # as short as a QUIT's: the session answered a moment ago
        self._idle: list[tuple[Client, float]] = []  # (session, idle since), the newest last
        self._shutting: set[asyncio.Task[None]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False

    def __len__(self) -> int:
        return len(self._idle)

    def take(self) -> Client | None:
        """The newest idle session still connected (now the caller's), or None."""
        self._expire(asyncio.get_running_loop().time())
        while self._idle:
            client, _ = self._idle.pop()
            if client.is_connected:
                client.in_transaction = False
                client.mail_timeout_s = self.mail_timeout_s
                return client
            self.retire(client)
        return None

    def give(self, client: Client) -> None:
        """A session back after its mail was accepted: kept for the next, or retired."""
        client.mails += 1
        full = len(self._idle) >= self.max_idle or client.mails >= self.max_mails
        if self._closed or full or not client.is_connected:
            self.retire(client)
            return
        loop = asyncio.get_running_loop()
        self._idle.append((client, loop.time()))
        if self._timer is None:
            self._timer = loop.call_later(self.idle_s, self._on_timer)

    def retire(self, client: Client) -> None:
        """QUIT and close it in the background (aclose() waits for it)."""
        task = asyncio.get_running_loop().create_task(client.shut(self.quit_s, self.close_s))
        self._shutting.add(task)
        task.add_done_callback(self._shutting.discard)

    async def aclose(self) -> None:
        """Retire every idle session and wait until all are closed; later ones are not kept."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._idle:
            self.retire(self._idle.pop()[0])
        while self._shutting:
            await asyncio.gather(*self._shutting, return_exceptions=True)

    def _expire(self, now: float) -> None:
        keep = [(c, since) for c, since in self._idle if now - since < self.idle_s]
        for client, since in self._idle:
            if now - since >= self.idle_s:
                self.retire(client)
        self._idle = keep

    def _on_timer(self) -> None:
        self._timer = None
        loop = asyncio.get_running_loop()
        self._expire(loop.time())
        if self._idle:  # the oldest one left is due next
            self._timer = loop.call_later(self._idle[0][1] + self.idle_s - loop.time(), self._on_timer)
