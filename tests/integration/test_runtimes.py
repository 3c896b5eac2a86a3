"""Engines: runc and gVisor, detection, refusal and fallback policy, against the real Docker engine."""

from __future__ import annotations

from pathlib import Path

import docker
import pytest

from hatchway.engines import offline_etc
from hatchway.errors import NotAllowed, RuntimeUnavailable
from hatchway.models import JobRequest, JobState
from hatchway.worker.bootstrap import build_worker
from hatchway.worker.worker import Worker
from tests.conftest import BUSYBOX, PYTHON, containers_of
from tests.integration.conftest import LOCALHOST_ECHO, RunJob, make_settings

pytestmark = pytest.mark.docker

GVISOR_KERNEL = "dmesg | grep -q gVisor && echo gvisor-kernel; uname -r"


async def test_both_engines_are_detected(worker: Worker) -> None:
    assert worker.parts.health.ok == {"docker": True, "gvisor": True}


async def test_gvisor_job_really_runs_under_gvisor(run_job: RunJob) -> None:
    job = await run_job(GVISOR_KERNEL, runtime="gvisor")
    assert job.state == JobState.SUCCEEDED, job.stderr
    assert job.stdout.startswith("gvisor-kernel\n")
    assert job.engine == "gvisor" and job.run.warnings == []
    plain = await run_job(GVISOR_KERNEL, runtime="docker")
    assert "gvisor-kernel" not in plain.stdout and plain.engine == "docker"


async def test_gvisor_network_none_has_a_working_localhost(run_job: RunJob) -> None:
    job = await run_job(["python3", "-c", LOCALHOST_ECHO], image=PYTHON, runtime="gvisor")
    assert (job.state, job.engine, job.stdout) == (JobState.SUCCEEDED, "gvisor", "over loopback\n"), job.stderr
    files = await run_job("cat /etc/hosts", runtime="gvisor")
    assert files.stdout == offline_etc.HOSTS


async def test_gvisor_job_keeps_the_same_limits(run_job: RunJob) -> None:
    job = await run_job(["sleep", "30"], runtime="gvisor", limits={"timeout_s": 1})
    assert (job.state, job.reason, job.engine) == (JobState.FAILED, "timeout", "gvisor")


async def test_auto_takes_the_configured_default(
    tmp_path: Path, worker_id: str, docker_client: docker.DockerClient
) -> None:
    worker = build_worker(make_settings(tmp_path, worker_id, default_runtime="gvisor"))
    await worker.start()
    try:
        job, _ = await worker.jobs.submit(JobRequest(image=BUSYBOX, command=GVISOR_KERNEL))
        done = await worker.jobs.wait_final(job.id, 60)
        assert done.engine == "gvisor" and done.stdout.startswith("gvisor-kernel")
    finally:
        await worker.shutdown()
    assert containers_of(docker_client, worker_id) == []


@pytest.fixture
async def broken_gvisor_worker(tmp_path: Path, worker_id: str, request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    settings = make_settings(tmp_path, worker_id, gvisor_runtime="no-such-runtime", **getattr(request, "param", {}))
    worker = build_worker(settings)
    await worker.start()
    yield worker
    await worker.shutdown()


async def test_unavailable_gvisor_is_refused_by_default(broken_gvisor_worker: Worker) -> None:
    assert broken_gvisor_worker.parts.health.ok == {"docker": True, "gvisor": False}
    with pytest.raises(RuntimeUnavailable, match="gvisor"):
        await broken_gvisor_worker.jobs.submit(JobRequest(image=BUSYBOX, command=["true"], runtime="gvisor"))


@pytest.mark.parametrize("broken_gvisor_worker", [{"gvisor_fallback": True}], indirect=True)
async def test_fallback_runs_on_docker_with_a_recorded_warning(broken_gvisor_worker: Worker) -> None:
    job, _ = await broken_gvisor_worker.jobs.submit(JobRequest(image=BUSYBOX, command=GVISOR_KERNEL, runtime="gvisor"))
    done = await broken_gvisor_worker.jobs.wait_final(job.id, 60)
    assert done.state == JobState.SUCCEEDED and "gvisor-kernel" not in done.stdout
    assert done.engine == "docker"
    assert any("gvisor is unavailable" in warning for warning in done.run.warnings)


async def test_runtime_outside_allowed_runtimes_is_forbidden(tmp_path: Path, worker_id: str) -> None:
    worker = build_worker(make_settings(tmp_path, worker_id, allowed_runtimes=["docker"]))
    await worker.start()
    try:
        with pytest.raises(NotAllowed, match="gvisor"):
            await worker.jobs.submit(JobRequest(image=BUSYBOX, command=["true"], runtime="gvisor"))
    finally:
        await worker.shutdown()
