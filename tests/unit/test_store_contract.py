"""The `JobStore` contract, run against every store: what the worker relies on, whichever store it has."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import sqlite3
import time
from collections.abc import AsyncGenerator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from hatchway.models import (
    CallbackState,
    CallbackStatus,
    Job,
    JobSpec,
    JobState,
    JobSummary,
    Outcome,
    Reason,
    Resources,
    RunInfo,
)
from hatchway.store import JobQuery, JobStore, SqliteStore
from hatchway.store.fleet import LeaseLost, WorkerHealth, WorkerInfo, WorkerStatus
from hatchway.store.wakeups import Wake, Wakeup

MakeJob = Callable[..., Job]

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
T1 = datetime(2024, 5, 1, 12, 0, 7, 250000, tzinfo=UTC)


async def enqueue_all(store: JobStore, *jobs: Job) -> None:
    for job in jobs:
        await store.enqueue(job)


async def fetch(store: JobStore, job_id: str) -> Job:
    job = await store.get(job_id)
    assert job is not None, f"job {job_id} is gone"
    return job


async def claim_all(store: JobStore, worker_id: str = "w1") -> list[str]:
    claimed: list[str] = []
    while (job := await store.claim_next(worker_id)) is not None:
        claimed.append(job.id)
    return claimed


async def test_enqueue_returns_the_new_job_and_true(store: JobStore, make_job: MakeJob) -> None:
    job = make_job(priority=3, labels={"team": "a"})
    stored, created = await store.enqueue(job)
    assert created is True
    assert stored == job
    assert await store.get(job.id) == job


async def test_enqueue_of_an_existing_id_returns_the_existing_job_and_false(store: JobStore, make_job: MakeJob) -> None:
    first = make_job(id="same", priority=1, labels={"v": "1"})
    await store.enqueue(first)
    stored, created = await store.enqueue(make_job(id="same", priority=9, labels={"v": "2"}))
    assert created is False
    assert stored == first
    assert await store.get("same") == first
    assert (await store.counts())[JobState.QUEUED] == 1


async def test_get_of_an_unknown_id_is_none(store: JobStore) -> None:
    assert await store.get("nope") is None


async def test_state_of_follows_the_job_and_is_none_for_an_unknown_id(store: JobStore, make_job: MakeJob) -> None:
    assert await store.state_of("nope") is None
    job, _ = await store.enqueue(make_job(id="a"))
    assert await store.state_of(job.id) == JobState.QUEUED
    claimed = await store.claim_next("w1")
    assert claimed is not None and await store.state_of(job.id) == JobState.BUILDING


async def test_claim_next_takes_highest_priority_first_then_oldest(store: JobStore, make_job: MakeJob) -> None:
    await enqueue_all(
        store,
        make_job(id="low-1", priority=0),
        make_job(id="high-1", priority=5),
        make_job(id="low-2", priority=0),
        make_job(id="high-2", priority=5),
        make_job(id="neg", priority=-1),
    )
    assert await claim_all(store) == ["high-1", "high-2", "low-1", "low-2", "neg"]
    assert await store.claim_next("w1") is None


async def test_concurrent_claims_never_hand_out_a_job_twice(store: JobStore, make_job: MakeJob) -> None:
    await enqueue_all(store, *(make_job(id=f"j{i}", priority=i % 3) for i in range(50)))
    results = await asyncio.gather(*(store.claim_next(f"w{i % 4}") for i in range(80)))
    claimed = [job.id for job in results if job is not None]
    assert len(claimed) == len(set(claimed)) == 50
    assert set(claimed) == {f"j{i}" for i in range(50)}
    assert (await store.counts())[JobState.BUILDING] == 50


async def test_a_claimed_job_is_building_for_that_worker(store: JobStore, make_job: MakeJob) -> None:
    await store.enqueue(make_job(id="a"))
    claimed = await store.claim_next("worker-7")
    assert claimed is not None
    assert (claimed.id, claimed.state, claimed.worker_id) == ("a", JobState.BUILDING, "worker-7")
    assert await store.get("a") == claimed


async def test_mark_running_only_moves_a_building_job(store: JobStore, make_job: MakeJob) -> None:
    await store.enqueue(make_job(id="a"))
    assert await store.mark_running("a", T0, RunInfo()) is None, "a queued job cannot start"
    assert await store.mark_running("unknown", T0, RunInfo()) is None
    await store.claim_next("w1")
    running = await store.mark_running("a", T0, RunInfo())
    assert running is not None
    assert (running.state, running.started_at) == (JobState.RUNNING, T0)
    assert await store.mark_running("a", T1, RunInfo()) is None, "a running job cannot start again"
    assert (await store.get("a")) == running


async def test_finish_records_every_outcome_field(store: JobStore, make_job: MakeJob) -> None:
    await store.enqueue(make_job(id="a"))
    await store.claim_next("w1")
    await store.mark_running("a", T0, RunInfo())
    outcome = Outcome(
        state=JobState.FAILED,
        reason=Reason.EXIT_CODE,
        message="exited with code 3",
        exit_code=3,
        stdout="out\n",
        stderr="err\n",
        stdout_truncated=True,
        stderr_truncated=True,
        resources=Resources(peak_memory_bytes=12345, cpu_s=0.75),
    )
    finished = await store.finish("a", outcome, T1)
    assert finished is not None
    # The output's time index is kept beside the job (`output_times`), not in what every endpoint returns.
    job_fields = set(Outcome.model_fields) - {"output_times"}
    assert finished.model_dump(include=job_fields) == outcome.model_dump(include=job_fields)
    assert (finished.started_at, finished.finished_at, finished.duration_s) == (T0, T1, 7.25)
    assert await store.get("a") == finished


@pytest.mark.parametrize("start", [False, True], ids=["from-building", "from-running"])
async def test_finish_works_from_building_and_running(store: JobStore, make_job: MakeJob, start: bool) -> None:
    await store.enqueue(make_job(id="a"))
    await store.claim_next("w1")
    if start:
        await store.mark_running("a", T0, RunInfo())
    finished = await store.finish("a", Outcome(state=JobState.SUCCEEDED, exit_code=0), T1)
    assert finished is not None
    assert finished.state == JobState.SUCCEEDED


async def test_finish_is_refused_for_a_queued_or_unknown_job(store: JobStore, make_job: MakeJob) -> None:
    queued = make_job(id="a")
    await store.enqueue(queued)
    assert await store.finish("a", Outcome(state=JobState.SUCCEEDED), T1) is None
    assert await store.finish("unknown", Outcome(state=JobState.SUCCEEDED), T1) is None
    assert await store.get("a") == queued


async def test_finishing_twice_keeps_the_first_outcome(store: JobStore, make_job: MakeJob) -> None:
    await store.enqueue(make_job(id="a"))
    await store.claim_next("w1")
    first = await store.finish("a", Outcome(state=JobState.KILLED, reason=Reason.TIMEOUT, message="slow"), T1)
    second = await store.finish("a", Outcome(state=JobState.SUCCEEDED, exit_code=0, stdout="late"), T0)
    assert second is None
    assert first is not None
    assert await store.get("a") == first


async def test_cancel_ends_a_queued_job_as_killed_cancelled(store: JobStore, make_job: MakeJob) -> None:
    await store.enqueue(make_job(id="a"))
    cancelled = await store.cancel("a", T1)
    assert cancelled is not None
    assert (cancelled.state, cancelled.reason, cancelled.finished_at) == (JobState.KILLED, Reason.CANCELLED, T1)
    assert cancelled.started_at is None
    assert await store.get("a") == cancelled
    assert await store.cancel("a", T1) is None, "a job is cancelled at most once"
    assert await store.claim_next("w1") is None, "a cancelled job never runs"


async def test_cancel_is_refused_once_a_job_is_claimed(store: JobStore, make_job: MakeJob) -> None:
    await store.enqueue(make_job(id="a"))
    claimed = await store.claim_next("w1")
    assert await store.cancel("a", T1) is None
    assert await store.cancel("unknown", T1) is None
    assert await store.get("a") == claimed


async def test_requeue_lost_puts_a_building_job_back_in_priority_order(store: JobStore, make_job: MakeJob) -> None:
    await enqueue_all(store, make_job(id="low", priority=0), make_job(id="high", priority=9))
    await store.claim_next("w1")
    await store.enqueue(make_job(id="mid", priority=5))
    requeued = await store.requeue_lost("high")
    assert requeued is not None
    assert (requeued.state, requeued.worker_id) == (JobState.QUEUED, None)
    assert await claim_all(store, "w2") == ["high", "mid", "low"]
    assert (await fetch(store, "high")).worker_id == "w2"


async def test_requeue_lost_takes_active_jobs_only(store: JobStore, make_job: MakeJob) -> None:
    await enqueue_all(store, make_job(id="queued"), make_job(id="running"), make_job(id="done"))
    assert await store.requeue_lost("queued") is None
    for _ in range(3):
        await store.claim_next("w1")
    await store.mark_running("running", T0, RunInfo(engine="docker"))
    await store.finish("done", Outcome(state=JobState.SUCCEEDED), T1)
    assert await store.requeue_lost("done") is None
    assert await store.requeue_lost("unknown") is None
    assert (await store.counts())[JobState.QUEUED] == 0
    requeued = await store.requeue_lost("running")  # a grade cut off by a restart runs again from scratch
    assert requeued is not None
    assert (requeued.state, requeued.worker_id, requeued.started_at) == (JobState.QUEUED, None, None)
    assert await claim_all(store, "w2") == ["running"]


async def test_requeue_unstarted_puts_a_building_job_back_in_its_place_with_a_message(
    store: JobStore, make_job: MakeJob
) -> None:
    await enqueue_all(store, make_job(id="first"), make_job(id="second"))
    await store.claim_next("w1")
    requeued = await store.requeue_unstarted("first", "the engine went away")
    assert requeued is not None
    assert (requeued.state, requeued.worker_id, requeued.message) == (JobState.QUEUED, None, "the engine went away")
    assert await fetch(store, "first") == requeued
    claimed = await store.claim_next("w2")
    assert claimed is not None and (claimed.id, claimed.message) == ("first", None), "its old place, message cleared"


async def test_requeue_unstarted_never_takes_a_job_that_started(store: JobStore, make_job: MakeJob) -> None:
    await enqueue_all(store, make_job(id="started"), make_job(id="done"))
    await claim_all(store)
    await store.mark_running("started", T0, RunInfo())
    await store.finish("done", Outcome(state=JobState.SUCCEEDED), T1)
    await store.enqueue(make_job(id="queued"))
    for job_id in ("started", "done", "queued", "unknown"):
        assert await store.requeue_unstarted(job_id, "x") is None, job_id
    assert (await fetch(store, "started")).state == JobState.RUNNING
    assert (await fetch(store, "queued")).message is None


async def test_active_lists_building_and_running_jobs_of_one_worker(store: JobStore, make_job: MakeJob) -> None:
    await enqueue_all(store, *(make_job(id=name) for name in ("mine-1", "mine-2", "theirs", "done", "waiting")))
    for worker in ("w1", "w1", "w2", "w1"):
        await store.claim_next(worker)
    await store.mark_running("mine-2", T0, RunInfo())
    await store.finish("done", Outcome(state=JobState.SUCCEEDED), T1)
    assert sorted(job.id for job in await store.active("w1")) == ["mine-1", "mine-2"]
    assert [job.id for job in await store.active("w2")] == ["theirs"]
    assert await store.active("w3") == []


async def test_counts_cover_queued_building_and_running(store: JobStore, make_job: MakeJob) -> None:
    assert await store.counts() == {JobState.QUEUED: 0, JobState.BUILDING: 0, JobState.RUNNING: 0}
    await enqueue_all(store, *(make_job(id=f"j{i}") for i in range(6)))
    for _ in range(4):
        await store.claim_next("w1")
    await store.mark_running("j1", T0, RunInfo())
    await store.finish("j2", Outcome(state=JobState.FAILED), T1)
    await store.cancel("j5", T1)
    assert await store.counts() == {JobState.QUEUED: 1, JobState.BUILDING: 2, JobState.RUNNING: 1}


async def test_update_resources_only_touches_active_jobs(store: JobStore, make_job: MakeJob) -> None:
    await enqueue_all(store, make_job(id="a"), make_job(id="queued"))
    await store.claim_next("w1")
    await store.update_resources("a", Resources(peak_memory_bytes=10, cpu_s=1.5))
    await store.update_resources("queued", Resources(peak_memory_bytes=99))
    assert (await fetch(store, "a")).resources == Resources(peak_memory_bytes=10, cpu_s=1.5)
    assert (await fetch(store, "queued")).resources == Resources()


async def test_find_lists_newest_first(store: JobStore, make_job: MakeJob) -> None:
    await enqueue_all(store, *(make_job(id=f"j{i}", priority=i % 2) for i in range(5)))
    page = await store.find(JobQuery())
    assert [job.id for job in page.jobs] == ["j4", "j3", "j2", "j1", "j0"]
    assert page.next_cursor is None


async def test_find_lists_jobs_without_their_output_and_get_keeps_it(store: JobStore, make_job: MakeJob) -> None:
    await store.enqueue(make_job(id="a", labels={"k": "v"}))
    await store.claim_next("w1")
    await store.mark_running("a", T0, RunInfo(engine="docker"))
    big = "x" * 1_000_000
    outcome = Outcome(state=JobState.SUCCEEDED, stdout=big, stderr="err", build_output="built", stdout_truncated=True)
    await store.finish("a", outcome, T1)
    full = await fetch(store, "a")
    assert (full.stdout, full.stderr, full.build_output) == (big, "err", "built")
    (listed,) = (await store.find(JobQuery())).jobs
    assert type(listed) is JobSummary and not {"stdout", "stderr", "build_output"} & set(listed.model_dump())
    assert listed == full.summary()
    assert listed.stdout_truncated and listed.labels == {"k": "v"} and listed.run.engine == "docker"


async def test_find_filters_by_state(store: JobStore, make_job: MakeJob) -> None:
    await enqueue_all(store, *(make_job(id=f"j{i}") for i in range(4)))
    await store.claim_next("w1")
    await store.claim_next("w1")
    await store.cancel("j3", T1)
    assert [job.id for job in (await store.find(JobQuery(state=JobState.BUILDING))).jobs] == ["j1", "j0"]
    assert [job.id for job in (await store.find(JobQuery(state=JobState.QUEUED))).jobs] == ["j2"]
    assert [job.id for job in (await store.find(JobQuery(state=JobState.KILLED))).jobs] == ["j3"]
    assert (await store.find(JobQuery(state=JobState.RUNNING))).jobs == []


async def test_find_filters_by_kind(store: JobStore, make_job: MakeJob) -> None:
    plain = make_job(id="plain")
    graded = make_job(id="graded", spec=plain.spec.model_copy(update={"kind": "grade"}))
    await enqueue_all(store, plain, graded, make_job(id="later"))
    assert [job.id for job in (await store.find(JobQuery(kind="grade"))).jobs] == ["graded"]
    assert [job.id for job in (await store.find(JobQuery(kind="job"))).jobs] == ["later", "plain"]
    assert [job.id for job in (await store.find(JobQuery(kind="grade", state=JobState.RUNNING))).jobs] == []


async def test_find_ands_label_filters(store: JobStore, make_job: MakeJob) -> None:
    await enqueue_all(
        store,
        make_job(id="a-prod", labels={"team": "a", "env": "prod"}),
        make_job(id="a-dev", labels={"team": "a", "env": "dev"}),
        make_job(id="b-prod", labels={"team": "b", "env": "prod"}),
        make_job(id="none"),
        make_job(id="dotted", labels={"app.io/name": "x", "team": "a"}),
    )

    async def ids(**labels: str) -> list[str]:
        return [job.id for job in (await store.find(JobQuery(labels=labels))).jobs]

    assert await ids(team="a", env="prod") == ["a-prod"]
    assert await ids(team="a") == ["dotted", "a-dev", "a-prod"]
    assert await ids(env="prod") == ["b-prod", "a-prod"]
    assert await ids(team="c") == []
    assert [job.id for job in (await store.find(JobQuery(labels={"app.io/name": "x"}))).jobs] == ["dotted"]


@pytest.mark.parametrize(
    ("query", "kept"),
    [
        (JobQuery(limit=5), lambda i: True),
        (JobQuery(state=JobState.QUEUED, limit=5), lambda i: i != 7),
        (JobQuery(labels={"odd": "1"}, limit=3), lambda i: i % 2 == 1),
        (JobQuery(state=JobState.QUEUED, labels={"odd": "1"}, limit=4), lambda i: i % 2 == 1 and i != 7),
    ],
    ids=["all", "state", "label", "state-and-label"],
)
async def test_find_pages_walk_every_job_once(
    store: JobStore, make_job: MakeJob, query: JobQuery, kept: Callable[[int], bool]
) -> None:
    await enqueue_all(store, *(make_job(id=f"j{i:02}", labels={"odd": str(i % 2)}) for i in range(23)))
    await store.cancel("j07", T1)
    seen: list[str] = []
    for _ in range(30):  # a bound, so a cursor that never ends fails instead of hanging
        page = await store.find(query)
        assert len(page.jobs) <= query.limit
        seen += [job.id for job in page.jobs]
        if page.next_cursor is None:
            break
        query = dataclasses.replace(query, cursor=page.next_cursor)
    assert seen == [f"j{i:02}" for i in reversed(range(23)) if kept(i)]


@pytest.mark.parametrize("cursor", ["abc", "-1", "1.5", "", "12; DROP TABLE jobs"])
async def test_find_rejects_a_malformed_cursor(store: JobStore, make_job: MakeJob, cursor: str) -> None:
    await store.enqueue(make_job())
    # The message reaches the client as a 400, so it should quote what was wrong.
    with pytest.raises(ValueError, match=re.escape(repr(cursor))):
        await store.find(JobQuery(cursor=cursor))


async def test_sqlite_store_keeps_jobs_across_reopening(tmp_path: Path, make_job: MakeJob) -> None:
    path = tmp_path / "nested" / "db.sqlite"
    store = SqliteStore(path)
    await enqueue_all(store, make_job(id="done", labels={"k": "v"}), make_job(id="waiting", priority=2))
    await store.claim_next("w1")  # "waiting": higher priority
    await store.claim_next("w1")
    await store.mark_running("done", T0, RunInfo())
    done = await store.finish("done", Outcome(state=JobState.SUCCEEDED, exit_code=0, stdout="ok"), T1)
    await store.requeue_lost("waiting")
    waiting = await store.get("waiting")
    await store.close()

    reopened = SqliteStore(path)
    try:
        assert await reopened.get("done") == done
        assert await reopened.get("waiting") == waiting
        assert [job.id for job in (await reopened.find(JobQuery(labels={"k": "v"}))).jobs] == ["done"]
        claimed = await reopened.claim_next("w2")
        assert claimed is not None and claimed.id == "waiting"
    finally:
        await reopened.close()


async def test_a_source_s_outbox_holds_its_ended_unreported_jobs_oldest_first(
    store: JobStore, make_job: MakeJob
) -> None:
    await enqueue_all(
        store,
        make_job(id="a").model_copy(update={"origin": "queue", "external_id": "e1"}),
        make_job(id="b").model_copy(update={"origin": "queue", "external_id": "e2"}),
        make_job(id="c").model_copy(update={"origin": "other", "external_id": "e1"}),
        make_job(id="d"),
    )
    assert await store.unreported("queue") == [], "nothing has ended yet"
    assert await claim_all(store) == ["a", "b", "c", "d"]
    for job_id in ("b", "a", "c", "d"):
        await store.finish(job_id, Outcome(state=JobState.SUCCEEDED, exit_code=0), T1)
    assert [job.id for job in await store.unreported("queue")] == ["a", "b"]
    assert (await fetch(store, "a")).external_id == "e1"
    reported = await store.mark_reported("a", T1)
    assert reported is not None and reported.reported_at == T1
    assert await store.mark_reported("a", T1) is None, "reported once"
    assert [job.id for job in await store.unreported("queue")] == ["b"]


async def test_a_job_is_not_reported_before_it_ends(store: JobStore, make_job: MakeJob) -> None:
    await store.enqueue(make_job(id="a").model_copy(update={"origin": "queue"}))
    assert await store.mark_reported("a", T1) is None
    await store.claim_next("w1")
    assert await store.mark_reported("a", T1) is None


async def due(store: JobStore, now: datetime, limit: int = 10) -> list[str]:
    return [job.id for job in await store.due_callbacks(now, limit)]


async def test_a_callback_is_due_once_its_job_ends_and_until_it_is_settled(store: JobStore, make_job: MakeJob) -> None:
    pending = CallbackStatus(url="http://127.0.0.1:9/hook", delivery_id="d1")
    await enqueue_all(
        store, make_job(id="a", callback=pending), make_job(id="b", callback=pending), make_job(id="plain")
    )
    assert await due(store, T1) == [], "nothing has ended yet"
    assert await claim_all(store) == ["a", "b", "plain"]
    for job_id in ("b", "plain", "a"):
        await store.finish(job_id, Outcome(state=JobState.SUCCEEDED, exit_code=0), T1)
    assert await due(store, T0) == ["a", "b"], "due as soon as they end, oldest first"
    assert await due(store, T0, limit=1) == ["a"]
    assert await store.next_callback_at(T0) is None

    later = T1 + timedelta(seconds=30)
    retried = pending.model_copy(update={"attempts": 1, "last_status": 500, "next_attempt_at": later})
    recorded = await store.record_callback("a", retried)
    assert recorded is not None and recorded.callback == retried
    assert await due(store, T1) == ["b"], "a waits for its next attempt"
    assert await store.next_callback_at(T1) == later
    assert await due(store, later) == ["b", "a"], "soonest due first"

    delivered = retried.model_copy(update={"state": CallbackState.DELIVERED, "attempts": 2, "delivered_at": T1})
    assert (await store.record_callback("a", delivered)) is not None
    assert await due(store, later) == ["b"]
    assert await store.next_callback_at(T1) is None
    assert await store.record_callback("a", retried) is None, "a settled delivery stays settled"
    assert await store.record_callback("plain", retried) is None, "no callback, nothing to record"
    assert (await fetch(store, "a")).callback == delivered


async def test_a_version_4_database_gains_callbacks_and_keeps_its_jobs(tmp_path: Path, make_job: MakeJob) -> None:
    path = tmp_path / "db.sqlite"
    store = SqliteStore(path)
    await store.enqueue(make_job(id="old"))
    await store.close()
    with sqlite3.connect(path) as db:  # as hatchway left it before callbacks
        db.execute("DROP INDEX jobs_callbacks")
        db.execute("ALTER TABLE jobs DROP COLUMN callback")
        db.execute("ALTER TABLE jobs DROP COLUMN callback_due_at")
        db.execute("ALTER TABLE jobs DROP COLUMN output_times")  # and before output line times
        db.execute("ALTER TABLE jobs DROP COLUMN cancel_requested_at")  # and before cancel requests
        db.execute("ALTER TABLE jobs DROP COLUMN cancel_grace_s")
        db.execute("ALTER TABLE jobs DROP COLUMN placement")  # and before placement
        db.execute("ALTER TABLE jobs DROP COLUMN launched_at")  # and before launch marks
        db.execute("DROP TABLE claims")  # and before the claims journal
        db.execute("PRAGMA user_version = 4")
    db.close()

    migrated = SqliteStore(path)
    try:
        old = await fetch(migrated, "old")
        assert old.callback is None
        callback = CallbackStatus(url="http://127.0.0.1:9/hook", delivery_id="d1")
        await migrated.enqueue(make_job(id="new", callback=callback, state=JobState.FAILED, finished_at=T1))
        assert (await fetch(migrated, "new")).callback == callback
        assert [job.id for job in await migrated.due_callbacks(T1, 10)] == ["new"]
    finally:
        await migrated.close()


async def test_a_source_s_claims_are_kept_until_forgotten_one_per_item(store: JobStore) -> None:
    await store.record_claim("queue", "a", '{"eval_id": "a"}', "w1")
    await store.record_claim("queue", "b", '{"eval_id": "b"}', "w1")
    await store.record_claim("queue", "a", '{"eval_id": "a", "again": true}', "w1")  # the first record stands
    await store.record_claim("judge", "a", "{}", "w1")
    assert await store.claims("queue", "w1") == [("a", '{"eval_id": "a"}'), ("b", '{"eval_id": "b"}')]
    await store.forget_claim("queue", "a")
    await store.forget_claim("queue", "never-claimed")
    assert await store.claims("queue", "w1") == [("b", '{"eval_id": "b"}')]
    assert await store.claims("judge", "w1") == [("a", "{}")]


async def test_a_held_callback_is_due_for_no_one_else_until_its_hold_ends(store: JobStore, make_job: MakeJob) -> None:
    pending = CallbackStatus(url="http://127.0.0.1:9/hook", delivery_id="d1")
    await enqueue_all(store, make_job(id="a", callback=pending), make_job(id="b", callback=pending))
    assert await claim_all(store) == ["a", "b"]
    for job_id in ("a", "b"):
        await store.finish(job_id, Outcome(state=JobState.SUCCEEDED, exit_code=0), T1)
    hold = T1 + timedelta(seconds=60)
    assert [job.id for job in await store.due_callbacks(T1, 1, hold_until=hold)] == ["a"]
    assert await due(store, T1) == ["b"], "a is held for its sender"
    assert await store.next_callback_at(T1) == hold, "and due again when the hold ends"
    assert [job.id for job in await store.due_callbacks(hold, 10, hold_until=hold)] == ["b", "a"], "soonest due first"

    retried = pending.model_copy(update={"attempts": 1, "last_status": 503, "next_attempt_at": T1})
    assert await store.record_callback("a", retried) is not None, "the holder records its attempt"
    assert await due(store, T1) == ["a"], "the attempt recorded, the hold is over"
    stale = pending.model_copy(update={"attempts": 1, "state": CallbackState.DELIVERED, "delivered_at": T1})
    assert await store.record_callback("a", stale) is None, "a second attempt 1, whose hold ran out, is not recorded"
    assert (await fetch(store, "a")).callback == retried


def registration(worker_id: str, **fields: Any) -> WorkerInfo:
    values: dict[str, Any] = {"id": worker_id, "address": f"http://{worker_id}:8080", "version": "1.0", "slots": 2}
    values.update(fields)
    return WorkerInfo(**values)


async def expired(store: JobStore, worker_id: str) -> WorkerStatus:
    """The worker once its lease has run out by the store's clock (registered with a lease of moments)."""
    deadline = time.monotonic() + 10
    while True:
        (found,) = [worker for worker in await store.workers() if worker.id == worker_id]
        if found.health == WorkerHealth.EXPIRED:
            return found
        assert time.monotonic() < deadline, f"the lease of {worker_id} never ran out: {found}"
        await asyncio.sleep(0.02)  # polling the store's clock: there is no event to await


