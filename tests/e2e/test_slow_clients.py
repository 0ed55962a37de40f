"""Hostile load against a real `serve` process: clients trickling their headers or bodies are cut
off, connections past the cap get a 503 with Retry-After, webhooks past the in-flight cap are
shed the same way, and many slow clients at once do not stop the health check answering."""

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.e2e.harness import TOKEN, EngineProcess
from tests.e2e.test_alertmanager_flow import sinks, write_policy
from tests.sinks import PagerDutySink, WebhookSink

__all__ = ["sinks"]
pytestmark = pytest.mark.e2e
FIXTURE = Path(__file__).parent.parent / "fixtures" / "01-firing-single.json"
HEAD = f"POST /api/v1/alertmanager HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"


LIMITS = {
    "ESCALATION_REQUEST_HEADER_TIMEOUT_S": "1",
    "ESCALATION_REQUEST_BODY_TIMEOUT_S": "1",
    "ESCALATION_MAX_INFLIGHT_WEBHOOKS": "2",
    "ESCALATION_WEBHOOK_QUEUE_S": "0",  # past the cap: shed at once (the wait: test_webhook_queue.py)
}


@pytest.fixture
async def engine(
    request: pytest.FixtureRequest, tmp_path: Path, sinks: tuple[PagerDutySink, WebhookSink]
) -> AsyncIterator[EngineProcess]:
    env = {**LIMITS, **getattr(request, "param", {})}
    proc = EngineProcess(
        write_policy(tmp_path, *sinks, "1h", "2h"), tmp_path / "data", tmp_path / "e.log", env
    )
    await proc.start()
    try:
        yield proc
    finally:
        proc.stop()


async def _open(engine: EngineProcess) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", engine.port)


async def _closed_within(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, trickle: bytes) -> float:
    """Send `trickle` a byte every 0.1 s until the server closes; seconds until it did."""
    started = time.monotonic()
    for byte in trickle:
        try:
            writer.write(bytes([byte]))
            await writer.drain()
        except ConnectionError:
            break
        try:
            async with asyncio.timeout(0.1):
                if await reader.read(4096) == b"" or reader.at_eof():
                    break
        except TimeoutError:
            continue
    return time.monotonic() - started


async def test_a_client_trickling_its_headers_is_cut_off(engine: EngineProcess) -> None:
    reader, writer = await _open(engine)
    trickle = (HEAD + "X-Slow: " + "a" * 200).encode()  # 20+ s at a byte per 0.1 s
    took = await _closed_within(reader, writer, trickle)
    writer.close()
    assert took < 10, f"a header trickle was let run for {took:.1f} s"


async def test_a_client_trickling_its_body_gets_a_408(engine: EngineProcess) -> None:
    reader, writer = await _open(engine)
    writer.write((HEAD + "Content-Type: application/json\r\nContent-Length: 500\r\n\r\n{").encode())
    await writer.drain()
    answer = ""
    for _ in range(40):  # 4 s of a byte per 0.1 s, far past the 1 s body deadline
        writer.write(b" ")
        await writer.drain()
        try:
            async with asyncio.timeout(0.1):
                answer = (await reader.read(4096)).decode()
            break  # answered (or closed) before the body ended
        except TimeoutError:
            continue
    writer.close()
    assert answer.startswith("HTTP/1.1 408"), answer
    assert '"the body took too long to arrive"' in answer


async def test_a_console_form_trickled_in_gets_a_408_too(engine: EngineProcess) -> None:
    reader, writer = await _open(engine)
    head = "POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
    writer.write((head + "Content-Length: 500\r\n\r\nname=").encode())
    await writer.drain()
    answer = ""
    for _ in range(40):
        writer.write(b"a")
        await writer.drain()
        try:
            async with asyncio.timeout(0.1):
                answer = (await reader.read(4096)).decode()
            break
        except TimeoutError:
            continue
    writer.close()
    assert answer.startswith("HTTP/1.1 408"), answer


async def test_webhooks_past_the_in_flight_cap_are_shed_with_retry_after(engine: EngineProcess) -> None:
    held = []
    for _ in range(2):  # two webhooks whose bodies are slow to come hold both slots
        reader, writer = await _open(engine)
        writer.write((HEAD + "Content-Type: application/json\r\nContent-Length: 5000\r\n\r\n").encode())
        await writer.drain()
        held.append((reader, writer))
    await asyncio.sleep(0.3)
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as session:
        url = f"{engine.url}/api/v1/alertmanager"
        async with session.post(url, json=json.loads(FIXTURE.read_text())) as resp:
            assert resp.status == 503, await resp.text()
            assert resp.headers["Retry-After"] == "5"
            assert "too many webhooks in flight" in (await resp.json())["error"]
        for _, writer in held:
            writer.close()
        await asyncio.sleep(1.5)  # the held ones time out (408) and give their slots back
        async with session.post(url, json=json.loads(FIXTURE.read_text())) as resp:
            assert resp.status == 200, await resp.text()
        async with session.get(f"{engine.url}/metrics") as resp:
            assert "escalation_webhooks_shed_total 1.0" in await resp.text()


HELD_LONG = {"ESCALATION_REQUEST_HEADER_TIMEOUT_S": "60", "ESCALATION_MAX_CONNECTIONS": "400"}


@pytest.mark.parametrize(
    "engine",
    [HELD_LONG, HELD_LONG | {"ESCALATION_EVENT_LOOP": "uvloop"}],
    indirect=True,
    ids=["asyncio", "uvloop"],
)
async def test_many_slow_clients_leave_the_health_check_answering_and_the_cap_refuses_more(
    engine: EngineProcess,
) -> None:
    slow = [await _open(engine) for _ in range(390)]
    for _, writer in slow:
        writer.write(HEAD[:20].encode())  # a head begun and never finished
    latencies = []
    async with aiohttp.ClientSession() as session:
        for _ in range(5):
            started = time.monotonic()
            async with session.get(f"{engine.url}/-/healthy") as resp:
                assert resp.status == 200
            latencies.append((time.monotonic() - started) * 1000)
        print(f"health with 390 slow clients held: max {max(latencies):.1f} ms")
        # past the cap of 400; a burst accepted in one batch before the connections register
        # may overshoot the cap by that batch (at most the listen backlog, 128)
        more = [await _open(engine) for _ in range(150)]
        answers = [(await asyncio.wait_for(r.read(4096), 5)).decode() for r, _ in more[-5:]]
        for answer in answers:
            assert answer.startswith("HTTP/1.1 503"), answer
            assert "Retry-After: 5" in answer
        for _, writer in slow + more:
            writer.close()
        await asyncio.sleep(0.5)
        async with session.get(f"{engine.url}/-/healthy") as resp:  # room again once they went
            assert resp.status == 200
