"""Signed one-click links (acknowledge, resolve) for emails and chat cards. Pure: the secret and
the time are parameters.

A token names one incident, one action and when it expires, and carries an HMAC-SHA256 of those
under the server's link secret. The same (incident, action, expiry) always gives the same token,
so a retried delivery carries the same link; single use is enforced by the store, which records
a token's digest when it is used.
"""

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass

ACTIONS = {"ack": "acknowledge", "resolve": "resolve"}  # token word -> Message.links key
_DIGEST_CHARS = 32  # 192 bits of the HMAC, base64url
_MAX_TOKEN_CHARS = 200
_INCIDENT_ID = re.compile(r"[A-Za-z0-9_-]{1,100}")  # a URL path segment as it is, no "." (the separator)


class LinkError(ValueError):
    """Why a token is refused (tampered, expired, malformed); safe to show the person."""


class LinkExpired(LinkError):
    """A token this server signed, past its expiry (HTTP 410 rather than 400)."""


@dataclass(frozen=True, slots=True)
class Link:
    incident_id: str
    action: str  # "ack" or "resolve"
    expires_ms: int
    digest: str  # the token's signature: what single use is recorded under


def _mac(secret: bytes, payload: str) -> str:
    raw = hmac.new(secret, payload.encode("ascii"), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")[:_DIGEST_CHARS]


def sign(secret: bytes, incident_id: str, action: str, expires_ms: int) -> str:
    if action not in ACTIONS:
        raise ValueError(f"no link for action {action!r}")
    if not _INCIDENT_ID.fullmatch(incident_id):
        raise ValueError(f"no link for incident id {incident_id!r}: letters, digits, '-' and '_' only")
    if expires_ms < 0:
        raise ValueError("a link cannot expire before 1970")
    payload = f"{incident_id}.{action}.{expires_ms // 1000}"
    return f"{payload}.{_mac(secret, payload)}"


def verify(secret: bytes, token: str, now_ms: int) -> Link:
    """The link a token stands for; raises LinkError when it is not one this server signed, or expired."""
    if len(token) > _MAX_TOKEN_CHARS or not token.isascii():
        raise LinkError("this link is malformed")
    parts = token.split(".")
    if len(parts) != 4:
        raise LinkError("this link is malformed")
    incident_id, action, expires, digest = parts
    if not hmac.compare_digest(_mac(secret, f"{incident_id}.{action}.{expires}"), digest):
        raise LinkError("this link is not valid: it was changed, or signed with another secret")
    if action not in ACTIONS or not expires.isdigit():  # signed, so only a bug could get here
        raise LinkError("this link is malformed")
    expires_ms = int(expires) * 1000
    if now_ms >= expires_ms:
        raise LinkExpired("this link has expired")
    return Link(incident_id, action, expires_ms, digest)


def links_for(secret: bytes, public_url: str, incident_id: str, expires_ms: int) -> dict[str, str]:
    """Message.links for an incident: {"acknowledge": url, "resolve": url}; none without a public URL."""
    if not public_url or not _INCIDENT_ID.fullmatch(incident_id):  # engine ids always fit; none else
        return {}
    base = public_url.rstrip("/")
    return {key: f"{base}/ack/{sign(secret, incident_id, word, expires_ms)}" for word, key in ACTIONS.items()}