async def test_a_registered_worker_is_listed_alive_with_what_it_told_and_its_jobs(
    store: JobStore, make_job: MakeJob
) -> None:
    info = registration("w1", runtimes=["docker"], profiles=["c"], pools=["alpine:3"], labels={"zone": "a"})
    assert await store.register(info, 30) == 1
    await enqueue_all(store, make_job(id="a"), make_job(id="b"), make_job(id="c"))
    assert await claim_all(store, "w1") == ["a", "b", "c"]
    await store.mark_running("b", T0, RunInfo())
    await store.finish("c", Outcome(state=JobState.SUCCEEDED, exit_code=0), T1)
    (listed,) = await store.workers()
    assert listed.model_dump(include=set(WorkerInfo.model_fields)) == info.model_dump()
    assert (listed.health, listed.generation, listed.building, listed.running) == (WorkerHealth.ALIVE, 1, 1, 1)
    assert listed.started_at <= listed.heartbeat_at < listed.lease_until
    assert listed.lease_until - listed.heartbeat_at == timedelta(seconds=30)
    assert (listed.stopped_at, listed.reclaimed_at, listed.reclaimed_by) == (None, None, None)
    assert await store.renew_lease("w1", 1, 30) is None


async def test_each_registration_begins_a_generation_and_only_the_newest_holds_the_lease(store: JobStore) -> None:
    assert await store.register(registration("w1"), 30) == 1
    assert await store.register(registration("w1", slots=5), 30) == 2
    assert await store.register(registration("w2"), 30) == 1
    assert await store.renew_lease("w1", 1, 30) == LeaseLost.SUPERSEDED
    assert await store.renew_lease("w1", 2, 30) is None
    assert await store.renew_lease("nobody", 1, 30) == LeaseLost.FORGOTTEN
    assert [(worker.id, worker.generation, worker.slots) for worker in await store.workers()] == [
        ("w1", 2, 5),
        ("w2", 1, 2),
    ]


