"""Liveness and readiness."""

from aiohttp import web

from engine.api import keys


async def healthy(request: web.Request) -> web.Response:
    return web.Response(text="OK\n")


async def ready(request: web.Request) -> web.Response:
    try:
        await request.app[keys.store].ping()
    except Exception as exc:
        return web.Response(status=503, text=f"store unreachable: {exc}\n")
    return web.Response(text="OK\n")
