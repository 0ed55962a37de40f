"""Authentication of write endpoints: a bearer token and/or basic auth, from env or file."""

import base64
import hmac
from pathlib import Path

from aiohttp import web
from pydantic import SecretStr

from engine.config import Settings


def _same(given: str, expected: str) -> bool:
    """Constant-time compare; bytes so that non-ASCII input is a mismatch, not a TypeError."""
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode("utf-8"))


class Auth:
    """Bearer token and/or basic auth for write endpoints; with neither configured, they are open."""

    def __init__(self, token: str | None, basic: tuple[str, str] | None) -> None:
        self.token = token
        self.basic = basic

    @property
    def enabled(self) -> bool:
        return self.token is not None or self.basic is not None

    def check(self, request: web.Request) -> None:
        if not self.enabled:
            return
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
    return Auth(token, basic)
