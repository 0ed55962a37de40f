"""Each channel kind sends through a connection pool of its own: a channel whose endpoint hangs
holds only its own connections, never another channel's page."""

import asyncio
import time

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

import engine.app
from engine.app import ChannelSessions


async def test_a_hanging_channel_takes_only_its_own_connections(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine.app, "CHANNEL_CONNECTIONS", 2)
    release = asyncio.Event()

    async def hang(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response(text="late")

    async def answer(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/hang", hang)
    app.router.add_get("/ok", answer)
    sessions = ChannelSessions()
    async with TestServer(app) as server:
        slack, pagerduty = sessions.of("slack"), sessions.of("pagerduty")
        assert sessions.of("slack") is slack and slack is not pagerduty
        hung = [asyncio.ensure_future(slack.get(server.make_url("/hang"))) for _ in range(2)]
        await asyncio.sleep(0.2)  # both of Slack's connections are taken
        started = time.monotonic()
        async with pagerduty.get(server.make_url("/ok")) as resp:
            assert await resp.text() == "ok"
        assert time.monotonic() - started < 1.0
        with pytest.raises(TimeoutError):  # a third Slack send does wait for Slack's own pool
            async with asyncio.timeout(0.3):
                await slack.get(server.make_url("/ok"))
        release.set()
        for r in await asyncio.gather(*hung):
            r.release()
        await sessions.close()
    assert slack.closed and pagerduty.closed
