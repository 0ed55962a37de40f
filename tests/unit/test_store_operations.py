"""Every store step that commits accepted state is timed and counted as a write, never as a read:
`escalation_store_errors_total{operation="commit"}` is what the alert on refused commits reads."""

import os
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from fakeredis import FakeAsyncRedis as FakeRedis

from engine.errors import StoreError
from engine.metrics import OTHER_STORE_OPERATION, operation_label
from engine.store.rediscore import RedisCore

STORE = Path(__file__).resolve().parents[2] / "engine" / "store"


def test_every_durable_step_has_a_write_operation_label() -> None:
    steps = {
        m.group(1)
        for path in STORE.glob("*.py")
        for m in re.finditer(r'\bdurable\(\s*"([^"]+)"', path.read_text())
    }
    assert {"commit decision", "count duplicates", "count repeats", "record heartbeat"} <= steps
    unlabelled = sorted(s for s in steps if operation_label(s) == OTHER_STORE_OPERATION)
    assert not unlabelled, f"store steps counted as reads: {unlabelled}"


# ---- a redis-py client failure is an unavailable store, our own bug is not ------------------------


def _raiser_in(filename: str) -> Callable[[], Awaitable[None]]:
    """An async function whose code says it lives in `filename`, raising what redis-py raised
    when its cluster client dropped a connection that was still connecting."""
    scope: dict[str, Any] = {}
    code = "async def fail():\n    writer = None\n    writer.writelines([b'PING'])\n"
    exec(compile(code, filename, "exec"), scope)  # noqa: S102 - a fixed string
    fail: Callable[[], Awaitable[None]] = scope["fail"]
    return fail


async def test_a_redis_py_attribute_error_is_a_store_error_and_counted() -> None:
    seen: list[tuple[str, bool]] = []
    core = RedisCore(FakeRedis(), observe=lambda step, seconds, ok: seen.append((step, ok)))
    inside = os.path.join("site-packages", "redis", "asyncio", "connection.py")

    with pytest.raises(StoreError, match="load incident: redis client connection reset"):
        await core._run("load incident", _raiser_in(inside))
    assert seen == [("load incident", False)]


async def test_an_attribute_error_of_our_own_is_not_hidden() -> None:
    core = RedisCore(FakeRedis())
    ours = os.path.join("engine", "processor.py")

    with pytest.raises(AttributeError, match="writelines"):
        await core._run("load incident", _raiser_in(ours))
