"""Webhooks past the in-flight cap wait for a slot, briefly and boundedly, before being shed."""

import asyncio

from engine.api.webhook import Inflight


async def test_one_past_the_cap_waits_for_a_slot_and_gets_it() -> None:
    slots = Inflight(1, wait_s=2.0)
    assert await slots.take()
    waiting = asyncio.ensure_future(slots.take())
    await asyncio.sleep(0.05)
    assert not waiting.done() and slots.waiting == 1
    slots.give()
    assert await waiting and slots.count == 1 and slots.waiting == 0


async def test_a_wait_that_runs_out_is_shed() -> None:
    slots = Inflight(1, wait_s=0.05)
    assert await slots.take()
    assert not await slots.take()
    assert slots.waiting == 0 and slots.count == 1
    slots.give()
    assert await slots.take()  # the slot given back is free again


async def test_at_most_four_times_the_cap_wait_the_rest_are_shed_at_once() -> None:
    slots = Inflight(2, wait_s=10.0)
    assert await slots.take() and await slots.take()
    queued = [asyncio.ensure_future(slots.take()) for _ in range(8)]
    await asyncio.sleep(0.01)
    assert slots.waiting == 8
    assert not await asyncio.wait_for(slots.take(), 0.1)  # the ninth is not queued
    for _ in range(2):
        slots.give()
    await asyncio.sleep(0.01)
    assert sum(q.done() for q in queued) == 2  # in order, one per slot given back
    for q in queued:
        q.cancel()
    await asyncio.gather(*queued, return_exceptions=True)
    assert slots.waiting == 0


async def test_without_a_wait_one_past_the_cap_is_shed_at_once() -> None:
    slots = Inflight(1, wait_s=0)
    assert await slots.take()
    assert not await asyncio.wait_for(slots.take(), 0.01)
