"""On-call calendar feeds: who is on call when, as iCalendar, behind a per-feed secret. Pure.

A feed's token is an HMAC of its kind and name under the server's link secret: a URL that can
be pasted into a calendar app, revealing one schedule's (or one person's) shifts and nothing else.
"""

import base64
import hashlib
import hmac
from urllib.parse import quote

KINDS = {"schedule": "schedules", "user": "users"}  # feed kind -> path segment


def feed_token(secret: bytes, kind: str, name: str) -> str:
    raw = hmac.new(secret, f"feed|{kind}|{name}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")[:32]


def feed_path(secret: bytes, kind: str, name: str) -> str:
    """The feed's path with its token: /api/v1/schedules/NAME.ics?token=... (or users/NAME.ics)."""
    return f"/api/v1/{KINDS[kind]}/{quote(name, safe='')}.ics?token={feed_token(secret, kind, name)}"
