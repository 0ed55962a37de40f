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

from engine.api.middlewares import WEBHOOK_PATH
from engine.config import Settings
from engine.errors import EngineError


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

    def refuse_if_blocked(self, address: str, path: str = "") -> None:
        wait_s = self.retry_after_s(address)
        if not wait_s:
            return
        reason = "too many failed authentication attempts, try again later"
        headers = {"Retry-After": str(wait_s)}
        if path == WEBHOOK_PATH:  # Alertmanager drops a 4xx but retries a 5xx: the alerts wait, not vanish
            raise web.HTTPServiceUnavailable(reason=reason, headers=headers)
        raise web.HTTPTooManyRequests(reason=reason, headers=headers)


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
        address = client_key(request.remote)
        self.failures.refuse_if_blocked(address, request.path)
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


def client_key(remote: str | None) -> str:
    """Whom failed attempts are counted against: the address, or for IPv6 its /64 (one host
    usually holds a whole /64, and rotating inside it must not buy fresh guesses)."""
    try:
        ip = ipaddress.ip_address(remote or "")
    except ValueError:
        return remote or ""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        if not ip.is_loopback:
            return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def _secret(name: str, value: SecretStr | None, path: Path | None) -> str | None:
    secret = path.read_text().strip() if path is not None else None
    if secret is None and value is not None:
        secret = value.get_secret_value()
    if secret is not None and not secret.strip():
        # an empty secret would be matched by an empty credential: refuse rather than be open
        raise EngineError(f"ESCALATION_{name}(_FILE) is empty: give it a value or leave it unset")
    return secret


def make_auth(settings: Settings) -> Auth:
    """The configured credentials; EngineError for an empty token or password."""
    token = _secret("AUTH_TOKEN", settings.auth_token, settings.auth_token_file)
    password = _secret("AUTH_BASIC_PASSWORD", settings.auth_basic_password, settings.auth_basic_password_file)
    if settings.auth_basic_user is not None and not password:
        raise EngineError("ESCALATION_AUTH_BASIC_USER is set without ESCALATION_AUTH_BASIC_PASSWORD(_FILE)")
    basic = (settings.auth_basic_user, password or "") if settings.auth_basic_user else None
    return Auth(token, basic, settings.auth_failures_per_minute)


def exposure_problem(settings: Settings, auth: Auth, host: str) -> str | None:
    """Why the engine must not start: listening beyond loopback with nobody's credentials
    required, unless told so with --insecure-no-auth (ESCALATION_INSECURE_NO_AUTH)."""
    if auth.enabled or settings.insecure_no_auth or _loopback(host):
        return None
    return (
        f"it would listen on {host} without authentication: anyone who can reach it could "
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
