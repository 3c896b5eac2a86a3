"""The runner's decisions, on the in-memory engine: how a job ends for each way its process can end."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from hatchway.bundles import BundleCache
from hatchway.engines.fake import FakeEngine, FakeProgram
from hatchway.engines.fake_images import FakeImages
from hatchway.engines.volumes import DirectoryVolumes
from hatchway.errors import EngineError
from hatchway.models import Job, JobRequest, JobState, Reason, utcnow
from hatchway.sandbox.binary import supervisor_path
from hatchway.settings import Settings
from hatchway.store.base import JobStore
from hatchway.store.memory import MemoryStore
from hatchway.worker.wiring import parts
from hatchway.worker.worker import Worker
from tests.conftest import job_when

RunJob = Callable[..., Awaitable[Job]]


def fake_worker(
    tmp_path: Path,
    engine: FakeEngine,
    images: FakeImages | None = None,
    supervisor: Callable[[], Path] = supervisor_path,
    store: JobStore | None = None,
    **settings: Any,
) -> Worker:
    values: dict[str, Any] = {
        "data_dir": tmp_path,
        "worker_id": "unit",
        "max_concurrent_jobs": 2,
        "kill_grace_s": 0.5,
        "shutdown_grace_s": 0.2,
        "poll_interval_s": 0.2,
        "allowed_runtimes": ["docker"],
        "run_as_user": f"{Path(tmp_path).stat().st_uid}:{Path(tmp_path).stat().st_gid}",
        "pool_warm_total": 0,
    }
    values.update(settings)
    worker = Worker(
        parts(
            Settings(**values),
            store=store or MemoryStore(),
            engines={"docker": engine},
            images=images or FakeImages(),
            bundles=BundleCache(tmp_path / "bundles", max_download_bytes=1024, download_timeout_s=1, url_allowed=bool),
            volumes=DirectoryVolumes(tmp_path / "volumes", owner=None),
            supervisor=supervisor,
        )
    )
    worker.parts.health.retry_s = (0.01, 0.05)  # an engine that went away is pinged again at once
    return worker


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
async def worker(tmp_path: Path, engine: FakeEngine) -> AsyncIterator[Worker]:
    started = fake_worker(tmp_path, engine)
    await started.start()
    yield started
    await started.shutdown()


@pytest.fixture
def run_job(worker: Worker) -> RunJob:
    async def run(program: str, **fields: Any) -> Job:
        job, _ = await worker.jobs.submit(JobRequest(image="img", command=[program], **fields))
        final = await worker.jobs.wait_final(job.id, 10)
        assert final.state.is_final, final
        return final

    return run


async def test_exit_zero_succeeds_with_output_and_resources(engine: FakeEngine, run_job: RunJob) -> None:
    engine.programs["ok"] = FakeProgram(stdout=b"out", stderr=b"err")
    job = await run_job("ok")
    assert (job.state, job.reason, job.exit_code, job.stdout, job.stderr) == (
        JobState.SUCCEEDED,
        None,
        0,
        "out",
        "err",
    )
    assert job.resources.peak_memory_bytes == 2048
    assert engine.sandboxes == {}, "the sandbox is removed once the job has ended"


async def test_non_zero_exit_fails_with_its_code(engine: FakeEngine, run_job: RunJob) -> None:
    engine.programs["bad"] = FakeProgram(exit_code=3)
    job = await run_job("bad")
    assert (job.state, job.reason, job.exit_code) == (JobState.FAILED, Reason.EXIT_CODE, 3)


async def test_oom_kill_is_memory_limit(engine: FakeEngine, run_job: RunJob) -> None:
    engine.programs["hog"] = FakeProgram(exit_code=137, oom_killed=True)
    job = await run_job("hog")
    assert (job.state, job.reason, job.exit_code) == (JobState.FAILED, Reason.MEMORY_LIMIT, 137)


async def test_output_past_the_cap_is_output_limit_even_when_it_exits_zero(engine: FakeEngine, run_job: RunJob) -> None:
    engine.programs["flood"] = FakeProgram(stdout=b"x" * 100)
    job = await run_job("flood", limits={"output_bytes": 10})
    assert (job.state, job.reason, job.stdout, job.stdout_truncated) == (
        JobState.FAILED,
        Reason.OUTPUT_LIMIT,
        "x" * 10,
        True,
    )


async def test_output_past_the_cap_stops_a_running_job(engine: FakeEngine, run_job: RunJob) -> None:
    engine.programs["flood"] = FakeProgram(stdout=b"x" * 100, runs_until_stopped=True)
    job = await run_job("flood", limits={"output_bytes": 10, "timeout_s": 30})
    assert (job.state, job.reason) == (JobState.FAILED, Reason.OUTPUT_LIMIT)
    assert ("stop", job.id, "job") in engine.events


async def test_timeout_stops_the_job_at_once(engine: FakeEngine, run_job: RunJob) -> None:
    engine.programs["forever"] = FakeProgram(runs_until_stopped=True)
    job = await run_job("forever", limits={"timeout_s": 0.2})
    assert (job.state, job.reason, job.exit_code) == (JobState.FAILED, Reason.TIMEOUT, 137), "no grace for timeouts"


async def test_kill_of_a_running_job_stops_it_with_grace(engine: FakeEngine, worker: Worker) -> None:
    engine.programs["forever"] = FakeProgram(runs_until_stopped=True)
    job, _ = await worker.jobs.submit(JobRequest(image="img", command=["forever"]))
    await asyncio.wait_for(engine.started(job.id), 5)
    killed = await worker.jobs.kill(job.id, grace_s=1)
    assert (killed.state, killed.reason, killed.exit_code) == (JobState.KILLED, Reason.KILLED, 143)


async def test_a_command_that_cannot_start_fails_like_a_shell_would(run_job: RunJob) -> None:
    job = await run_job("no-such-program")
    assert (job.state, job.reason, job.exit_code) == (JobState.FAILED, Reason.EXIT_CODE, 127)
    # As on Docker, whose init execs the command: the sandbox starts, and the failed exec is on stderr.
    assert "no-such-program failed: No such file or directory" in job.stderr


async def test_an_engine_failure_is_engine_error_and_triggers_a_probe(engine: FakeEngine, run_job: RunJob) -> None:
    engine.programs["ok"] = FakeProgram()
    engine.fail_next = EngineError("the daemon fell over")
    job = await run_job("ok")
    assert (job.state, job.reason, job.message) == (JobState.FAILED, Reason.ENGINE_ERROR, "the daemon fell over")


async def test_a_missing_image_is_image_not_found(tmp_path: Path, engine: FakeEngine) -> None:
    worker = fake_worker(tmp_path, engine, FakeImages(present=set()))
    await worker.start()
    try:
        job, _ = await worker.jobs.submit(JobRequest(image="nowhere", command=["ok"]))
        final = await worker.jobs.wait_final(job.id, 10)
    finally:
        await worker.shutdown()
    assert (final.state, final.reason) == (JobState.FAILED, Reason.IMAGE_NOT_FOUND)
    assert engine.events == [], "nothing is created for a job whose image is missing"


async def test_shutdown_stops_a_job_that_outlives_the_grace_period(tmp_path: Path, engine: FakeEngine) -> None:
    engine.programs["forever"] = FakeProgram(runs_until_stopped=True)
    worker = fake_worker(tmp_path, engine)
    await worker.start()
    job, _ = await worker.jobs.submit(JobRequest(image="img", command=["forever"]))
    await asyncio.wait_for(engine.started(job.id), 5)
    await worker.drain()
    final = await worker.parts.store.get(job.id)
    await worker.close()
    assert final is not None and (final.state, final.reason) == (JobState.KILLED, Reason.SHUTDOWN)


async def test_jobs_that_meet_an_outage_before_they_start_wait_in_the_queue(engine: FakeEngine, worker: Worker) -> None:
    engine.programs["ok"] = FakeProgram(stdout=b"hi\n")
    engine.go_down()
    first, _ = await worker.jobs.submit(JobRequest(image="img", command=["ok"]))
    queued = await job_when(worker, first.id, lambda job: job.message is not None)
    assert queued.state == JobState.QUEUED and queued.worker_id is None
    assert queued.message is not None
    assert "stopped answering" in queued.message and "waits in the queue" in queued.message
    assert not worker.parts.health.answering.is_set(), "the worker knows the engine is down"
    second, _ = await worker.jobs.submit(JobRequest(image="img", command=["ok"]))
    assert (await worker.jobs.get(second.id)).state == JobState.QUEUED

    back_at = utcnow()
    engine.come_back()
    for job_id in (first.id, second.id):
        final = await worker.jobs.wait_final(job_id, 10)
        assert (final.state, final.stdout, final.message) == (JobState.SUCCEEDED, "hi\n", None)
        assert final.started_at is not None and final.started_at >= back_at, "nothing is claimed while it is down"
        assert engine.starts(job_id) == 1


async def test_a_running_job_outlives_an_outage_with_all_its_output(engine: FakeEngine, worker: Worker) -> None:
    engine.programs["long"] = FakeProgram(stdout=b"before\n", runs_until_stopped=True)
    job, _ = await worker.jobs.submit(JobRequest(image="img", command=["long"]))
    await asyncio.wait_for(engine.started(job.id), 5)
    engine.go_down()
    await asyncio.wait_for(engine.wait_cut.wait(), 5)
    engine.exit(job.id, stdout=b"after\n")  # it ends while the engine is away, as with live-restore
    assert (await worker.jobs.get(job.id)).state == JobState.RUNNING
    engine.come_back()
    final = await worker.jobs.wait_final(job.id, 10)
    assert (final.state, final.exit_code, final.stdout) == (JobState.SUCCEEDED, 0, "before\nafter\n")
    assert engine.starts(job.id) == 1 and engine.sandboxes == {}


async def test_a_job_whose_container_is_gone_after_an_outage_fails_with_its_output(
    engine: FakeEngine, worker: Worker
) -> None:
    engine.programs["long"] = FakeProgram(stdout=b"before\n", runs_until_stopped=True)
    job, _ = await worker.jobs.submit(JobRequest(image="img", command=["long"]))
    await asyncio.wait_for(engine.started(job.id), 5)
    engine.go_down()
    await asyncio.wait_for(engine.wait_cut.wait(), 5)
    engine.sandboxes.clear()
    engine.come_back()
    final = await worker.jobs.wait_final(job.id, 10)
    assert (final.state, final.reason, final.stdout) == (JobState.FAILED, Reason.ENGINE_ERROR, "before\n")
    assert final.message is not None
    assert "stopped answering" in final.message and "could not be picked up" in final.message


async def test_the_time_limit_holds_while_the_engine_is_down(engine: FakeEngine, worker: Worker) -> None:
    engine.programs["long"] = FakeProgram(stdout=b"before\n", runs_until_stopped=True)
    job, _ = await worker.jobs.submit(JobRequest(image="img", command=["long"], limits={"timeout_s": 0.5}))
    await asyncio.wait_for(engine.started(job.id), 5)
    engine.go_down()
    final = await worker.jobs.wait_final(job.id, 10)
    assert (final.state, final.reason, final.stdout) == (JobState.FAILED, Reason.TIMEOUT, "before\n")
    assert final.message is not None and "time ran out" in final.message
    assert engine.sandboxes, "its container could not be removed while the engine was down"
    engine.come_back()
    await asyncio.wait_for(worker.parts.health.answering.wait(), 5)
    assert engine.sandboxes == {}, "removed once the engine answers again, before work goes on"


async def test_a_kill_while_the_engine_is_down_ends_the_job(engine: FakeEngine, worker: Worker) -> None:
    engine.programs["long"] = FakeProgram(stdout=b"before\n", runs_until_stopped=True)
    job, _ = await worker.jobs.submit(JobRequest(image="img", command=["long"]))
    await asyncio.wait_for(engine.started(job.id), 5)
    engine.go_down()
    await asyncio.wait_for(engine.wait_cut.wait(), 5)
    killed = await worker.jobs.kill(job.id, grace_s=1)
    assert (killed.state, killed.reason, killed.stdout) == (JobState.KILLED, Reason.KILLED, "before\n")
    engine.come_back()
