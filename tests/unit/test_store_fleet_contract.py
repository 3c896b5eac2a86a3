"""The `JobStore` contract of a fleet (issue 18), run against every store as tests/unit/test_store_contract.py's:
claims that take only the jobs a worker can run, the claim journal kept per worker and handed over, and reports
held so that each goes once however many reporters a source has."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from hatchway.models import Job, JobSpec, JobState, Outcome
from hatchway.store import JobStore, SqliteStore
from hatchway.store.base import Fit
from hatchway.store.postgres import PostgresStore
from tests.postgres_db import fresh_schema
from tests.unit.test_store_contract import T1, claim_all, enqueue_all, fetch

MakeJob = Callable[..., Job]


def placed(job: Job, **placement: str) -> Job:
    return job.model_copy(update={"spec": job.spec.model_copy(update={"placement": placement})})


def not_image(image: str) -> Callable[[JobSpec], bool]:
    return lambda spec: spec.image != image


async def claimed_by(store: JobStore, worker_id: str, fit: Fit) -> list[str]:
    claimed: list[str] = []
    while (job := await store.claim_next(worker_id, fit)) is not None:
        assert (job.state, job.worker_id) == (JobState.BUILDING, worker_id)
        claimed.append(job.id)
    return claimed


# Placement and fit


async def test_a_worker_claims_only_jobs_whose_placement_its_labels_meet(store: JobStore, make_job: MakeJob) -> None:
    await enqueue_all(
        store,
        make_job(id="anywhere"),
        placed(make_job(id="in-a"), zone="a"),
        placed(make_job(id="in-b", priority=5), zone="b"),
        placed(make_job(id="a-gpu"), zone="a", gpu="yes"),
        placed(make_job(id="a-later"), zone="a"),
    )
    assert await claimed_by(store, "wa", Fit(labels={"zone": "a", "rack": "7"})) == ["anywhere", "in-a", "a-later"]
    assert await claimed_by(store, "wc", Fit(labels={"zone": "c", "gpu": "yes"})) == []
    assert await claimed_by(store, "wb", Fit(labels={"zone": "b"})) == ["in-b"]
    assert await claimed_by(store, "wg", Fit(labels={"zone": "a", "gpu": "yes"})) == ["a-gpu"]


async def test_without_a_fit_any_job_is_claimed_whatever_its_placement(store: JobStore, make_job: MakeJob) -> None:
    await enqueue_all(store, placed(make_job(id="in-a"), zone="a"), make_job(id="anywhere"))
    assert await claim_all(store) == ["in-a", "anywhere"]


async def test_jobs_a_worker_cannot_run_stay_queued_in_their_place_for_another(
    store: JobStore, make_job: MakeJob
) -> None:
    await enqueue_all(
        store,
        make_job(id="low", priority=0),
        make_job(id="odd-high", priority=9, image="odd:1"),
        make_job(id="mid", priority=5),
        make_job(id="odd-low", priority=0, image="odd:1"),
        make_job(id="mid-2", priority=5),
    )
    fussy = Fit(runs=not_image("odd:1"))
    first = await store.claim_next("fussy", fussy)
    assert first is not None and first.id == "mid", "the best job it can run, not the best job"
    for job_id in ("odd-high", "odd-low"):
        untouched = await fetch(store, job_id)
        assert (untouched.state, untouched.worker_id, untouched.message) == (JobState.QUEUED, None, None)
    assert await claimed_by(store, "fussy", fussy) == ["mid-2", "low"]
    assert await claim_all(store, "any") == ["odd-high", "odd-low"], "left queued, in priority then FIFO order"


async def test_many_jobs_that_do_not_fit_ahead_of_one_that_does_do_not_hide_it(
    store: JobStore, make_job: MakeJob
) -> None:
    # More than a window of candidates (PostgreSQL looks at them some at a time), across several priorities.
    await enqueue_all(store, *(make_job(id=f"odd-{i:02}", priority=i % 3, image="odd:1") for i in range(40)))
    await enqueue_all(store, placed(make_job(id="elsewhere", priority=2), zone="b"), make_job(id="fits", priority=0))
    fit = Fit(labels={"zone": "a"}, runs=not_image("odd:1"))
    assert await claimed_by(store, "w1", fit) == ["fits"]
    assert (await store.counts())[JobState.QUEUED] == 41


async def test_concurrent_claims_with_fits_hand_each_job_once_to_a_worker_it_fits(
    store: JobStore, make_job: MakeJob
) -> None:
    zones = ("a", "b", "c")
    jobs = [placed(make_job(id=f"j{i:02}", priority=i % 4), zone=zones[i % 3]) for i in range(45)]
    jobs += [make_job(id=f"odd{i}", image="odd:1") for i in range(5)]
    await enqueue_all(store, *jobs)
    fits = {
        "wa": Fit(labels={"zone": "a"}, runs=not_image("odd:1")),
        "wb": Fit(labels={"zone": "b"}, runs=not_image("odd:1")),
        "wc": Fit(labels={"zone": "c"}),
        "wc2": Fit(labels={"zone": "c"}, runs=not_image("odd:1")),
    }
    claimed: list[Job] = []

    async def worker(worker_id: str) -> None:
        # None may only mean that what is left is being looked at by another claim (PostgreSQL passes over the
        # rows another claim holds): a worker tries again later, as this one does once all have stopped.
        while (job := await store.claim_next(worker_id, fits[worker_id])) is not None:
            claimed.append(job)

    await asyncio.gather(*(worker(worker_id) for worker_id in [*fits] * 3))
    for worker_id in fits:
        await worker(worker_id)
    assert len(claimed) == len({job.id for job in claimed}) == 50, "every job once, each to one worker"
    for job in claimed:
        assert job.worker_id is not None and fits[job.worker_id].admits(job.spec), (job.id, job.worker_id)


@pytest.mark.postgres
async def test_postgres_passes_over_a_job_another_claim_holds_instead_of_waiting(make_job: MakeJob) -> None:
    async with fresh_schema() as url:
        fleet = PostgresStore(url)
        try:
            await enqueue_all(fleet, make_job(id="head", priority=9), make_job(id="next"))
            async with await psycopg.AsyncConnection.connect(url) as other, other.transaction():
                await other.execute("SELECT 1 FROM jobs WHERE id = 'head' FOR UPDATE")
                claimed = await asyncio.wait_for(fleet.claim_next("w1", Fit(runs=lambda spec: True)), 10)
            assert claimed is not None and claimed.id == "next"
            assert (await fetch(fleet, "head")).state == JobState.QUEUED
        finally:
            await fleet.close()


# The claim journal


async def test_each_worker_takes_up_its_own_claims_and_a_dead_one_s_are_handed_over(store: JobStore) -> None:
    await store.record_claim("queue", "a", "item-a", "w1")
    await store.record_claim("queue", "b", "item-b", "w2")
    await store.record_claim("judge", "c", "item-c", "w1")
    await store.record_claim("queue", "d", "item-d", "w1")
    assert await store.claims("queue", "w1") == [("a", "item-a"), ("d", "item-d")]
    assert await store.claims("queue", "w2") == [("b", "item-b")]

    assert await store.adopt_claims("w1", "w2") == 3
    assert await store.claims("queue", "w1") == []
    assert await store.claims("queue", "w2") == [("a", "item-a"), ("b", "item-b"), ("d", "item-d")]
    assert await store.claims("judge", "w2") == [("c", "item-c")]
    assert await store.adopt_claims("w1", "w3") == 0, "nothing is left to hand over"
    await store.forget_claim("queue", "a")
    assert await store.claims("queue", "w2") == [("b", "item-b"), ("d", "item-d")]


async def test_claims_recorded_before_they_named_a_worker_go_to_the_first_that_asks(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    await SqliteStore(path).close()
    with sqlite3.connect(path) as db:  # as a worker left it before the journal named the claiming worker
        db.execute("INSERT INTO claims (origin, external_id, item, claimed_at) VALUES ('queue', 'old', 'x', 1)")
    db.close()
    migrated = SqliteStore(path)
    try:
        assert await migrated.claims("queue", "w1") == [("old", "x")]
        assert await migrated.claims("queue", "w2") == [], "taken up by one worker, not by every one"
    finally:
        await migrated.close()


# Reports held by one reporter


async def ended(store: JobStore, make_job: MakeJob, *job_ids: str, origin: str = "queue") -> None:
    await enqueue_all(store, *(make_job(id=i).model_copy(update={"origin": origin, "external_id": i}) for i in job_ids))
    for job_id in job_ids:
        claimed = await store.claim_next("w1")
        assert claimed is not None and claimed.id == job_id
        await store.finish(job_id, Outcome(state=JobState.SUCCEEDED, exit_code=0), T1)


async def test_a_held_report_is_handed_to_no_other_reporter(store: JobStore, make_job: MakeJob) -> None:
    await ended(store, make_job, "a", "b")
    await ended(store, make_job, "c", origin="other")
    async with store.hold_report("queue") as first:
        assert first is not None and first.job.id == "a"
        async with store.hold_report("queue") as second:
            assert second is not None and second.job.id == "b", "the oldest one not held"
            async with store.hold_report("queue") as third:
                assert third is None, "both are held"
        reported = await first.reported(T1)
        assert reported is not None and reported.reported_at == T1
    assert await store.mark_reported("a", T1) is None, "reported once"
    async with store.hold_report("queue") as again:
        assert again is not None and again.job.id == "b", "a hold let go without a report hands the job out again"
    async with store.hold_report("queue") as held:
        assert held is not None and await held.reported(T1) is not None
    async with store.hold_report("queue") as nothing:
        assert nothing is None
    assert [job.id for job in await store.unreported("other")] == ["c"]


async def test_reporters_racing_over_one_outbox_report_each_job_once(store: JobStore, make_job: MakeJob) -> None:
    job_ids = [f"j{i:02}" for i in range(20)]
    await ended(store, make_job, *job_ids)
    reported: list[str] = []

    async def reporter() -> None:
        while True:
            async with store.hold_report("queue") as held:
                if held is None:
                    return
                await asyncio.sleep(0)  # the report goes out: the others go on meanwhile
                if await held.reported(T1) is not None:
                    reported.append(held.job.id)

    await asyncio.gather(*(reporter() for _ in range(4)))
    assert sorted(reported) == job_ids


@pytest.mark.postgres
async def test_postgres_lets_go_of_a_report_whose_holder_died(make_job: MakeJob) -> None:
    async with fresh_schema() as url:
        dying, survivor = PostgresStore(url), PostgresStore(url)
        try:
            await ended(survivor, make_job, "a")
            with contextlib.suppress(psycopg.OperationalError):
                async with dying.hold_report("queue") as held:
                    assert held is not None and held.job.id == "a"
                    async with survivor.hold_report("queue") as meanwhile:
                        assert meanwhile is None, "held by the other worker"
                    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as admin:
                        await admin.execute(
                            # With a timeout it returns once the backend is gone, its locks with it.
                            "SELECT pg_terminate_backend(pid, 10000) FROM pg_locks"
                            " WHERE relation = 'jobs'::regclass AND mode = 'RowShareLock' AND pid <> pg_backend_pid()"
                        )
                    async with survivor.hold_report("queue") as taken:
                        assert taken is not None and taken.job.id == "a", "the dead holder's lock went with it"
                        assert await taken.reported(T1) is not None
            assert (await fetch(survivor, "a")).reported_at == T1
        finally:
            await dying.close()
            await survivor.close()
