"""`Scheduler` over a `MemoryStore`, with a fake launch that runs until the test releases each job."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Literal

import pytest

from hatchway.jobs.scheduler import Scheduler
from hatchway.models import Job, JobState
from hatchway.store import MemoryStore
from tests.conftest import until

MakeJob = Callable[..., Job]
WAIT_S = 5  # a bound on waits for events that should come at once, so a failure is quick and clear


@dataclass
class FakeLaunch:
    """Records each start and keeps the job "running" until `release(job_id)`."""

    started: list[str] = field(default_factory=list)
    running: set[str] = field(default_factory=set)
    most_at_once: int = 0
    crash: set[str] = field(default_factory=set)
    _release: defaultdict[str, asyncio.Event] = field(default_factory=lambda: defaultdict(asyncio.Event))
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def __call__(self, job: Job) -> None:
        async with self._changed:
            self.started.append(job.id)
            self.running.add(job.id)
            self.most_at_once = max(self.most_at_once, len(self.running))
            self._changed.notify_all()
        try:
            if job.id in self.crash:
                raise RuntimeError(f"launch of {job.id} blew up")
            await self._release[job.id].wait()
        finally:
            self.running.discard(job.id)

    def release(self, job_id: str) -> None:
        self._release[job_id].set()

    def release_all(self) -> None:
        for job_id in self.started:
            self.release(job_id)

    async def wait_started(self, count: int) -> None:
        async with asyncio.timeout(WAIT_S), self._changed:
            await self._changed.wait_for(lambda: len(self.started) >= count)


@dataclass
class Harness:
    store: MemoryStore
    launch: FakeLaunch
    scheduler: Scheduler


@pytest.fixture
async def make_harness() -> AsyncIterator[Callable[[int], Harness]]:
    """Start a scheduler (poll interval 60 s, so only wake-ups move it) and stop it cleanly afterwards."""
    stop = asyncio.Event()
    loops: list[asyncio.Task[None]] = []
    harnesses: list[Harness] = []

    def make(max_concurrent_jobs: int) -> Harness:
        store, launch = MemoryStore(), FakeLaunch()
        scheduler = Scheduler(
            store=store,
            worker_id="w1",
            max_concurrent_jobs=max_concurrent_jobs,
            poll_interval_s=60,
            launch=launch,
        )
        loops.append(asyncio.create_task(scheduler.run(stop), name="scheduler"))
        harnesses.append(Harness(store, launch, scheduler))
        return harnesses[-1]

    yield make
    stop.set()
    async with asyncio.timeout(WAIT_S):
        await asyncio.gather(*loops)
        for harness in harnesses:
            harness.launch.release_all()
            await asyncio.gather(*harness.scheduler.tasks, return_exceptions=True)


async def enqueue(harness: Harness, *jobs: Job) -> None:
    for job in jobs:
        await harness.store.enqueue(job)
    harness.scheduler.wake()


async def test_never_more_than_max_concurrent_jobs_run(
    make_harness: Callable[[int], Harness], make_job: MakeJob
) -> None:
    harness = make_harness(3)
    await enqueue(harness, *(make_job(id=f"j{i}") for i in range(10)))
    await harness.launch.wait_started(3)
    assert harness.scheduler.running == 3
    assert await harness.store.counts() == {JobState.QUEUED: 7, JobState.BUILDING: 3, JobState.RUNNING: 0}

    for finished in range(10):
        harness.launch.release(harness.launch.started[finished])
        await harness.launch.wait_started(min(finished + 4, 10))
        assert harness.scheduler.running <= 3
    assert harness.launch.started == [f"j{i}" for i in range(10)]
    assert harness.launch.most_at_once == 3


async def test_a_freed_slot_starts_the_next_job_without_waiting_for_the_poll(
    make_harness: Callable[[int], Harness], make_job: MakeJob
) -> None:
    harness = make_harness(1)
    await enqueue(harness, make_job(id="first"), make_job(id="second"))
    await harness.launch.wait_started(1)
    assert harness.launch.started == ["first"]
    assert await harness.store.counts() == {JobState.QUEUED: 1, JobState.BUILDING: 1, JobState.RUNNING: 0}

    harness.launch.release("first")
    await harness.launch.wait_started(2)
    assert harness.launch.started == ["first", "second"]


async def test_wake_starts_newly_queued_work(make_harness: Callable[[int], Harness], make_job: MakeJob) -> None:
    harness = make_harness(2)
    await enqueue(harness, make_job(id="early"))
    await harness.launch.wait_started(1)
    await enqueue(harness, make_job(id="late"))
    await harness.launch.wait_started(2)
    assert harness.launch.started == ["early", "late"]


async def test_jobs_start_in_priority_order(make_harness: Callable[[int], Harness], make_job: MakeJob) -> None:
    harness = make_harness(1)
    await enqueue(
        harness,
        make_job(id="blocker", priority=100),
        make_job(id="low", priority=0),
        make_job(id="high", priority=10),
        make_job(id="mid-1", priority=5),
        make_job(id="mid-2", priority=5),
    )
    for count in range(1, 6):
        await harness.launch.wait_started(count)
        harness.launch.release(harness.launch.started[-1])
    assert harness.launch.started == ["blocker", "high", "mid-1", "mid-2", "low"]


async def test_a_crashed_launch_frees_its_slot_and_is_logged(
    make_harness: Callable[[int], Harness], make_job: MakeJob, caplog: pytest.LogCaptureFixture
) -> None:
    harness = make_harness(1)
    harness.launch.crash.add("boom")
    await enqueue(harness, make_job(id="boom"), make_job(id="next"))
    await harness.launch.wait_started(2)
    assert harness.launch.started == ["boom", "next"]
    crashes = [record for record in caplog.records if getattr(record, "event", None) == "job_task_crashed"]
    assert len(crashes) == 1
    assert crashes[0].exc_info is not None and "boom" in str(crashes[0].exc_info[1])


class RoundCounter(asyncio.Event):
    """The engine's readiness, counting the scheduler's waits on it: it waits on it once a round while it is down,
    after the round's (refused) chance to claim."""

    def __init__(self) -> None:
        super().__init__()
        self.waits = 0

    async def wait(self) -> Literal[True]:
        self.waits += 1
        return await super().wait()


async def test_nothing_is_claimed_while_the_engine_is_down(make_job: MakeJob) -> None:
    store, launch, ready, stop = MemoryStore(), FakeLaunch(), RoundCounter(), asyncio.Event()
    scheduler = Scheduler(
        store=store, worker_id="w1", max_concurrent_jobs=2, poll_interval_s=0.01, launch=launch, ready=ready
    )
    loop = asyncio.create_task(scheduler.run(stop))
    try:
        await store.enqueue(make_job(id="a"))
        await store.enqueue(make_job(id="b"))
        for _ in range(5):  # wake-ups and poll rounds alike claim nothing while it is down
            seen = ready.waits
            scheduler.wake()
            await until(lambda seen=seen: ready.waits > seen, "the scheduler did not go round again")
        assert launch.started == []
        assert await store.counts() == {JobState.QUEUED: 2, JobState.BUILDING: 0, JobState.RUNNING: 0}
        ready.set()  # the engine answers again: that alone wakes the scheduler
        await launch.wait_started(2)
        assert launch.started == ["a", "b"]
    finally:
        stop.set()
        launch.release_all()
        async with asyncio.timeout(WAIT_S):
            await loop
            await asyncio.gather(*scheduler.tasks, return_exceptions=True)
