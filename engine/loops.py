"""The event loop every engine process runs on: uvloop where it is installed, else asyncio's.

uvloop (libuv) does the same asyncio work in C: the loop's scheduling, socket reads and writes,
and the transports under aiohttp and redis-py, which is most of a webhook's cost that is not the
engine's own. `ESCALATION_EVENT_LOOP=asyncio` keeps the standard loop (to compare, or to debug).
"""

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar

from engine.errors import EngineError

T = TypeVar("T")

LoopName = Literal["auto", "uvloop", "asyncio"]


def factory(name: LoopName = "auto") -> Callable[[], asyncio.AbstractEventLoop]:
    """A new-loop function for `name`; "auto" is uvloop when it imports, else asyncio's."""
    if name == "asyncio":
        return asyncio.new_event_loop
    try:
        import uvloop
    except ImportError:
        if name == "uvloop":
            raise EngineError("ESCALATION_EVENT_LOOP=uvloop, but uvloop is not installed") from None
        return asyncio.new_event_loop
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T], new_loop: Callable[[], asyncio.AbstractEventLoop]) -> T:
    """asyncio.run on a loop from `new_loop` (see factory)."""
    with asyncio.Runner(loop_factory=new_loop) as runner:
        return runner.run(main)
