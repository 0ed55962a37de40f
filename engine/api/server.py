"""Serving the app: optional TLS, a cap on open connections, and deadlines for slow clients.

aiohttp's keep-alive timeout is armed from the moment a connection opens and again after each
response, and it closes a connection still waiting for a complete request head: that is the
header deadline. The body deadline is read_body's (engine.api.body). The connection cap is
here: past it, a new connection gets a 503 with Retry-After and is closed at once, so a crowd
of slow clients costs a fixed amount of memory and cannot starve the event loop.
"""

import asyncio
import socket
import ssl
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, cast

from aiohttp import web
from aiohttp.web_runner import GracefulExit

from engine.api.body import SERVER_ARGS
from engine.api.middlewares import RETRY_AFTER_S
from engine.config import Settings
from engine.errors import EngineError

_BODY = b'{"error": "too many open connections, try again", "detail": null}'
REFUSED = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Retry-After: %d\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"
    % (RETRY_AFTER_S, len(_BODY), _BODY)
)


@dataclass(frozen=True)
class Limits:
    header_timeout_s: float
    max_connections: int

    @classmethod
    def of(cls, settings: Settings) -> "Limits":
        return cls(settings.request_header_timeout_s, settings.max_connections)


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """HTTPS when both a certificate and a key are configured; one without the other is an error."""
    cert, key = settings.tls_cert_file, settings.tls_key_file
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        given, missing = ("CERT", "KEY") if key is None else ("KEY", "CERT")
        raise EngineError(f"ESCALATION_TLS_{given}_FILE is set but ESCALATION_TLS_{missing}_FILE is not")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2

    def encrypted(*_: object) -> str:  # else OpenSSL asks for a passphrase on the terminal
        raise EngineError(f"TLS key {key} is encrypted: give an unencrypted PEM key (keep it mode 0600)")

    try:
        context.load_cert_chain(cert, key, password=encrypted)
    except (OSError, ssl.SSLError) as exc:
        raise EngineError(f"TLS certificate {cert} / key {key}: {_reason(exc)}") from None
    return context


def _reason(exc: OSError) -> str:
    if isinstance(exc, ssl.SSLError) or not exc.strerror:
        return str(exc)  # e.g. "[SSL] PEM lib": the file is not a certificate or key
    return exc.strerror


class _Refuse(asyncio.Protocol):
    """The answer to a connection past the cap: one 503, then close (the request is not read)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a stream transport, though not an asyncio.Transport subclass on uvloop
        cast(asyncio.WriteTransport, transport).write(REFUSED)
        transport.close()


class GuardedSite(web.TCPSite):
    """A TCP site whose protocol factory refuses connections past `max_connections`."""

    def __init__(self, runner: web.AppRunner, sock: socket.socket, limits: Limits, **kwargs: Any) -> None:
        host, port = sock.getsockname()[:2]
        super().__init__(runner, host, port, **kwargs)
        self.sock = sock
        self.limits = limits
        self.refused = 0

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with its runner
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            lambda: self._admit(server),
            sock=self.sock,
            ssl=self._ssl_context,
            ssl_handshake_timeout=self.limits.header_timeout_s if self._ssl_context else None,
            backlog=self._backlog,
        )
        self._bound_port = self._server.sockets[0].getsockname()[1]

    def _admit(self, server: web.Server) -> asyncio.BaseProtocol:
        # connections register when the loop calls connection_made, after the factory: a burst
        # accepted in one batch can pass the cap by that batch (at most the listen backlog)
        if len(server.connections) >= self.limits.max_connections:
            self.refused += 1
            return _Refuse()
        return server()


def serve(
    app: web.Application,
    host: str,
    port: int,
    limits: Limits,
    tls: ssl.SSLContext | None,
    on_listening: Callable[[GuardedSite], None] = lambda site: None,
    new_loop: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop,
) -> None:
    """Run until SIGINT or SIGTERM, as web.run_app does, on a GuardedSite. The port is bound
    first: a port in use is an EngineError before any loop starts (timers, delivery)."""
    sock = _bind(host, port)
    loop = new_loop()
    asyncio.set_event_loop(loop)
    main = loop.create_task(_serve(app, sock, limits, tls, on_listening))
    try:
        loop.run_until_complete(main)
    except (GracefulExit, KeyboardInterrupt):
        pass
    finally:
        if not main.done():
            main.cancel()
            with suppress(asyncio.CancelledError):
                loop.run_until_complete(main)
        rest = asyncio.all_tasks(loop)
        for task in rest:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*rest, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise EngineError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


async def _serve(
    app: web.Application,
    sock: socket.socket,
    limits: Limits,
    tls: ssl.SSLContext | None,
    on_listening: Callable[[GuardedSite], None],
) -> None:
    runner = web.AppRunner(
        app,
        handle_signals=True,
        access_log=None,
        keepalive_timeout=limits.header_timeout_s,  # also the deadline for a request's head
        **SERVER_ARGS,
    )
    await runner.setup()
    try:
        site = GuardedSite(runner, sock, limits, ssl_context=tls)
        await site.start()
        on_listening(site)
        await asyncio.Event().wait()  # until a signal raises GracefulExit
    finally:
        await runner.cleanup()