async def test_a_worker_that_stopped_is_listed_stopped_and_not_taken_over(store: JobStore) -> None:
    await store.register(registration("w1"), 30)
    await store.register(registration("w2"), 30)
    await store.mark_stopped("w1", 1)
    assert await store.renew_lease("w1", 1, 30) == LeaseLost.STOPPED
    stopped, alive = await store.workers()
    assert (stopped.health, alive.health) == (WorkerHealth.STOPPED, WorkerHealth.ALIVE)
    assert stopped.stopped_at is not None
    assert await store.reclaim_expired("w2") == [], "nothing to take over: it left no job"
    assert await store.register(registration("w1"), 30) == 2, "it starts again"
    assert (await store.workers())[0].health == WorkerHealth.ALIVE


async def test_a_lost_worker_s_jobs_are_taken_over_once_by_recovery_s_rules(store: JobStore, make_job: MakeJob) -> None:
    grade = make_job(id="grading")
    grade = grade.model_copy(update={"spec": JobSpec.model_validate({**grade.spec.model_dump(), "kind": "grade"})})
    await enqueue_all(store, make_job(id="claimed"), grade, make_job(id="ran"), make_job(id="done"))
    await store.register(registration("lost"), 0.05)
    assert await claim_all(store, "lost") == ["claimed", "grading", "ran", "done"]
    for job_id in ("grading", "ran", "done"):
        await store.mark_running(job_id, T0, RunInfo())
    await store.finish("done", Outcome(state=JobState.SUCCEEDED, exit_code=0), T1)
    await store.enqueue(make_job(id="later"))
    await store.record_claim("queue", "item-1", '{"id": 1}', "lost")  # taken from its master, not yet stored
    await store.register(registration("survivor"), 30)
    assert (await expired(store, "lost")).running == 2

    (taken,) = await store.reclaim_expired("survivor")
    assert (taken.worker_id, taken.generation, taken.claims) == ("lost", 1, 1)
    assert await store.claims("queue", "survivor") == [("item-1", '{"id": 1}')], "its sources' items too"
    settled = {job.id: job for job in taken.jobs}
    assert sorted(settled) == ["claimed", "grading", "ran"], "its active jobs, not the one that ended"
    claimed, grading, ran = settled["claimed"], settled["grading"], settled["ran"]
    assert (claimed.state, claimed.worker_id) == (JobState.QUEUED, None)
    assert claimed.message is not None and "lost before it started" in claimed.message
    assert (grading.state, grading.started_at, grading.worker_id) == (JobState.QUEUED, None, None)
    assert (ran.state, ran.reason, ran.worker_id) == (JobState.FAILED, Reason.WORKER_LOST, "lost")
    assert ran.finished_at is not None and ran.message is not None and "lost while the job ran" in ran.message
    for job in taken.jobs:
        assert await store.get(job.id) == job
    assert (await fetch(store, "done")).state == JobState.SUCCEEDED

    assert await store.reclaim_expired("survivor") == [], "taken over once"
    listed = {worker.id: worker for worker in await store.workers()}
    assert (listed["lost"].health, listed["lost"].reclaimed_by) == (WorkerHealth.EXPIRED, "survivor")
    assert (listed["lost"].building, listed["lost"].running) == (0, 0)
    assert listed["lost"].reclaimed_at is not None
    assert await store.renew_lease("lost", 1, 30) == LeaseLost.RECLAIMED, "a lease taken over is never renewed"
    assert await claim_all(store, "survivor") == ["claimed", "grading", "later"], "back in their old places"
    assert await store.register(registration("lost"), 30) == 2, "the lost worker may come back as a new generation"
    assert (await store.workers())[0].reclaimed_at is None


