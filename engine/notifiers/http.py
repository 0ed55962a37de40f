"""HTTP helpers the HTTP-based notifiers share: one POST with bounded replies, Retry-After."""

from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import aiohttp

from engine import __version__
from engine.errors import PermanentDeliveryError, RetryableDeliveryError

USER_AGENT = f"escalation-engine/{__version__}"
_MAX_RESPONSE_BYTES = 64 * 1024  # enough for any error body; never buffer an unbounded reply
_SNIPPET_CHARS = 300


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP-date); None when absent or invalid."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
        return max(seconds, 0.0)
    return seconds if seconds >= 0 and seconds != float("inf") else None


def snippet(body: bytes) -> str:
    text = body.decode("utf-8", errors="replace").strip()
    return text if len(text) <= _SNIPPET_CHARS else text[:_SNIPPET_CHARS] + "..."


async def http_exchange(
    session: aiohttp.ClientSession,
    url: str,
    data: bytes,
    headers: Mapping[str, str],
    timeout_s: float,
    what: str,
    secret: str = "",
) -> tuple[int, bytes, float | None]:
    """POST and return (status, body, Retry-After seconds) whatever the status.

    Raises RetryableDeliveryError for timeouts and network errors, PermanentDeliveryError for a
    URL that is not one. `what` names the destination in errors; the URL is left out (webhook
    URLs and Telegram's embed tokens) and `secret` is blanked out of any error text.
    """
    try:
        async with session.post(
            url,
            data=data,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=timeout_s),
            allow_redirects=False,  # a redirected POST may turn into a GET and silently drop the page
        ) as resp:
            body = await resp.content.read(_MAX_RESPONSE_BYTES)
            return resp.status, body, parse_retry_after(resp.headers.get("Retry-After"))
    except aiohttp.InvalidURL:
        raise PermanentDeliveryError(f"{what}: invalid URL") from None
    except TimeoutError:
        raise RetryableDeliveryError(f"{what}: no response within {timeout_s:g}s") from None
    except aiohttp.ClientError as exc:  # `from None`: the cause's text may hold the URL
        text = str(exc).replace(secret, "***") if secret else str(exc)
        raise RetryableDeliveryError(f"{what}: {type(exc).__name__}: {text}") from None


async def http_post(
    session: aiohttp.ClientSession,
    url: str,
    data: bytes,
    headers: Mapping[str, str],
    timeout_s: float,
    what: str,
) -> tuple[int, bytes]:
    """POST and return (status, body) for 1xx-4xx answers other than 429.

    Raises RetryableDeliveryError for 429, 5xx, timeouts and network errors (see http_exchange).
    """
    status, body, retry_after = await http_exchange(session, url, data, headers, timeout_s, what)
    if status == 429 or status >= 500:
        raise RetryableDeliveryError(f"{what}: HTTP {status}: {snippet(body)}", retry_after)
    return status, body
