"""The dashboard's per-minute figures: which minute a job lands in, percentiles, the window, bounded memory."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import httpx
import pytest
from fastapi import FastAPI

from hatchway.api import system
from hatchway.api.errors import install_error_handlers
from hatchway.models import Job, JobState
from hatchway.observability.stats import BUCKETS, SAMPLES, JobStats

MakeJob = Callable[..., Job]

# 12:00:30 on a whole minute's boundary plus half a minute.
NOW = datetime(2024, 5, 1, 12, 0, 30, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = NOW.timestamp()

    def __call__(self) -> float:
        return self.now


def ended(
    make_job: MakeJob, *, at: datetime, ran_s: float = 1.0, waited_s: float = 0.5, state: JobState = JobState.SUCCEEDED
) -> Job:
    started = at - timedelta(seconds=ran_s)
    job = make_job(created_at=started - timedelta(seconds=waited_s))
    return job.model_copy(update={"state": state, "started_at": started, "finished_at": at})


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def stats(clock: Clock) -> JobStats:
    return JobStats(clock=clock, rng=random.Random(7))


def test_an_empty_window_has_one_zero_bucket_per_minute_ending_with_the_current_one(stats: JobStats) -> None:
    window = stats.window(3600)
    assert (window.window_s, window.bucket_s, len(window.buckets)) == (3600, 60, 60)
    assert window.buckets[-1].start == datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    assert window.buckets[0].start == datetime(2024, 5, 1, 11, 1, tzinfo=UTC)
    assert all(b.finished == 0 and b.duration_p50_s is None and b.queue_wait_p95_s is None for b in window.buckets)
    assert len(stats.window(90).buckets) == 2 and stats.window(90).window_s == 120


def test_jobs_count_in_the_minute_they_ended_by_state(stats: JobStats, make_job: MakeJob) -> None:
    stats.job_finished(ended(make_job, at=NOW - timedelta(seconds=10)))
    stats.job_finished(ended(make_job, at=NOW - timedelta(seconds=20), state=JobState.FAILED))
    stats.job_finished(ended(make_job, at=NOW - timedelta(minutes=3), state=JobState.KILLED))
    cancelled = make_job().model_copy(update={"state": JobState.KILLED, "finished_at": NOW})  # never started
    stats.job_finished(cancelled)
    buckets = stats.window(3600).buckets
    current, three_ago = buckets[-1], buckets[-4]
    assert (current.finished, current.succeeded, current.failed, current.killed) == (3, 1, 1, 1)
    assert (three_ago.finished, three_ago.killed) == (1, 1)
    assert sum(b.finished for b in buckets) == 4
    assert current.duration_p50_s == 1.0  # the cancelled one never ran: no duration, no queue wait


def test_percentiles_are_nearest_rank_of_the_minutes_jobs(stats: JobStats, make_job: MakeJob) -> None:
    for seconds in range(1, 21):  # 1 .. 20 s runs, waits of a tenth of that
        stats.job_finished(ended(make_job, at=NOW, ran_s=seconds, waited_s=seconds / 10))
    current = stats.window(60).buckets[-1]
    assert (current.duration_p50_s, current.duration_p95_s) == (10.0, 19.0)
    assert (current.queue_wait_p50_s, current.queue_wait_p95_s) == (1.0, 1.9)


def test_the_ring_forgets_minutes_older_than_the_window(stats: JobStats, clock: Clock, make_job: MakeJob) -> None:
    stats.job_finished(ended(make_job, at=NOW))
    clock.now += 59 * 60
    assert stats.window(3600).buckets[0].finished == 1
    clock.now += 60
    assert sum(b.finished for b in stats.window(3600).buckets) == 0
    # The slot is reused for the new minute, starting from zero.
    stats.job_finished(ended(make_job, at=datetime.fromtimestamp(clock.now, UTC)))
    assert [b.finished for b in stats.window(3600).buckets][-1] == 1


def test_an_end_before_the_window_is_ignored_and_one_in_the_future_is_now(stats: JobStats, make_job: MakeJob) -> None:
    stats.job_finished(ended(make_job, at=NOW - timedelta(minutes=BUCKETS)))
    stats.job_finished(ended(make_job, at=NOW + timedelta(minutes=5)))  # a clock that ran ahead
    buckets = stats.window(3600).buckets
    assert [b.finished for b in buckets if b.finished] == [1] and buckets[-1].finished == 1


def test_memory_stays_bounded_under_a_flood_and_percentiles_stay_close(stats: JobStats, make_job: MakeJob) -> None:
    job = ended(make_job, at=NOW)
    for i in range(20 * SAMPLES):
        run_s = 1 + i % 100  # uniform over 1 .. 100 s
        stats.job_finished(job.model_copy(update={"started_at": NOW - timedelta(seconds=run_s)}))
    bucket = stats._ring[stats._minute(NOW.timestamp()) % BUCKETS]
    assert bucket is not None and len(bucket.durations.values) == SAMPLES and bucket.durations.seen == 20 * SAMPLES
    current = stats.window(60).buckets[-1]
    assert current.finished == 20 * SAMPLES
    assert current.duration_p50_s is not None and 40 <= current.duration_p50_s <= 60
    assert current.duration_p95_s is not None and 88 <= current.duration_p95_s <= 100


async def test_get_stats_answers_the_window_and_refuses_a_bad_one(stats: JobStats, make_job: MakeJob) -> None:
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(system.router)
    app.state.services = SimpleNamespace(system=SimpleNamespace(stats=stats))  # the one thing /stats reads
    stats.job_finished(ended(make_job, at=NOW))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://worker") as client:
        answer = (await client.get("/stats", params={"window_s": 600})).json()
        assert len(answer["buckets"]) == 10 and answer["buckets"][-1]["finished"] == 1
        assert answer["buckets"][-1]["start"] == "2024-05-01T12:00:00Z"
        assert len((await client.get("/stats")).json()["buckets"]) == 60
        for bad in (0, 59, 3601, "soon"):
            refused = await client.get("/stats", params={"window_s": bad})
            assert refused.status_code == 422 and "window_s" in refused.text, refused.text