async def test_a_claimed_job_that_began_to_start_is_never_run_again_elsewhere(
    store: JobStore, make_job: MakeJob
) -> None:
    """Between the start of a job's process and `mark_running` a worker may be lost: the job may have run. Marked
    `launched_at` before its start, it is then failed `worker_lost`, not queued again (a grading is graded again)."""
    grade = make_job(id="grading")
    grade = grade.model_copy(update={"spec": JobSpec.model_validate({**grade.spec.model_dump(), "kind": "grade"})})
    await enqueue_all(store, make_job(id="launched"), grade, make_job(id="not-yet"))
    await store.register(registration("lost"), 0.05)
    assert await claim_all(store, "lost") == ["launched", "grading", "not-yet"]
    marked = await store.mark_launching("launched", T0)
    assert marked is not None and (marked.state, marked.launched_at) == (JobState.BUILDING, T0)
    assert await store.mark_launching("grading", T0) is not None
    await store.register(registration("survivor"), 30)
    await expired(store, "lost")

    (taken,) = await store.reclaim_expired("survivor")
    settled = {job.id: job for job in taken.jobs}
    launched, grading, not_yet = settled["launched"], settled["grading"], settled["not-yet"]
    assert (launched.state, launched.reason) == (JobState.FAILED, Reason.WORKER_LOST), "it may have run: lost"
    assert (grading.state, grading.launched_at) == (JobState.QUEUED, None), "a grading is graded again"
    assert (not_yet.state, not_yet.launched_at) == (JobState.QUEUED, None), "it cannot have run: run elsewhere"
    assert await claim_all(store, "survivor") == ["grading", "not-yet"]


