"""What the worker prepares around a job: injected env, ports, artifacts, live resources."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from hatchway.models import JobRequest, JobState
from hatchway.worker.worker import Worker
from tests.conftest import BUSYBOX, PYTHON
from tests.integration.conftest import RunJob, make_settings, wait_for_state

pytestmark = pytest.mark.docker


@pytest.fixture
def worker_settings(tmp_path: Path, worker_id: str):  # type: ignore[no-untyped-def]
    return make_settings(
        tmp_path, worker_id, allow_host_network=True, controller_url="http://127.0.0.1:9/ctl", port_range=(23000, 23999)
    )


async def test_injected_env_is_present_and_cannot_be_overridden(run_job: RunJob, worker: Worker) -> None:
    job = await run_job('echo "$HATCHWAY_JOB_ID $HATCHWAY_WORKER_ID $HATCHWAY_CONTROLLER_URL $MINE"', env={"MINE": "x"})
    assert job.stdout == f"{job.id} {worker.worker_id} http://127.0.0.1:9/ctl x\n"
    with pytest.raises(ValidationError, match="HATCHWAY_JOB_ID"):
        JobRequest(image=BUSYBOX, command=["true"], env={"HATCHWAY_JOB_ID": "forged"})


async def test_a_job_serves_on_its_allocated_port(worker: Worker) -> None:
    server = "cd /tmp && echo served-by-$HATCHWAY_JOB_ID > index.html && exec httpd -f -p 127.0.0.1:$HATCHWAY_PORT_WEB"
    job, _ = await worker.jobs.submit(
        JobRequest(image=BUSYBOX, command=server, network="host", ports=["web", "extra"], limits={"timeout_s": 60})
    )
    running = await wait_for_state(worker, job.id, JobState.RUNNING)
    port = running.ports["web"]
    assert 23000 <= port <= 23999 and running.ports["extra"] != port
    async with httpx.AsyncClient() as client:
        for _ in range(100):  # the server inside the job needs a moment to listen
            try:
                answer = await client.get(f"http://127.0.0.1:{port}/index.html")
                break
            except httpx.TransportError:
                await asyncio.sleep(0.05)
        else:
            raise AssertionError("the job's server never answered")
    assert answer.text == f"served-by-{job.id}\n"
    killed = await worker.jobs.kill(job.id, grace_s=0)
    assert killed.ports == running.ports, "the record keeps which ports it had"
    again, _ = await worker.jobs.submit(JobRequest(image=BUSYBOX, command=["true"], network="host", ports=["web"]))
    assert (await worker.jobs.wait_final(again.id, 60)).state == JobState.SUCCEEDED


async def test_ports_need_host_network() -> None:
    with pytest.raises(ValidationError, match="host"):
        JobRequest(image=BUSYBOX, command=["true"], ports=["web"])


async def test_artifacts_are_kept_listed_and_served(run_job: RunJob, worker: Worker) -> None:
    job = await run_job(
        "mkdir -p out/sub && echo report > out/report.txt && printf '\\001\\002' > out/sub/data.bin"
        " && ln -s /etc/passwd out/link && echo scratch > not-kept.txt"
    )
    assert job.state == JobState.SUCCEEDED, job.stderr
    listed = worker.parts.artifacts.listing(job.id)
    assert [(a.path, a.size) for a in listed] == [("report.txt", 7), ("sub/data.bin", 2)]
    assert worker.parts.artifacts.path(job.id, "sub/data.bin").read_bytes() == b"\x01\x02"


async def test_running_job_shows_live_resources(worker: Worker) -> None:
    hog = "import time; b = bytearray(60 << 20); [time.sleep(0.1) for _ in range(60)]"
    job, _ = await worker.jobs.submit(JobRequest(image=PYTHON, command=["python3", "-c", hog]))
    await wait_for_state(worker, job.id, JobState.RUNNING)
    for _ in range(100):
        live = await worker.jobs.get(job.id)
        if live.resources.memory_bytes and live.resources.memory_bytes > 60 << 20:
            break
        await asyncio.sleep(0.1)
    assert live.state == JobState.RUNNING
    assert live.resources.memory_bytes is not None and live.resources.memory_bytes > 60 << 20
    assert live.resources.pids is not None and live.resources.pids >= 1
    await worker.jobs.kill(job.id, grace_s=0)
