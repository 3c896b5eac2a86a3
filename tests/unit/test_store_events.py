"""The store's event log and output times, run against every store: each state change records exactly one event,
in order, and nothing else does; the log is pruned to a bound without ever reusing an id. On PostgreSQL, written by
many connections at once, events are numbered in commit order."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from hatchway.models import Job, JobState, Outcome, Reason, RunInfo, Stream
from hatchway.output.events import EventType
from hatchway.output.line_times import LineTimes
from hatchway.store import JobStore, SqliteStore, queries
from hatchway.store.postgres import PostgresStore
from tests.postgres_db import fresh_schema

MakeJob = Callable[..., Job]
T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


async def history(store: JobStore, after: int = 0, **filters: str) -> list[tuple[str, str, str, str | None]]:
    batch = await store.events_after(after, limit=1000, **filters)  # type: ignore[arg-type]
    return [(e.type.value, e.job_id, e.state.value, e.reason) for e in batch.events]


async def test_a_job_s_life_is_told_by_its_events_in_order(store: JobStore, make_job: MakeJob) -> None:
    before = datetime.now(UTC)
    await store.enqueue(make_job(id="a", labels={"team": "x"}))
    await store.claim_next("w1")
    await store.mark_running("a", T0, RunInfo())
    await store.update_resources("a", Outcome(state=JobState.RUNNING).resources)  # no state change: no event
    await store.finish("a", Outcome(state=JobState.FAILED, reason=Reason.EXIT_CODE, exit_code=1), T0)
    await store.finish("a", Outcome(state=JobState.SUCCEEDED), T0)  # refused: no event
    batch = await store.events_after(0, limit=10)
    assert [(e.id, e.type) for e in batch.events] == [
        (1, EventType.JOB_QUEUED),
        (2, EventType.JOB_BUILDING),
        (3, EventType.JOB_RUNNING),
        (4, EventType.JOB_FINISHED),
    ]
    finished = batch.events[-1]
    assert (finished.state, finished.reason, finished.worker_id) == (JobState.FAILED, Reason.EXIT_CODE, "w1")
    assert finished.kind == "job" and finished.labels == {"team": "x"} and finished.job_id == "a"
    assert batch.events[0].worker_id is None
    # SQLite's clock has milliseconds only.
    assert all(before - timedelta(milliseconds=1) <= e.time <= datetime.now(UTC) for e in batch.events)
    assert (batch.oldest_id, batch.newest_id) == (1, 4)


async def test_cancel_requeue_and_a_refused_item_record_their_events(store: JobStore, make_job: MakeJob) -> None:
    await store.enqueue(make_job(id="c"))
    await store.cancel("c", T0)
    await store.cancel("c", T0)  # refused: no event
    await store.enqueue(make_job(id="r"))
    await store.claim_next("w1")
    await store.requeue_unstarted("r", "the engine went away")
    await store.claim_next("w2")
    await store.requeue_lost("r")
    refused = make_job(id="x", state=JobState.FAILED, reason=Reason.REFUSED, finished_at=T0)
    await store.enqueue(refused)
    await store.enqueue(make_job(id="c"))  # exists already: no event
    assert await history(store) == [
        ("job_queued", "c", "queued", None),
        ("job_finished", "c", "killed", "cancelled"),
        ("job_queued", "r", "queued", None),
        ("job_building", "r", "building", None),
        ("job_requeued", "r", "queued", None),
        ("job_building", "r", "building", None),
        ("job_requeued", "r", "queued", None),
        ("job_finished", "x", "failed", "refused"),
    ]
    requeued = (await store.events_after(6, limit=1)).events[0]
    assert requeued.worker_id == "w2", "a requeue names the worker that had the job"


async def test_events_after_pages_and_filters(store: JobStore, make_job: MakeJob) -> None:
    for job_id in ("a", "b", "c"):
        await store.enqueue(make_job(id=job_id))
    await store.claim_next("w1")
    assert await history(store, after=2) == [
        ("job_queued", "c", "queued", None),
        ("job_building", "a", "building", None),
    ]
    assert [e.id for e in (await store.events_after(1, limit=2)).events] == [2, 3]
    assert await history(store, job_id="a") == [
        ("job_queued", "a", "queued", None),
        ("job_building", "a", "building", None),
    ]
    assert await history(store, kind="grade") == []
    assert len(await history(store, kind="job")) == 4
    empty = await store.events_after(4, limit=10)
    assert (empty.events, empty.oldest_id, empty.newest_id) == ([], 1, 4)


async def test_pruning_keeps_the_newest_and_never_reuses_an_id(store: JobStore, make_job: MakeJob) -> None:
    fresh = await store.events_after(0, limit=10)
    assert (fresh.events, fresh.oldest_id, fresh.newest_id) == ([], None, 0)
    for number in range(5):
        await store.enqueue(make_job(id=f"j{number}"))
    assert await store.prune_events(2) == 3
    batch = await store.events_after(0, limit=10)
    assert [e.id for e in batch.events] == [4, 5]
    assert (batch.oldest_id, batch.newest_id) == (4, 5)
    assert await store.prune_events(0) == 2
    await store.enqueue(make_job(id="later"))
    assert [e.id for e in (await store.events_after(0, limit=10)).events] == [6]


async def test_a_cursor_starts_at_0_and_moves_only_from_where_it_stands(store: JobStore) -> None:
    assert await store.cursor("reporter") == 0
    assert not await store.advance_cursor("reporter", 3, 5)  # it stands at 0, not 3
    assert await store.advance_cursor("reporter", 0, 2)
    assert not await store.advance_cursor("reporter", 0, 4)  # a second reader that also saw 0 is refused
    assert await store.cursor("reporter") == 2
    assert await store.advance_cursor("reporter", 2, 7)
    assert (await store.cursor("reporter"), await store.cursor("other")) == (7, 0)


async def test_pruning_keeps_every_event_after_the_lowest_cursor(store: JobStore, make_job: MakeJob) -> None:
    for number in range(6):
        await store.enqueue(make_job(id=f"j{number}"))
    assert await store.advance_cursor("slow", 0, 2)
    assert await store.advance_cursor("fast", 0, 5)
    assert await store.prune_events(1) == 2  # 3, 4 and 5 stay for "slow", though only one is to be kept
    assert [e.id for e in (await store.events_after(0, limit=10)).events] == [3, 4, 5, 6]
    assert await store.advance_cursor("slow", 2, 6)
    assert await store.prune_events(1) == 3  # the lowest, "fast", stands at 5
    assert [e.id for e in (await store.events_after(0, limit=10)).events] == [6]


async def test_output_times_are_kept_with_the_ended_job(store: JobStore, make_job: MakeJob) -> None:
    await store.enqueue(make_job(id="a"))
    assert await store.output_times("a") == {}
    await store.claim_next("w1")
    times = LineTimes([(0, 1_714_564_800_000), (3, 1_714_564_801_500)])
    outcome = Outcome(state=JobState.SUCCEEDED, stdout="1\n2\n3\n4\n", output_times={Stream.STDOUT: times.encode()})
    await store.finish("a", outcome, T0)
    kept = await store.output_times("a")
    assert list(kept) == [Stream.STDOUT] and list(kept[Stream.STDOUT]) == list(times)
    assert await store.output_times("unknown") == {}


async def test_sqlite_events_and_their_ids_outlive_a_reopening(tmp_path: Path, make_job: MakeJob) -> None:
    first = SqliteStore(tmp_path / "db.sqlite")
    await first.enqueue(make_job(id="a"))
    await first.enqueue(make_job(id="b"))
    await first.prune_events(0)
    await first.close()
    second = SqliteStore(tmp_path / "db.sqlite")
    await second.enqueue(make_job(id="c"))
    batch = await second.events_after(0, limit=10)
    assert [(e.id, e.job_id) for e in batch.events] == [(3, "c")]
    await second.close()


async def test_a_version_4_database_gains_the_event_log(tmp_path: Path, make_job: MakeJob) -> None:
    path = tmp_path / "old.sqlite"
    old = sqlite3.connect(path)
    jobs_table = queries.SCHEMA.split("CREATE INDEX")[0]
    added_since = (
        ",\n    callback         TEXT",
        ",\n    callback_due_at  REAL",
        ",\n    output_times     TEXT",
        ",\n    cancel_requested_at REAL",
        ",\n    cancel_grace_s   REAL",
        ",\n    placement        TEXT NOT NULL DEFAULT '{}'",
        ",\n    launched_at      REAL",
    )
    for added in added_since:
        assert added in jobs_table
        jobs_table = jobs_table.replace(added, "")
    old.executescript(jobs_table)
    old.execute("PRAGMA user_version = 4")
    old.close()
    store = SqliteStore(path)
    await store.enqueue(make_job(id="a"))
    await store.claim_next("w1")
    await store.finish("a", Outcome(state=JobState.SUCCEEDED, output_times={Stream.STDOUT: [0, 1]}), T0)
    assert await history(store) == [
        ("job_queued", "a", "queued", None),
        ("job_building", "a", "building", None),
        ("job_finished", "a", "succeeded", None),
    ]
    assert list((await store.output_times("a"))[Stream.STDOUT]) == [(0, 1)]
    assert await store.advance_cursor("reader", 0, 3) and await store.cursor("reader") == 3  # and the cursors
    await store.close()


async def _writes(stores: list[PostgresStore], make_job: MakeJob, *, writers: int, jobs: int) -> None:
    """Jobs queued, claimed, started and ended by `writers` writers at once: four events, in four transactions,
    for each job (a job another writer claimed is that writer's to end; what is left is ended last)."""

    async def life(store: PostgresStore, job: Job) -> None:
        await store.mark_running(job.id, T0, RunInfo())
        await store.finish(job.id, Outcome(state=JobState.SUCCEEDED), T0)

    async def writer(store: PostgresStore, number: int) -> None:
        for job_number in range(jobs):
            await store.enqueue(make_job(id=f"w{number}-{job_number}"))
            claimed = await store.claim_next(f"worker-{number}")
            if claimed is not None:
                await life(store, claimed)

    await asyncio.gather(*(writer(stores[number % len(stores)], number) for number in range(writers)))
    while (left := await stores[0].claim_next("last")) is not None:
        await life(stores[0], left)


@pytest.mark.postgres
async def test_a_reader_never_finds_an_event_older_than_one_it_has_seen(make_job: MakeJob) -> None:
    """Events are numbered in commit order: a reader that saw id N never later finds a smaller id committed, so
    reading on from the last id it saw misses nothing, however many connections write at once."""
    async with fresh_schema() as url:
        stores = [PostgresStore(url, max_size=4) for _ in range(3)]
        try:
            writers = asyncio.ensure_future(_writes(stores, make_job, writers=9, jobs=25))
            seen: list[int] = []
            while True:
                done = writers.done()  # taken before the read: a last read after every writer is through
                batch = await stores[0].events_after(seen[-1] if seen else 0, limit=1000)
                ids = [event.id for event in batch.events]
                assert ids == sorted(set(ids)) and (not seen or not ids or ids[0] > seen[-1]), (seen[-3:], ids)
                seen += ids
                if done:
                    break
            await writers
            committed = [event.id for event in (await stores[0].events_after(0, limit=10_000)).events]
            assert len(committed) == 9 * 25 * 4
            assert seen == committed, "a reader reading on from the last id it saw missed an event"
        finally:
            for store in stores:
                await store.close()


@pytest.mark.postgres
async def test_an_event_still_being_written_is_not_counted_as_seen(make_job: MakeJob) -> None:
    """A reader that starts "from now" starts after the newest event committed, not after one whose transaction
    is still open: that one, once committed, is the reader's next."""
    async with fresh_schema() as url:
        store = PostgresStore(url)
        try:
            await store.enqueue(make_job(id="a"))
            async with await psycopg.AsyncConnection.connect(url) as other:
                await other.execute("UPDATE jobs SET state = 'building', worker_id = 'w' WHERE id = 'a'")
                now = (await store.events_after(0, limit=0)).newest_id
                assert now == 1, "the open transaction's event is not one a reader has seen"
                await other.commit()
            after = (await store.events_after(now, limit=10)).events
            assert [(event.id, event.state) for event in after] == [(2, JobState.BUILDING)]
        finally:
            await store.close()