async def test_only_a_building_job_is_marked_launching(store: JobStore, make_job: MakeJob) -> None:
    await enqueue_all(store, make_job(id="a"), make_job(id="queued"))
    assert await store.mark_launching("queued", T0) is None
    await store.claim_next("w1")
    assert await store.mark_launching("a", T0) is not None
    await store.mark_running("a", T0, RunInfo())
    assert await store.mark_launching("a", T1) is None, "running already"
    assert await store.mark_launching("unknown", T0) is None
    requeued = await store.requeue_lost("a")
    assert requeued is not None and requeued.launched_at is None, "queued again, it starts from scratch"


async def test_a_lease_that_ran_out_is_renewed_while_no_one_took_it_over(store: JobStore, make_job: MakeJob) -> None:
    await store.enqueue(make_job(id="a"))
    await store.register(registration("slow"), 0.05)
    await store.claim_next("slow")
    await expired(store, "slow")
    assert await store.renew_lease("slow", 1, 30) is None
    (listed,) = await store.workers()
    assert listed.health == WorkerHealth.ALIVE
    assert await store.reclaim_expired("other") == []
    assert await store.mark_running("a", T0, RunInfo()) is not None, "its job is still its own"


async def test_a_worker_never_takes_itself_over(store: JobStore, make_job: MakeJob) -> None:
    await store.enqueue(make_job(id="a"))
    await store.register(registration("w1"), 0.05)
    await store.claim_next("w1")
    await expired(store, "w1")
    assert await store.reclaim_expired("w1") == [], "it renews its lease instead"
    assert (await fetch(store, "a")).state == JobState.BUILDING


