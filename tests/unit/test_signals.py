"""JobSignals: every waiter wakes on a change, and nothing is kept once no one waits."""

from __future__ import annotations

import asyncio

from hatchway.jobs.notify import JobSignals
from tests.conftest import until


async def test_all_waiters_wake_and_nothing_is_kept_afterwards() -> None:
    signals = JobSignals()
    woke: list[int] = []
    watching: list[int] = []

    async def waiter(n: int) -> None:
        with signals.watching("job") as changed:
            watching.append(n)  # and it waits next, without a pause in between
            if await signals.wait(changed, 5):
                woke.append(n)

    waiters = [asyncio.create_task(waiter(n)) for n in range(3)]
    await until(lambda: len(watching) == 3, "the waiters never began to watch")
    signals.notify("job")
    await asyncio.gather(*waiters)
    assert sorted(woke) == [0, 1, 2]
    assert signals.watched == 0


async def test_a_watch_that_saw_no_change_is_forgotten() -> None:
    signals = JobSignals()
    with signals.watching("job") as changed:
        assert not await signals.wait(changed, 0.01)
    assert signals.watched == 0


async def test_a_late_watcher_is_not_dropped_by_an_earlier_one_leaving() -> None:
    signals = JobSignals()
    earlier = signals.watching("job")
    first = earlier.__enter__()
    signals.notify("job")
    with signals.watching("job") as second:
        earlier.__exit__(None, None, None)  # the first watcher leaves while the second still waits
        signals.notify("job")
        assert second.is_set(), "the second watcher's event was dropped"
    assert first is not second and signals.watched == 0
