"""Job sources' pure parts: waiting, and what a submission's master is told of a grading."""

from __future__ import annotations

import asyncio

from hatchway.sources.base import pause


async def test_a_pause_with_nothing_to_wake_it_waits_its_time() -> None:
    loop = asyncio.get_running_loop()
    began = loop.time()
    await pause(None, 0.05)
    assert loop.time() - began >= 0.04


async def test_a_pause_ends_when_stop_is_set() -> None:
    stop = asyncio.Event()
    stop.set()
    await asyncio.wait_for(pause(stop, 3600), 5)
