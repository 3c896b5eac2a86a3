"""Pulled work (`kind: tasks`) end to end against a fake queue service on 127.0.0.1 and the real Docker engine:
results, failures, faults of the master, and how many items the worker takes at once."""

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


async def test_tasks_run_and_each_gets_one_report(master: TasksMaster, start: Any) -> None:
    master.add("ok", "print(6 * 7)")
    master.add("exits", "import sys; print('partial'); sys.exit(3)")
    master.add("crash", "raise ValueError('boom')")
    master.add("slow", "while True: pass")
    master.add("no-code", None)
    master.add("odd-engine", "print(1)", engine="vmware")
    worker = await start(source={"limits": {"timeout_s": 2}, "poll_interval_s": 0.2})
    got = await reports(master, 6)
    assert got["ok"][0] == "complete" and got["ok"][1]["output"] == "42\n" and got["ok"][1]["exit_code"] == 0
    assert got["ok"][1]["engine"] == "docker" and got["ok"][1]["worker_id"] == worker.worker_id
    assert got["exits"][0] == "complete" and got["exits"][1]["exit_code"] == 3
    assert got["crash"][0] == "complete" and "ValueError: boom" in got["crash"][1]["stderr"]
    assert got["slow"][0] == "fail" and got["slow"][1]["reason"] == "timeout"
    assert got["no-code"][0] == "fail" and "code" in got["no-code"][1]["error"]
    assert got["odd-engine"][0] == "fail" and "vmware" in got["odd-engine"][1]["error"]
    await worker.drain()  # after which it sends nothing more: every report it would ever send is in
    assert len(master.reports) == 6, "exactly one report per item"
    jobs = (await worker.jobs.find(JobQuery(labels={"source": "queue"}))).jobs
    assert {job.external_id for job in jobs} == {"ok", "exits", "crash", "slow", "no-code", "odd-engine"}
    assert all(job.reported_at is not None and job.origin == "queue" for job in jobs)
    refused = {job.external_id: job for job in jobs if job.reason == "refused"}
    assert set(refused) == {"no-code", "odd-engine"}, "an item that cannot run is kept, failed, like any other"
    assert got["no-code"][1]["reason"] == "refused"
    status = worker.sources[0].status()
    assert (status.claims, status.reports_sent, status.reports_pending) == (6, 6, 0)


async def test_a_master_failing_every_third_request_still_gets_one_report_each(master: TasksMaster, start: Any) -> None:
    master.fail_every = 3
    for i in range(6):
        master.add(f"t{i}", f"print({i})")
    worker = await start(source={"poll_interval_s": 0.2})
    got = await reports(master, 6)
    assert {eval_id: body["output"] for eval_id, (_, body) in got.items()} == {f"t{i}": f"{i}\n" for i in range(6)}
    await worker.drain()  # after which it sends nothing more
    assert sorted(eval_id for eval_id, _, _ in master.reports) == sorted(f"t{i}" for i in range(6))


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


async def test_a_wrong_api_key_is_retried_with_a_backoff_and_said_clearly(
    master: TasksMaster, start: Any, caplog: pytest.LogCaptureFixture
) -> None:
    master.add("t", "print(1)")
    worker = await start(source={"api_key": "wrong-key-of-the-test"})
    # The first request is refused at once; the next comes only after the backoff (5 s).
    await until(lambda: worker.sources[0].status().errors > 0, "the master's refusal was never seen")
    status = worker.sources[0].status()
    assert status.errors == 1, "no second request before the backoff"
    assert status.backoff_s == 5 and status.last_error is not None and "api_key" in status.last_error
    assert "refused the API key" in caplog.text and "wrong-key-of-the-test" not in caplog.text
    assert master.tasks, "nothing was taken"


async def test_sigterm_sends_the_reports_of_jobs_that_end_in_the_grace(master: TasksMaster, start: Any) -> None:
    master.add("t", "import time; time.sleep(1); print('done')")
    worker = await start(shutdown_grace_s=10, source={"poll_interval_s": 0.1})
    await asyncio.to_thread(master.wait_claimed, 1)
    job_id = source_job_id("queue", "t")
    await wait_for_state(worker, job_id, JobState.RUNNING)  # taken by the worker, queued at once, then started
    await worker.drain()  # as at SIGTERM: no more claims, the running item ends in the grace, its report is sent
    verb, body = master.by_id()["t"]
    assert (verb, body["output"]) == ("complete", "done\n")
    job = (await worker.jobs.find(JobQuery(labels={"source": "queue"}))).jobs[0]
    assert job.state == JobState.SUCCEEDED and job.reported_at is not None


async def test_garbage_from_the_master_is_skipped_and_work_goes_on(master: TasksMaster, start: Any) -> None:
    master.garbage = 2
    master.add("after", "print('fine')")
    worker = await start(source={"poll_interval_s": 0.1})
    got = await reports(master, 1)
    assert got["after"][0] == "complete" and got["after"][1]["output"] == "fine\n"
    status = worker.sources[0].status()
    assert status.errors >= 2 and status.last_error is not None and "not a JSON object" in status.last_error


async def test_the_master_down_for_a_while_then_back_loses_nothing(tmp_path: Path, worker_id: str) -> None:
    with tasks_master() as master:
        port = int(master.url.rsplit(":", 1)[1])
    # The master is down now: the worker backs off 5, 10 ... s between attempts.
    source = {"name": "queue", "kind": "tasks", "url": master.url, "api_key": master.api_key, "poll_interval_s": 0.1}
    worker = build_worker(make_settings(tmp_path, worker_id, sources=[source]))
    await worker.start()
    try:
        for _ in range(200):  # a first attempt at once, a second ~5 s later
            if worker.sources[0].status().errors >= 2:
                break
            await asyncio.sleep(0.1)
        status = worker.sources[0].status()
        assert status.errors == 2 and status.backoff_s == 10, status
        master.add("t", "print('late')")
        with tasks_master(port=port, master=master):
            got = await reports(master, 1)
            assert got["t"][0] == "complete" and got["t"][1]["output"] == "late\n"
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
    await worker.jobs.record_claim("queue", "orphan", '{"eval_id": "orphan", "code": "print(7)", "engine": "docker"}')
    await worker.shutdown()  # as if it had died there: the claim is in the store, no job for it
    again = await start(source={"poll_interval_s": 0.2})
    got = await reports(master, 1)
    assert got["orphan"][0] == "complete" and got["orphan"][1]["output"] == "7\n", got
    await again.drain()  # after which it sends nothing more
    assert len(master.reports) == 1 and master.claimed == 0, "one report, and nothing claimed from the master"
    assert await again.jobs.claims("queue") == []
