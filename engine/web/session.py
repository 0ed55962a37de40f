"""The console's session: a signed cookie (HMAC under a key derived from the link secret) and
a CSRF token bound to it. Pure apart from the clock and randomness handed in.

Cookie value: base64url(JSON payload) "." base64url(HMAC-SHA256). The payload holds a random
session id, the expiry (epoch seconds), the name actions are recorded under, and whether the
holder proved the API credentials. The signing key also covers a digest of the configured
credentials, so rotating the API token or password ends every console session.
"""

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from typing import Any

COOKIE = "ee_console"
FLASH_COOKIE = "ee_flash"
TTL_S = 12 * 3600
MAX_NAME_CHARS = 64


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def derive_key(link_secret: bytes, credentials: str) -> bytes:
    """The console's own key: never the link secret itself (a session cannot pass for a link)."""
    digest = hashlib.sha256(credentials.encode("utf-8", "surrogateescape")).hexdigest()
    return hmac.new(link_secret, f"console-session|{digest}".encode(), hashlib.sha256).digest()


@dataclass(frozen=True, slots=True)
class Session:
    sid: str
    expires_s: int
    name: str  # recorded as "by" on the incident ("" until the person gives a name)
    authenticated: bool  # proved the API credentials (always False on an open console)

    @staticmethod
    def new(now_s: float, name: str = "", authenticated: bool = False) -> "Session":
        return Session(secrets.token_urlsafe(18), int(now_s) + TTL_S, name[:MAX_NAME_CHARS], authenticated)


def sign(key: bytes, payload: dict[str, Any]) -> str:
    body = _b64(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
    mac = hmac.new(key, f"v1|{body}".encode(), hashlib.sha256).digest()
    return f"{body}.{_b64(mac)}"


def unsign(key: bytes, value: str) -> dict[str, Any] | None:
    """The payload of a value signed under `key`, or None (tampered, malformed, another key)."""
    body, dot, mac = value.partition(".")
    if not dot or len(value) > 4096:
        return None
    expected = _b64(hmac.new(key, f"v1|{body}".encode(), hashlib.sha256).digest())
    if not hmac.compare_digest(mac.encode("ascii", "replace"), expected.encode()):
        return None
    try:
        payload = json.loads(_unb64(body))
    except (ValueError, binascii.Error):
        return None
    return payload if isinstance(payload, dict) else None


def encode(key: bytes, session: Session) -> str:
    s = session
    return sign(key, {"sid": s.sid, "exp": s.expires_s, "name": s.name, "auth": s.authenticated})


def decode(key: bytes, value: str, now_s: float) -> Session | None:
    """The session in a cookie value; None when it is forged, malformed or expired."""
    raw = unsign(key, value)
    if raw is None:
        return None
    sid, exp, name, auth = raw.get("sid"), raw.get("exp"), raw.get("name"), raw.get("auth")
    if not (isinstance(sid, str) and sid and isinstance(exp, int) and isinstance(name, str)):
        return None
    if not isinstance(auth, bool) or exp <= now_s:
        return None
    return Session(sid, exp, name, auth)


def csrf_token(key: bytes, session: Session) -> str:
    """Bound to the session id: a token from another session (or none) is refused."""
    return _b64(hmac.new(key, f"csrf|{session.sid}".encode(), hashlib.sha256).digest())[:32]


def csrf_ok(key: bytes, session: Session | None, given: str) -> bool:
    if session is None or not given:
        return False
    return hmac.compare_digest(given.encode("ascii", "replace"), csrf_token(key, session).encode())


def encode_flash(key: bytes, sid: str, tone: str, text: str) -> str:
    """A one-shot message for the next page, readable only by the session it was set for."""
    return sign(key, {"f": sid, "tone": tone, "text": text[:500]})


def decode_flash(key: bytes, value: str, sid: str) -> tuple[str, str] | None:
    raw = unsign(key, value)
    if raw is None or raw.get("f") != sid:
        return None
    tone, text = raw.get("tone"), raw.get("text")
    if not isinstance(tone, str) or not isinstance(text, str):
        return None
    return (tone if tone in ("ok", "bad") else "ok"), text
