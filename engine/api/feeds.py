"""On-call calendar feeds (iCalendar for calendar apps) and the schedules overview.

GET /api/v1/schedules/NAME.ics?token=T and /api/v1/users/NAME.ics?token=T answer one schedule's
(one person's) shifts. Calendar apps cannot send credentials, so the token in the URL is the
credential: an HMAC of the feed under the link secret (engine.feeds.feed_token). A missing or wrong
token and an unknown name get the same 404, so a feed URL reveals nothing without its token.

GET /api/v1/schedules (API auth: it hands out the feed URLs) lists who is on call now, the next
hand-offs and every feed's URL.
"""

import asyncio
import hmac
import re
from collections.abc import Callable

from aiohttp import web

from engine.api import keys
from engine.errors import IngestError
from engine.feeds import (
    feed_path,
    feed_token,
    feed_users,
    feed_window,
    oncall_overview,
    schedule_calendar,
    user_calendar,
)
from engine.policy.models import PolicySet

NEXT_HANDOFFS = 5
CONTENT_TYPE = "text/calendar"
CACHE_CONTROL = "private, max-age=300"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")

Build = Callable[[PolicySet, str, int, int, int], bytes]


def _not_found() -> IngestError:
    return IngestError("no such calendar feed, or a wrong token", status=404)


async def _feed(
    request: web.Request, kind: str, known: Callable[[PolicySet, str], bool], build: Build
) -> web.Response:
    app = request.app
    name = request.match_info["name"]
    given = request.query.get("token", "").encode("utf-8", "surrogateescape")
    expected = feed_token(await app[keys.link_secret].get(), kind, name).encode("ascii")
    if not hmac.compare_digest(given, expected):
        raise _not_found()
    policies = app[keys.policies]()
    if not known(policies, name):  # a valid token for a name a reload removed
        raise _not_found()
    now_ms = app[keys.processor].clock.now_ms()
    start_ms, end_ms = feed_window(now_ms)
    # up to a few thousand hand-offs to walk: off the event loop
    body = await asyncio.to_thread(build, policies, name, start_ms, end_ms, now_ms)
    filename = f"{_UNSAFE.sub('_', name).strip('._') or kind}.ics"
    return web.Response(
        body=body,
        content_type=CONTENT_TYPE,
        charset="utf-8",
        headers={
            "Cache-Control": CACHE_CONTROL,
            "Content-Disposition": f'inline; filename="{filename}"',
        },
    )


async def schedule_feed(request: web.Request) -> web.Response:
    return await _feed(request, "schedule", lambda p, name: name in p.schedules, schedule_calendar)


async def user_feed(request: web.Request) -> web.Response:
    return await _feed(request, "user", lambda p, name: name in feed_users(p), user_calendar)


async def list_schedules(request: web.Request) -> web.Response:
    app = request.app
    app[keys.auth].check(request)  # it hands out feed tokens
    policies = app[keys.policies]()
    now_ms = app[keys.processor].clock.now_ms()
    secret = await app[keys.link_secret].get()
    base = app[keys.settings].public_url.rstrip("/")
    overview = await asyncio.to_thread(oncall_overview, policies, now_ms, NEXT_HANDOFFS)
    schedules = [
        {**entry, "feed_url": base + feed_path(secret, "schedule", entry["name"])} for entry in overview
    ]
    users = [
        {"name": name, "feed_url": base + feed_path(secret, "user", name)} for name in feed_users(policies)
    ]
    return web.json_response({"schedules": schedules, "users": users})
