"""Leases and fencing on the shared PostgreSQL store, with several store instances as several workers: a worker whose
lease was taken over changes nothing it held, claims nothing, and learns why; a survivor takes each lost worker
over once; two callback senders never hold one callback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from datetime import timedelta

import pytest

from hatchway.models import CallbackStatus, Job, JobState, Outcome, Reason, Resources, RunInfo, utcnow
from hatchway.output.events import EventType
from hatchway.store.fleet import LeaseLost, WorkerHealth, WorkerInfo
from hatchway.store.postgres import PostgresStore
from tests.postgres_db import fresh_schema

pytestmark = pytest.mark.postgres

MakeJob = Callable[..., Job]
LEASE_S = 30.0
MOMENT_S = 0.05
"""A lease that runs out at once, for a worker the test means to lose."""


@pytest.fixture
async def url() -> AsyncIterator[str]:
    async with fresh_schema() as found:
        yield found


@pytest.fixture
async def stores(url: str) -> AsyncIterator[Callable[[], PostgresStore]]:
    """Stores on one database, as each worker of a fleet has its own."""
    opened: list[PostgresStore] = []

    def open_one() -> PostgresStore:
        opened.append(PostgresStore(url))
        return opened[-1]

    yield open_one
    for store in opened:
        await store.close()


def info(worker_id: str) -> WorkerInfo:
    return WorkerInfo(id=worker_id, address=f"http://{worker_id}:8080", version="1.0", slots=4)


async def lose(store: PostgresStore, worker_id: str) -> None:
    """Until the worker's lease (of moments) has run out by the database's clock."""
    deadline = time.monotonic() + 10
    while not any(worker.id == worker_id and worker.health == WorkerHealth.EXPIRED for worker in await store.workers()):
        assert time.monotonic() < deadline, f"the lease of {worker_id} never ran out"
        await asyncio.sleep(0.02)  # polling the database's clock: there is no event to await


async def endings(store: PostgresStore, job_id: str) -> list[tuple[EventType, JobState]]:
    batch = await store.events_after(0, limit=1000, job_id=job_id)
    return [(event.type, event.state) for event in batch.events]


async def test_a_worker_whose_lease_was_taken_over_changes_nothing_it_held_until_it_registers_again(
    stores: Callable[[], PostgresStore], make_job: MakeJob
) -> None:
    lost, survivor = stores(), stores()
    await lost.register(info("lost"), MOMENT_S)
    for job_id in ("claimed", "ran", "waiting"):
        await lost.enqueue(make_job(id=job_id))
    assert [(await lost.claim_next("lost")) is not None for _ in range(2)] == [True, True]
    await lost.mark_running("ran", utcnow(), RunInfo())
    await lose(survivor, "lost")
    await survivor.register(info("survivor"), LEASE_S)
    (taken,) = await survivor.reclaim_expired("survivor")
    assert sorted(job.id for job in taken.jobs) == ["claimed", "ran"]

    # Before it knows: every change to what it held is refused (even once another worker runs it again), and it
    # claims nothing.
    assert await survivor.claim_next("survivor") is not None
    assert await survivor.mark_running("claimed", utcnow(), RunInfo()) is not None
    assert await lost.mark_running("claimed", utcnow(), RunInfo()) is None
    assert await lost.finish("claimed", Outcome(state=JobState.SUCCEEDED, exit_code=0), utcnow()) is None
    assert await lost.finish("ran", Outcome(state=JobState.SUCCEEDED, exit_code=0), utcnow()) is None
    assert await lost.requeue_unstarted("claimed", "engine gone") is None
    assert await lost.requeue_lost("claimed") is None
    await lost.update_resources("claimed", Resources(peak_memory_bytes=1))
    assert await lost.claim_next("lost") is None, "no claim once its lease was taken over"
    held = await survivor.get("claimed")
    assert held is not None and (held.state, held.worker_id, held.resources) == (
        JobState.RUNNING,
        "survivor",
        Resources(),
    )
    assert await survivor.finish("claimed", Outcome(state=JobState.SUCCEEDED, exit_code=0), utcnow()) is not None
    ran = await survivor.get("ran")
    assert ran is not None and (ran.state, ran.reason, ran.resources) == (
        JobState.FAILED,
        Reason.WORKER_LOST,
        Resources(),
    )
    # Then it learns, and comes back as a new generation.
    assert await lost.renew_lease("lost", 1, LEASE_S) == LeaseLost.RECLAIMED
    assert await lost.claim_next("lost") is None
    assert await lost.register(info("lost"), LEASE_S) == 2
    again = await lost.claim_next("lost")
    assert again is not None and again.id == "waiting"
    assert await lost.mark_running("waiting", utcnow(), RunInfo()) is not None
    assert await lost.finish("waiting", Outcome(state=JobState.SUCCEEDED, exit_code=0), utcnow()) is not None
    assert await endings(survivor, "ran") == [
        (EventType.JOB_QUEUED, JobState.QUEUED),
        (EventType.JOB_BUILDING, JobState.BUILDING),
        (EventType.JOB_RUNNING, JobState.RUNNING),
        (EventType.JOB_FINISHED, JobState.FAILED),
    ]


async def test_a_restarted_worker_takes_up_what_its_last_life_left_and_the_old_life_is_fenced(
    stores: Callable[[], PostgresStore], make_job: MakeJob
) -> None:
    old, new = stores(), stores()
    await old.register(info("w1"), LEASE_S)
    await old.enqueue(make_job(id="a"))
    await old.claim_next("w1")
    await old.mark_running("a", utcnow(), RunInfo())
    assert await new.register(info("w1"), LEASE_S) == 2, "the same worker, started again"
    assert await old.finish("a", Outcome(state=JobState.SUCCEEDED, exit_code=0), utcnow()) is None
    assert await old.renew_lease("w1", 1, LEASE_S) == LeaseLost.SUPERSEDED
    finished = await new.finish("a", Outcome(state=JobState.SUCCEEDED, exit_code=0), utcnow())
    assert finished is not None and finished.state == JobState.SUCCEEDED, "its new life finishes it"


async def test_survivors_asking_together_take_each_lost_worker_over_once(
    stores: Callable[[], PostgresStore], make_job: MakeJob
) -> None:
    lost = [stores() for _ in range(4)]
    for number, store in enumerate(lost):
        await store.register(info(f"lost-{number}"), MOMENT_S)
        for index in range(3):
            await store.enqueue(make_job(id=f"job-{number}-{index}"))
            assert await store.claim_next(f"lost-{number}") is not None
    survivors = [stores() for _ in range(3)]
    for number, store in enumerate(survivors):
        await store.register(info(f"survivor-{number}"), LEASE_S)
    for number in range(4):
        await lose(survivors[0], f"lost-{number}")

    rounds = await asyncio.gather(*(store.reclaim_expired(f"survivor-{n}") for n, store in enumerate(survivors * 2)))
    taken = [reclaim.worker_id for found in rounds for reclaim in found]
    assert sorted(taken) == [f"lost-{number}" for number in range(4)]
    for number in range(4):
        for index in range(3):
            events = await endings(survivors[0], f"job-{number}-{index}")
            assert events.count((EventType.JOB_REQUEUED, JobState.QUEUED)) == 1, events
    assert (await survivors[0].counts())[JobState.QUEUED] == 12


async def test_no_claim_of_a_worker_being_taken_over_slips_past_the_takeover(
    stores: Callable[[], PostgresStore], make_job: MakeJob
) -> None:
    lost, survivor = stores(), stores()
    await lost.register(info("lost"), MOMENT_S)
    for index in range(60):
        await lost.enqueue(make_job(id=f"job-{index:02}"))
    await survivor.register(info("survivor"), LEASE_S)
    await lose(survivor, "lost")

    async def claim_on() -> None:
        for _ in range(60):
            await lost.claim_next("lost")

    async def take_over() -> None:
        # A claim under way holds the worker's row: the takeover skips it, and comes back, as a survivor's loop does.
        deadline = time.monotonic() + 10
        while not await survivor.reclaim_expired("survivor"):
            assert time.monotonic() < deadline, "never taken over"

    await asyncio.gather(claim_on(), take_over())
    listed = {worker.id: worker for worker in await survivor.workers()}
    assert listed["lost"].reclaimed_at is not None
    assert (listed["lost"].building, listed["lost"].running) == (0, 0), "a claim outlived the takeover"


async def test_two_senders_never_hold_the_same_callback(stores: Callable[[], PostgresStore], make_job: MakeJob) -> None:
    first, second = stores(), stores()
    callback = CallbackStatus(url="http://127.0.0.1:9/hook", delivery_id="d")
    for index in range(30):
        await first.enqueue(make_job(id=f"job-{index:02}", callback=callback))
        await first.claim_next("w1")
        await first.finish(f"job-{index:02}", Outcome(state=JobState.SUCCEEDED, exit_code=0), utcnow())
    now = utcnow()
    hold = now + timedelta(seconds=60)

    async def pick(store: PostgresStore) -> list[str]:
        picked: list[str] = []
        while found := await store.due_callbacks(now, 4, hold_until=hold):
            picked += [job.id for job in found]
        return picked

    one, two = await asyncio.gather(pick(first), pick(second))
    assert not set(one) & set(two)
    assert sorted(one + two) == [f"job-{index:02}" for index in range(30)]