async def test_a_stop_asked_of_an_active_job_is_kept_for_its_worker(store: JobStore, make_job: MakeJob) -> None:
    await enqueue_all(store, make_job(id="building"), make_job(id="running"))
    await claim_all(store, "w1")
    await store.enqueue(make_job(id="elsewhere"))
    await store.claim_next("w2")
    await store.mark_running("running", T0, RunInfo())
    assert await store.cancel_requests("w1") == {}
    asked = await store.request_cancel("running", T1, 2.5)
    assert asked is not None and (asked.id, asked.state) == ("running", JobState.RUNNING), "asking ends nothing"
    assert await store.request_cancel("building", T1, 0.0) is not None
    again = await store.request_cancel("running", T1, 9.0)
    assert again is not None and again.state == JobState.RUNNING, "asked twice: the job is still active"
    assert await store.cancel_requests("w1") == {"running": 2.5, "building": 0.0}, "the first request stands"
    assert await store.cancel_requests("w2") == {}
    await store.finish("running", Outcome(state=JobState.KILLED, reason=Reason.KILLED), T1)
    assert await store.cancel_requests("w1") == {"building": 0.0}, "an ended job is no one's to stop"


async def test_a_stop_is_asked_only_of_an_active_job(store: JobStore, make_job: MakeJob) -> None:
    await enqueue_all(store, make_job(id="ended"), make_job(id="queued"))
    await store.claim_next("w1")
    await store.finish("ended", Outcome(state=JobState.SUCCEEDED), T1)
    for job_id in ("ended", "queued", "unknown"):
        assert await store.request_cancel(job_id, T1, 1.0) is None, job_id
    claimed = await store.claim_next("w1")
    assert claimed is not None and claimed.id == "queued"
    assert await store.cancel_requests("w1") == {}, "nothing was kept for the job while it was queued"


