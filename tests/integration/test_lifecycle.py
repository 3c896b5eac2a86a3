"""Scheduling, kills, idempotency and clean-up, against the real Docker engine."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from pathlib import Path

import docker
import pytest

from hatchway.engines.base import JOB_LABEL, WORKER_LABEL
from hatchway.errors import JobAlreadyFinished, JobConflict
from hatchway.models import JobRequest, JobState, Reason
from hatchway.worker.bootstrap import build_worker
from hatchway.worker.worker import Worker
from tests.conftest import BUSYBOX, containers_of
from tests.integration.conftest import make_settings, wait_for_state

pytestmark = pytest.mark.docker


async def test_kill_running_job_sends_term_then_ends_killed(worker: Worker, docker_client: docker.DockerClient) -> None:
    job, _ = await worker.jobs.submit(
        JobRequest(image=BUSYBOX, command="trap 'echo got-term; exit 143' TERM; echo up; sleep 60 & wait")
    )
    await wait_for_state(worker, job.id, JobState.RUNNING)
    killed = await worker.jobs.kill(job.id, grace_s=5)
    assert (killed.state, killed.reason) == (JobState.KILLED, Reason.KILLED)
    assert "got-term" in killed.stdout, "the job should have had SIGTERM and time to react"
    assert containers_of(docker_client, worker.worker_id) == []
    with pytest.raises(JobAlreadyFinished):
        await worker.jobs.kill(job.id, grace_s=0)


async def test_kill_escalates_to_sigkill_after_the_grace_period(worker: Worker) -> None:
    job, _ = await worker.jobs.submit(JobRequest(image=BUSYBOX, command="trap '' TERM; sleep 60 & wait"))
    await wait_for_state(worker, job.id, JobState.RUNNING)
    killed = await worker.jobs.kill(job.id, grace_s=1)
    assert (killed.state, killed.reason) == (JobState.KILLED, Reason.KILLED)
    assert killed.duration_s is not None and killed.duration_s < 20


async def test_cancel_queued_job_never_starts_it(worker: Worker) -> None:
    blockers = [(await worker.jobs.submit(JobRequest(image=BUSYBOX, command=["sleep", "60"])))[0] for _ in range(2)]
    queued, _ = await worker.jobs.submit(JobRequest(image=BUSYBOX, command=["echo", "never"]))
    cancelled = await worker.jobs.kill(queued.id, grace_s=0)
    assert (cancelled.state, cancelled.reason) == (JobState.KILLED, Reason.CANCELLED)
    for blocker in blockers:
        await worker.jobs.kill(blocker.id, grace_s=0)
    final = await worker.jobs.get(queued.id)
    assert final.started_at is None and final.stdout == ""


@pytest.fixture
def worker_settings(tmp_path: Path, worker_id: str, request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    slots = getattr(request, "param", 2)
    return make_settings(tmp_path, worker_id, max_concurrent_jobs=slots)


@pytest.mark.parametrize("worker_settings", [1], indirect=True)
async def test_priority_first_then_fifo(worker: Worker) -> None:
    blocker, _ = await worker.jobs.submit(JobRequest(image=BUSYBOX, command=["sleep", "60"]))
    await wait_for_state(worker, blocker.id, JobState.RUNNING)
    order = [("low-1", 0), ("high-1", 5), ("low-2", 0), ("high-2", 5), ("mid", 1)]
    for name, priority in order:
        await worker.jobs.submit(JobRequest(id=name, image=BUSYBOX, command=["true"], priority=priority))
    await worker.jobs.kill(blocker.id, grace_s=0)
    finished = [await worker.jobs.wait_final(name, 60) for name, _ in order]
    started = sorted(finished, key=lambda job: job.started_at or 0)
    assert [job.id for job in started] == ["high-1", "high-2", "mid", "low-1", "low-2"]


async def test_same_id_returns_the_existing_job(worker: Worker) -> None:
    request = JobRequest(id="client-chosen-1", image=BUSYBOX, command=["echo", "once"])
    first, created = await worker.jobs.submit(request)
    again, created_again = await worker.jobs.submit(request)
    assert created and not created_again and again.id == first.id
    with pytest.raises(JobConflict):
        await worker.jobs.submit(JobRequest(id="client-chosen-1", image=BUSYBOX, command=["echo", "other"]))
    done = await worker.jobs.wait_final(first.id, 60)
    assert done.stdout == "once\n"


async def test_concurrent_submits_and_kills_start_each_job_at_most_once(
    worker: Worker, docker_client: docker.DockerClient
) -> None:
    since = int(time.time()) - 1
    requests = [JobRequest(id=f"race-{i}", image=BUSYBOX, command=["echo", str(i)]) for i in range(12)]
    submitted = await asyncio.gather(*(worker.jobs.submit(r) for r in requests + requests))
    assert sum(created for _, created in submitted) == 12
    kills = await asyncio.gather(*(worker.jobs.kill(f"race-{i}", 0) for i in range(0, 12, 3)), return_exceptions=True)
    assert all(not isinstance(k, Exception) or isinstance(k, JobAlreadyFinished) for k in kills)
    finals = {f"race-{i}": await worker.jobs.wait_final(f"race-{i}", 60) for i in range(12)}
    assert all(job.state.is_final for job in finals.values())
    # The engine's own record of container starts, not anything hatchway says about itself.
    starts = Counter(
        event["Actor"]["Attributes"][JOB_LABEL]
        for event in docker_client.events(
            since=since,
            until=int(time.time()) + 1,
            filters={"event": "start", "label": f"{WORKER_LABEL}={worker.worker_id}"},
            decode=True,
        )
        if event["Actor"]["Attributes"].get(JOB_LABEL, "").startswith("race-")
    )
    for job_id, job in finals.items():
        expected = 0 if job.reason == Reason.CANCELLED else 1
        assert starts[job_id] == expected, f"{job_id} ({job.state.value}, {job.reason}) started {starts[job_id]} times"
    assert sum(job.state == JobState.SUCCEEDED for job in finals.values()) >= 8
    assert worker.parts.signals.watched == 0, "waits that ended must not leave anything behind"


async def test_leftover_labelled_containers_are_reaped_at_start(
    tmp_path: Path, worker_id: str, docker_client: docker.DockerClient
) -> None:
    orphan = docker_client.containers.create(
        BUSYBOX, ["sleep", "60"], labels={WORKER_LABEL: worker_id, JOB_LABEL: "no-such-job"}
    )
    other = docker_client.containers.create(BUSYBOX, ["true"], labels={WORKER_LABEL: "someone-else"})
    try:
        worker = build_worker(make_settings(tmp_path, worker_id))
        await worker.start()
        job, _ = await worker.jobs.submit(JobRequest(image=BUSYBOX, command=["true"]))
        await worker.jobs.wait_final(job.id, 60)  # recovery runs before the first job is scheduled
        await worker.shutdown()
        assert containers_of(docker_client, worker_id) == []
        docker_client.containers.get(other.id)  # another worker's container is left alone
    finally:
        for container in (orphan, other):
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)
