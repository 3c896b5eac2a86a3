"""Pulled work (`kind: tasks`) end to end against the double of the queue-pull platform's queue service on
127.0.0.1 and the real Docker engine: faults of the master, the API key, restarts, and how many items the worker
takes at once. What each kind of task is reported as, and its events, are tests/integration/test_queue_dropin.py's."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from hatchway.jobs.service import source_job_id
from hatchway.models import JobState
from hatchway.store.base import JobQuery
from hatchway.worker.bootstrap import build_worker
from tests.conftest import until
from tests.fakes.tasks_master import TasksMaster, tasks_master
from tests.integration.conftest import make_settings, source_starter, wait_for_state

pytestmark = pytest.mark.docker


@pytest.fixture
def master() -> Iterator[TasksMaster]:
    with tasks_master() as fake:
        yield fake


@pytest.fixture
async def start(tmp_path: Path, worker_id: str, master: TasksMaster) -> AsyncIterator[Any]:
    source = {"name": "queue", "kind": "tasks", "url": master.url, "api_key": master.api_key}
    start, started = source_starter(tmp_path, worker_id, source)
    yield start
    for worker in started:
        await worker.shutdown()


async def reports(master: TasksMaster, count: int) -> dict[str, tuple[str, dict[str, Any]]]:
    await asyncio.to_thread(master.wait_reports, count)
    return master.by_id()


async def test_a_master_failing_every_third_request_still_gets_one_report_each(
    master: TasksMaster, start: Any, quick_backoff: float
) -> None:
    master.fail_every = 3
    for i in range(6):
        master.add(f"t{i}", f"print({i})")
    worker = await start(source={"poll_interval_s": 0.2})
    got = await reports(master, 6)
    assert {eval_id: body["output"]["output"] for eval_id, (_, body) in got.items()} == {
        f"t{i}": f"{i}\n" for i in range(6)
    }
    await worker.drain()  # after which it sends nothing more
    assert sorted(eval_id for eval_id, _, _ in master.reports) == sorted(f"t{i}" for i in range(6))
    assert master.unknown_reports == [], "no report was sent twice"


async def test_claims_never_exceed_free_slots(master: TasksMaster, start: Any) -> None:
    for i in range(5):
        master.add(f"t{i}", "import time; time.sleep(0.5)")
    worker = await start(max_concurrent_jobs=2, source={"poll_interval_s": 0.1})
    await reports(master, 5)
    jobs = (await worker.jobs.find(JobQuery(labels={"source": "queue"}))).jobs
    assert len(jobs) == 5
    # Never more than two items taken and not yet ended (queued jobs count: they hold a slot).
    events = sorted([(job.created_at, 1) for job in jobs] + [(job.finished_at, -1) for job in jobs if job.finished_at])
    live = most = 0
    for _, step in events:
        live += step
        most = max(most, live)
    assert most <= 2, events


async def test_the_api_key_goes_with_every_request_and_none_without_one(master: TasksMaster, start: Any) -> None:
    """The real queue service checks the key only when a task is enqueued, so a worker that forgot it would go
    unnoticed there: the double records what each request carried."""
    master.add("t", "print(1)")
    worker = await start(source={"poll_interval_s": 0.1})
    await reports(master, 1)
    await until(lambda: master.null_answers >= 2, "the worker did not poll the empty queue")
    await worker.shutdown()
    assert master.keys and set(master.keys) == {master.api_key}, "every poll and report carried the key"
    count = len(master.keys)
    master.add("u", "print(2)")
    again = await start(source={"poll_interval_s": 0.1, "api_key": None})
    await reports(master, 2)
    await again.drain()
    assert master.keys[count:] and set(master.keys[count:]) == {None}, "no key configured, none sent"


async def test_sigterm_sends_the_reports_of_jobs_that_end_in_the_grace(master: TasksMaster, start: Any) -> None:
    master.add("t", "import time; time.sleep(1); print('done')")
    worker = await start(shutdown_grace_s=10, source={"poll_interval_s": 0.1})
    await asyncio.to_thread(master.wait_claimed, 1)
    job_id = source_job_id("queue", "t")
    await wait_for_state(worker, job_id, JobState.RUNNING)  # taken by the worker, queued at once, then started
    await worker.drain()  # as at SIGTERM: no more claims, the running item ends in the grace, its report is sent
    verb, body = master.by_id()["t"]
    assert (verb, body["output"]["status"], body["output"]["output"]) == ("complete", "completed", "done\n")
    job = (await worker.jobs.find(JobQuery(labels={"source": "queue"}))).jobs[0]
    assert job.state == JobState.SUCCEEDED and job.reported_at is not None


async def test_garbage_from_the_master_is_skipped_and_work_goes_on(master: TasksMaster, start: Any) -> None:
    master.garbage = 2
    master.add("after", "print('fine')")
    worker = await start(source={"poll_interval_s": 0.1})
    got = await reports(master, 1)
    assert got["after"][0] == "complete" and got["after"][1]["output"]["output"] == "fine\n"
    status = worker.sources[0].status()
    assert status.errors >= 2 and status.last_error is not None and "not a JSON object" in status.last_error


async def test_the_master_down_for_a_while_then_back_loses_nothing(
    tmp_path: Path, worker_id: str, quick_backoff: float
) -> None:
    with tasks_master() as master:
        port = int(master.url.rsplit(":", 1)[1])
    # The master is down now: the worker backs off a step, two steps ... between attempts.
    source = {"name": "queue", "kind": "tasks", "url": master.url, "api_key": master.api_key, "poll_interval_s": 0.1}
    worker = build_worker(make_settings(tmp_path, worker_id, sources=[source]))
    await worker.start()
    try:
        for _ in range(200):  # a first attempt at once, a second a step later
            if worker.sources[0].status().errors >= 2:
                break
            await asyncio.sleep(0.1)
        status = worker.sources[0].status()
        assert status.errors == 2 and status.backoff_s == 2 * quick_backoff, status
        master.add("t", "print('late')")
        with tasks_master(port=port, master=master):
            got = await reports(master, 1)
            assert got["t"][0] == "complete" and got["t"][1]["output"]["output"] == "late\n"
            assert master.polls, "asked again once back"
        assert worker.sources[0].status().backoff_s == 0
    finally:
        await worker.shutdown()


async def test_an_item_claimed_before_a_crash_and_never_stored_is_taken_up_and_reported_once(
    master: TasksMaster, start: Any, tmp_path: Path, worker_id: str
) -> None:
    """The worker died between taking an item from the master and storing it as a job: the master will not hand
    it out again, so the worker takes it up from its claim record."""
    worker = await start(source={"poll_interval_s": 0.2})
    # Its start, and its look for old claims, are over once it has polled (a status has no event to wait on).
    await until(lambda: worker.sources[0].status().last_poll_at is not None, "the worker never polled")
    master.handed_out("orphan", "print(7)")  # the queue service handed it out: it holds it as running
    await worker.jobs.record_claim("queue", "orphan", '{"eval_id": "orphan", "code": "print(7)", "engine": "docker"}')
    await worker.shutdown()  # as if it had died there: the claim is in the store, no job for it
    again = await start(source={"poll_interval_s": 0.2})
    got = await reports(master, 1)
    assert got["orphan"][0] == "complete" and got["orphan"][1]["output"]["output"] == "7\n", got
    await again.drain()  # after which it sends nothing more
    assert len(master.reports) == 1 and master.claimed == 0, "one report, and nothing claimed from the master"
    assert await again.jobs.claims("queue") == []


async def test_claims_handed_over_from_a_dead_worker_are_taken_up_while_running_and_reported_once(
    master: TasksMaster, start: Any
) -> None:
    """A worker of a fleet died between taking an item and storing it; the survivor that is handed its claims
    (`adopt_claims`, by whoever reclaims the dead worker's work) takes the item up without a restart."""
    worker = await start(source={"poll_interval_s": 0.2})
    await until(lambda: worker.sources[0].status().last_poll_at is not None, "the worker never polled")
    master.handed_out("orphan", "print(8)")  # the dead worker had it: the master holds it as running
    item = '{"eval_id": "orphan", "code": "print(8)", "engine": "docker"}'
    await worker.parts.store.record_claim("queue", "orphan", item, "dead-worker")
    assert await worker.jobs.claims("queue") == [], "not this worker's"
    assert await worker.parts.store.adopt_claims("dead-worker", worker.parts.settings.worker_id) == 1
    got = await reports(master, 1)
    assert got["orphan"][0] == "complete" and got["orphan"][1]["output"]["output"] == "8\n", got
    await worker.drain()
    assert len(master.reports) == 1 and master.claimed == 0, "one report, and nothing claimed from the master"
    assert await worker.jobs.claims("queue") == []