async def wakeups_seen(wakeups: AsyncGenerator[Wakeup, None], *wanted: Wakeup) -> None:
    """Until every one of `wanted` has come, in any order (a shared database also wakes for other tests' jobs)."""
    missing = set(wanted)
    async with asyncio.timeout(10):
        while missing:
            missing.discard(await anext(wakeups))


async def test_wakeups_announce_the_queue_events_and_stops_asked(store: JobStore, make_job: MakeJob) -> None:
    wakeups = store.wakeups()
    try:
        async with asyncio.timeout(10):
            assert await anext(wakeups) == Wakeup(Wake.ANY), "first: look at everything (what came before is unseen)"
        await store.enqueue(make_job(id="a"))
        await wakeups_seen(wakeups, Wakeup(Wake.QUEUE), Wakeup(Wake.EVENTS))
        await store.claim_next("w1")
        await wakeups_seen(wakeups, Wakeup(Wake.EVENTS))
        await store.request_cancel("a", T1, 1.0)
        await wakeups_seen(wakeups, Wakeup(Wake.CANCEL, job_id="a"))
        await store.requeue_lost("a")
        await wakeups_seen(wakeups, Wakeup(Wake.QUEUE), Wakeup(Wake.EVENTS))
    finally:
        await wakeups.aclose()
