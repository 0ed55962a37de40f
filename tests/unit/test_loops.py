"""Which event loop the engine's processes run on (ESCALATION_EVENT_LOOP)."""

import asyncio
import sys

import pytest
import uvloop

from engine import loops
from engine.errors import EngineError


def test_auto_and_uvloop_run_on_uvloop_when_it_is_installed() -> None:
    for name in ("auto", "uvloop"):
        assert loops.run(_loop_type(), loops.factory(name)) is uvloop.Loop


def test_asyncio_keeps_the_standard_loop() -> None:
    kind = loops.run(_loop_type(), loops.factory("asyncio"))
    assert kind is not uvloop.Loop and issubclass(kind, asyncio.BaseEventLoop)


def test_without_uvloop_auto_falls_back_and_uvloop_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop now raises ImportError

    assert loops.factory("auto") is asyncio.new_event_loop
    with pytest.raises(EngineError, match="ESCALATION_EVENT_LOOP=uvloop, but uvloop is not installed"):
        loops.factory("uvloop")


async def _loop_type() -> type:
    return type(asyncio.get_running_loop())
