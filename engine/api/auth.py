"""Authentication of write endpoints: a bearer token and/or basic auth, from env or file.

Failed attempts (credentials presented and wrong) are counted per client address: past
`auth_failures_per_minute` in a minute, that address gets 429 with Retry-After until the
minute is over, whatever it sends, so a token cannot be guessed at the speed of the server.
The count is per replica and in memory; behind a reverse proxy it is the proxy's address.
"""

import base64
import hmac
import ipaddress
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from pathlib import Path

from aiohttp import web
from pydantic import SecretStr

from engine.config import Settings


def _same(given: str, expected: str) -> bool:
    """Constant-time compare; bytes so that non-ASCII input is a mismatch, not a TypeError."""
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode("utf-8"))


class FailedAttempts:
    """Failed attempts per client address over a sliding minute; bounded in memory."""

    WINDOW_S = 60.0
    MAX_ADDRESSES = 10_000  # the oldest address is forgotten first

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self.clock = clock
        self._seen: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, address: str) -> deque[float]:
        times = self._seen.get(address)
        if times is None:
            return deque()
        while times and times[0] <= self.clock() - self.WINDOW_S:
            times.popleft()
        if not times:
            del self._seen[address]
        return times

    def retry_after_s(self, address: str) -> int:
        """Seconds until `address` may try again (0: it may now)."""
        times = self._recent(address)
        if self.per_minute <= 0 or len(times) < self.per_minute:
            return 0
        return max(1, int(times[-self.per_minute] + self.WINDOW_S - self.clock() + 0.999))

    def failed(self, address: str) -> None:
        times = self._seen.setdefault(address, deque(maxlen=max(self.per_minute, 1)))
        times.append(self.clock())
        self._seen.move_to_end(address)
        while len(self._seen) > self.MAX_ADDRESSES:
            self._seen.popitem(last=False)

    def refuse_if_blocked(self, address: str) -> None:
        wait_s = self.retry_after_s(address)
        if wait_s:
            raise web.HTTPTooManyRequests(
                reason="too many failed authentication attempts, try again later",
                headers={"Retry-After": str(wait_s)},
            )


class Auth:
    """Bearer token and/or basic auth for write endpoints; with neither configured, they are open."""

    def __init__(
        self, token: str | None, basic: tuple[str, str] | None, failures_per_minute: int = 10
    ) -> None:
        self.token = token
        self.basic = basic
        self.failures = FailedAttempts(failures_per_minute)

    @property
    def enabled(self) -> bool:
        return self.token is not None or self.basic is not None

    def check(self, request: web.Request) -> None:
        if not self.enabled:
            return
        address = request.remote or ""
        self.failures.refuse_if_blocked(address)
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if self.token is not None and scheme.lower() == "bearer" and _same(value, self.token):
            return
        if self.basic is not None and scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(value, validate=True).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                user, password = "", ""
            if _same(user, self.basic[0]) & _same(password, self.basic[1]):
                return
        if header:  # a guess; a request with no credentials at all guesses nothing
            self.failures.failed(address)
        raise web.HTTPUnauthorized(
            reason="missing or bad credentials",
            headers={"WWW-Authenticate": 'Bearer, Basic realm="escalation-engine"'},
        )


def _secret(value: SecretStr | None, path: Path | None) -> str | None:
    if path is not None:
        return path.read_text().strip()
    return value.get_secret_value() if value is not None else None


def make_auth(settings: Settings) -> Auth:
    token = _secret(settings.auth_token, settings.auth_token_file)
    password = _secret(settings.auth_basic_password, settings.auth_basic_password_file)
    basic = (settings.auth_basic_user, password or "") if settings.auth_basic_user else None
    return Auth(token, basic, settings.auth_failures_per_minute)


def exposure_problem(settings: Settings, auth: Auth, host: str) -> str | None:
    """Why the engine must not start: listening beyond loopback with nobody's credentials
    required, unless told so with --insecure-no-auth (ESCALATION_INSECURE_NO_AUTH)."""
    if auth.enabled or settings.insecure_no_auth or _loopback(host):
        return None
    return (
        f"refusing to listen on {host} without authentication: anyone who can reach it could "
        "acknowledge and resolve incidents. Set ESCALATION_AUTH_TOKEN(_FILE) or "
        "ESCALATION_AUTH_BASIC_USER and ..._PASSWORD(_FILE), listen on 127.0.0.1, "
        "or pass --insecure-no-auth if a proxy in front authenticates"
    )


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name other than localhost may resolve to anything
        return False
