"""Liveness, readiness, and reloading the policies."""

from aiohttp import web

from engine.api import keys
from engine.api.middlewares import error
from engine.api.views import ReloadReply


async def healthy(request: web.Request) -> web.Response:
    return web.Response(text="OK\n")


async def ready(request: web.Request) -> web.Response:
    try:
        await request.app[keys.store].ping()
    except Exception as exc:
        return web.Response(status=503, text=f"store unreachable: {exc}\n")
    if problem := request.app[keys.store_watch].problem:
        return web.Response(status=503, text=problem)
    return web.Response(text="OK\n")


async def reload(request: web.Request) -> web.Response:
    """POST /-/reload: 200 with what is in force now, or 422 with every problem (old set kept)."""
    request.app[keys.auth].check(request)
    result = await request.app[keys.reloader].reload("POST /-/reload")
    if not result.ok:
        return error(422, "policies refused; the running set is kept", result.problems)
    reply: ReloadReply = {"status": "reloaded", "policies": result.summary}
    return web.json_response(reply)
