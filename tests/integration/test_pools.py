"""Pools of started containers, against the real Docker engine: limits per job inside one pool, kills, reuse that
leaves nothing behind, replacement of a container that died while idle, the disk limit, gVisor, warm pools."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest

from hatchway.jobs.logs import job_logs
from hatchway.models import Job, JobState, Reason, Stream
from hatchway.settings import Settings
from hatchway.worker.worker import Worker
from tests.conftest import BUSYBOX, PYTHON, containers_of
from tests.integration.conftest import make_settings, pools_ready, printed, wait_for_state

pytestmark = pytest.mark.docker
Submit = Callable[..., Awaitable[Job]]
HOST = "echo host=$HOSTNAME"


@pytest.fixture
def worker_settings(tmp_path: Path, worker_id: str, request: pytest.FixtureRequest) -> Settings:
    """One busybox container reused for up to 20 jobs, and a Python one; a test may change the pools."""
    pools = [{"image": BUSYBOX, "size": 1, "reuse_jobs": 20}, {"image": PYTHON, "size": 1, "reuse_jobs": 20}]
    values: dict[str, Any] = {"pools": pools, "pool_warm_total": 0, "kill_grace_s": 2.0}
    values.update(getattr(request, "param", {}))
    return make_settings(tmp_path, worker_id, **values)


async def pooled(worker: Worker, submit: Submit, command: str, **fields: Any) -> Job:
    """Run a job the pools serve, and return it once it has ended."""
    await pools_ready(worker)
    job = await worker.jobs.wait_final((await submit(command, **fields)).id, 90)
    assert job.state.is_final and job.run.pooled, job
    return job


def host_of(job: Job) -> str:
    return next(line for line in job.stdout.splitlines() if line.startswith("host="))


async def test_limits_differ_per_job_inside_one_container(worker: Worker, submit: Submit) -> None:
    hog = "import os; b = bytearray(96 << 20); print(os.environ['HOSTNAME'])"
    tight = await pooled(worker, submit, f'python3 -c "{hog}"', image=PYTHON, limits={"memory_mb": 48})
    roomy = await pooled(worker, submit, f'python3 -c "{hog}"', image=PYTHON, limits={"memory_mb": 256})
    assert (tight.state, tight.reason) == (JobState.FAILED, Reason.MEMORY_LIMIT)
    assert roomy.state == JobState.SUCCEEDED, roomy
    few = await pooled(worker, submit, f"{HOST}; for i in 1 2 3 4 5 6; do sleep 1 & done; wait", limits={"pids": 4})
    many = await pooled(worker, submit, f"{HOST}; for i in 1 2 3 4 5 6; do sleep 0.1 & done; wait", limits={"pids": 64})
    assert "can't fork" in few.stderr or "Resource temporarily unavailable" in few.stderr, few
    assert many.state == JobState.SUCCEEDED and many.stderr == ""
    quick = await pooled(worker, submit, f"{HOST}; sleep 5", limits={"timeout_s": 1})
    assert (quick.state, quick.reason) == (JobState.FAILED, Reason.TIMEOUT)
    small = await pooled(worker, submit, f"{HOST}; seq 1 100000", limits={"output_bytes": 100})
    assert (small.state, small.reason, len(small.stdout)) == (JobState.FAILED, Reason.OUTPUT_LIMIT, 100)
    assert host_of(few) == host_of(many), "one container served both"


async def test_a_reused_container_shows_a_job_nothing_of_the_job_before(worker: Worker, submit: Submit) -> None:
    leave = (
        f"{HOST}; echo secret > /workspace/mine; mkdir -p /workspace/d/e; echo t > /tmp/t; echo s > /dev/shm/s; "
        "chmod 000 /workspace/d; (setsid sleep 300 &); nohup sleep 301 >/dev/null 2>&1 & export LEAK=1; echo left"
    )
    look = f"{HOST}; ls -A /workspace /tmp /dev/shm; ps -o user,args | grep -v 'ps -o' ; env | sort"
    first = await pooled(worker, submit, leave, env={"FIRST_ONLY": "1"})
    second = await pooled(worker, submit, look)
    assert first.state == JobState.SUCCEEDED and first.stdout.endswith("left\n"), first
    assert host_of(first) == host_of(second), "the second job ran in the same container"
    assert "/dev/shm:\n\n/tmp:\n\n/workspace:\nUSER" in second.stdout, second.stdout
    processes = [line for line in second.stdout.splitlines() if line.startswith(("nobody", "65534", "root"))]
    assert not any("sleep" in line for line in processes), processes
    assert "FIRST_ONLY" not in second.stdout and "LEAK" not in second.stdout and first.id not in second.stdout
    assert f"HATCHWAY_JOB_ID={second.id}" in second.stdout


async def test_a_killed_pooled_job_gets_sigterm_then_its_container_is_replaced(worker: Worker, submit: Submit) -> None:
    await pools_ready(worker)
    job = await submit(f"{HOST}; trap 'echo got-term; exit 5' TERM; echo trapped; sleep 30 & wait")
    await wait_for_state(worker, job.id, JobState.RUNNING)
    await printed(worker, job.id, "trapped\n")  # its trap is set: SIGTERM is its to handle
    killed = await worker.jobs.kill(job.id, grace_s=5)
    assert (killed.state, killed.reason) == (JobState.KILLED, Reason.KILLED)
    assert killed.run.pooled and "got-term" in killed.stdout and killed.exit_code == 5
    after = await pooled(worker, submit, HOST)
    assert host_of(after) != host_of(killed), "a container a job was stopped in is not reused"


async def test_a_pooled_job_that_ignores_sigterm_is_killed_after_the_grace(worker: Worker, submit: Submit) -> None:
    await pools_ready(worker)
    job = await submit("trap '' TERM; sleep 30")
    await wait_for_state(worker, job.id, JobState.RUNNING)
    killed = await worker.jobs.kill(job.id, grace_s=0.5)
    assert (killed.state, killed.reason, killed.exit_code) == (JobState.KILLED, Reason.KILLED, 137)


async def test_an_idle_container_that_dies_is_replaced(
    worker: Worker, submit: Submit, docker_client: docker.DockerClient
) -> None:
    await pools_ready(worker)
    before = set(containers_of(docker_client, worker.worker_id))
    for container_id in before:
        with contextlib.suppress(docker.errors.NotFound):  # gone already
            docker_client.containers.get(container_id).kill()
    deadline = asyncio.get_running_loop().time() + 30
    while not (set(containers_of(docker_client, worker.worker_id)) - before) or not all(
        pool.idle for pool in worker.parts.pools.status()
    ):
        assert asyncio.get_running_loop().time() < deadline, worker.parts.pools.status()
        await asyncio.sleep(0.1)
    job = await pooled(worker, submit, "echo fine")
    assert (job.state, job.stdout) == (JobState.SUCCEEDED, "fine\n")


@pytest.mark.parametrize(
    "worker_settings",
    [
        {"pools": [{"image": BUSYBOX, "runtime": "docker", "size": 1, "reuse_jobs": 5, "disk_mb": 64}]},
        {"pools": [{"image": BUSYBOX, "runtime": "gvisor", "size": 1, "reuse_jobs": 5, "disk_mb": 64}]},
    ],
    indirect=True,
    ids=["docker", "gvisor"],
)
async def test_the_disk_limit_holds_per_job_in_a_pool(worker: Worker, submit: Submit) -> None:
    runtime = worker.settings.pools[0].runtime
    write = f"{HOST}; dd if=/dev/zero of=/workspace/big bs=1M count=40 2>&1; dd if=/dev/zero of=/tmp/t bs=1M count=8"
    small = await pooled(worker, submit, write, runtime=runtime, limits={"disk_mb": 16})
    large = await pooled(worker, submit, write, runtime=runtime, limits={"disk_mb": 64})
    assert (small.state, small.reason, small.engine) == (JobState.FAILED, Reason.DISK_LIMIT, runtime), small
    assert large.state == JobState.SUCCEEDED, large
    assert host_of(small) == host_of(large)
    too_big = await worker.jobs.wait_final((await submit("true", runtime=runtime, limits={"disk_mb": 65})).id, 90)
    assert too_big.state == JobState.SUCCEEDED and not too_big.run.pooled, "a job needing more disk goes cold"


@pytest.mark.parametrize(
    "worker_settings", [{"pools": [{"image": BUSYBOX, "runtime": "gvisor", "size": 1}]}], indirect=True
)
async def test_a_gvisor_pool_runs_jobs_under_gvisor(worker: Worker, submit: Submit) -> None:
    job = await pooled(
        worker, submit, "dmesg | grep -q gVisor && echo gvisor-kernel; echo err >&2; exit 4", runtime="gvisor"
    )
    assert (job.state, job.exit_code, job.stdout, job.stderr, job.engine) == (
        JobState.FAILED,
        4,
        "gvisor-kernel\n",
        "err\n",
        "gvisor",
    )


@pytest.mark.parametrize("worker_settings", [{"pools": [], "pool_warm_total": 2}], indirect=True)
async def test_an_image_that_ran_recently_gets_a_warm_pool(worker: Worker, submit: Submit) -> None:
    first = await worker.jobs.wait_final((await submit("echo one")).id, 60)
    assert first.state == JobState.SUCCEEDED and not first.run.pooled
    assert [(pool.image, pool.origin) for pool in worker.parts.pools.status()] == [(BUSYBOX, "warm")]
    second = await pooled(worker, submit, "echo two")
    assert second.stdout == "two\n"


@pytest.mark.parametrize("worker_settings", [{"pools": [], "pool_warm_total": 2}], indirect=True)
async def test_a_dockerfile_s_image_gets_a_warm_pool_once_built(worker: Worker, submit: Submit) -> None:
    build = {"dockerfile": f"FROM {BUSYBOX}\nENV BUILT=yes\n"}
    first = await worker.jobs.wait_final((await submit("echo $BUILT", build=build)).id, 120)
    assert (first.state, first.stdout, first.run.pooled) == (JobState.SUCCEEDED, "yes\n", False), first
    second = await worker.jobs.wait_final((await submit("echo $BUILT", build=build)).id, 60)
    assert second.state == JobState.SUCCEEDED and [pool.origin for pool in worker.parts.pools.status()] == ["warm"]
    third = await pooled(worker, submit, "echo $BUILT", build=build)
    assert (third.state, third.stdout) == (JobState.SUCCEEDED, "yes\n")


async def test_output_follows_live_from_a_pooled_job(worker: Worker, submit: Submit) -> None:
    await pools_ready(worker)
    job = await submit("echo first; sleep 2; echo second")
    chunks: list[tuple[float, str]] = []
    async for text in job_logs(worker.jobs, job.id, [Stream.STDOUT], tail=None, follow=True):
        chunks.append((asyncio.get_running_loop().time(), text))
    assert "".join(text for _, text in chunks) == "first\nsecond\n"
    first_at = next(at for at, text in chunks if "first" in text)
    second_at = next(at for at, text in chunks if "second" in text)
    assert second_at - first_at > 1, "the first line arrived while the job still ran"
    assert (await worker.jobs.get(job.id)).run.pooled
