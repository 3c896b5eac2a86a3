"""Engine outages: a restart of the Docker engine with jobs running, queued and submitted while it is down.

The engine restarted here is a private one, started by the project's own script (`scripts/docker-engine.sh` with
HATCHWAY_ENGINE_ROOT) on a socket, data-root and exec-root of its own, and stopped by its pidfile: the shared
engine the other tests use is never touched. If the private engine cannot start, these tests fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest

from hatchway.api.app import create_app
from hatchway.api.deps import ApiServices
from hatchway.models import Job, JobRequest, JobState, Reason, Stream
from hatchway.store.base import JobQuery
from hatchway.worker.bootstrap import build_worker
from hatchway.worker.worker import Worker
from tests.conftest import BUSYBOX, ROOT, job_when
from tests.integration.conftest import make_settings, pools_ready, wait_for_state

pytestmark = pytest.mark.docker


class PrivateEngine:
    """A dockerd of the tests' own, with live-restore, as `scripts/docker-engine.sh` starts it."""

    def __init__(self) -> None:
        # Short: unix socket paths (containerd's under the exec-root) must stay under 108 bytes.
        self.root = Path(tempfile.mkdtemp(prefix="hwe-", dir="/tmp"))
        self.url = f"unix://{self.root}/docker.sock"

    def start(self) -> None:
        """Start it (or find it running) through the project's script; raises if it does not come up."""
        subprocess.run(
            [str(ROOT / "scripts" / "docker-engine.sh")],
            env={**os.environ, "HATCHWAY_ENGINE_ROOT": str(self.root)},
            check=True,
            timeout=90,
        )

    def stop(self) -> None:
        """Stop the daemon by its pidfile (SIGTERM) and wait until it has exited."""
        pid = int((self.root / "dockerd.pid").read_text())
        os.kill(pid, signal.SIGTERM)
        _wait_gone(pid, 30)

    def client(self) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.url, version="auto")

    def dispose(self) -> None:
        """Remove what is left on it, stop it and its containerd, and delete its directory."""
        with contextlib.suppress(docker.errors.DockerException), contextlib.closing(self.client()) as client:
            for container in client.containers.list(all=True):
                container.remove(force=True)
        for pidfile in (self.root / "dockerd.pid", self.root / "exec" / "containerd" / "containerd.pid"):
            with contextlib.suppress(OSError, ValueError):
                pid = int(pidfile.read_text())
                os.kill(pid, signal.SIGTERM)
                _wait_gone(pid, 30)
        # dockerd leaves its data-root bind-mounted on itself.
        mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
        for mount in sorted((m for m in mounts if m.startswith(f"{self.root}/")), key=len, reverse=True):
            subprocess.run(["umount", "-l", mount], check=False)
        shutil.rmtree(self.root, ignore_errors=True)


def _wait_gone(pid: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while Path(f"/proc/{pid}").exists():
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            deadline += 10
        time.sleep(0.1)


@pytest.fixture(scope="module")
def engine(docker_client: docker.DockerClient) -> Iterator[PrivateEngine]:
    private = PrivateEngine()
    try:
        private.start()
        with contextlib.closing(private.client()) as client:
            assert client.info()["LiveRestoreEnabled"], "the script starts dockerd with live-restore"
            client.images.load(b"".join(docker_client.images.get(BUSYBOX).save(named=True)))
        yield private
    finally:
        private.dispose()


@pytest.fixture
async def make_worker(engine: PrivateEngine, tmp_path: Path, worker_id: str) -> AsyncIterator[type[Worker]]:
    """Start a worker on the private engine (with `max_concurrent_jobs` given); it is shut down afterwards and
    must leave no container behind."""
    started: list[Worker] = []

    async def make(max_concurrent_jobs: int, **more: Any) -> Worker:
        settings = make_settings(
            tmp_path,
            worker_id,
            docker_url=engine.url,
            max_concurrent_jobs=max_concurrent_jobs,
            allowed_runtimes=["docker"],
            **more,
        )
        worker = build_worker(settings)
        worker.parts.health.retry_s = (0.5, 2.0)  # notice the engine is back within a second or two
        await worker.start()
        started.append(worker)
        return worker

    yield make  # type: ignore[misc]
    for worker in started:
        await worker.shutdown()
    with contextlib.closing(engine.client()) as client:
        left = client.containers.list(all=True, filters={"label": f"hatchway.worker_id={worker_id}"})
    assert left == [], "the worker left containers behind"


async def health_status(worker: Worker) -> tuple[int, bool]:
    transport = httpx.ASGITransport(app=create_app(ApiServices.of(worker.parts)))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        response = await client.get("/health")
    return response.status_code, response.json()["engine_ok"]


async def printed(worker: Worker, job_id: str, text: str, timeout_s: float = 30) -> None:
    """Returns once the job's live stdout holds `text`."""
    async with asyncio.timeout(timeout_s):
        while True:
            capture = worker.jobs.capture(job_id)
            if capture is None:
                await wait_for_state(worker, job_id, JobState.RUNNING)
                continue
            changed = capture.next_change()
            if text in capture.text(Stream.STDOUT):
                return
            await changed.wait()


async def submit(worker: Worker, command: str) -> Job:
    job, created = await worker.jobs.submit(JobRequest(image=BUSYBOX, command=command, limits={"timeout_s": 60}))
    assert created
    return job


async def test_an_engine_restart_with_jobs_running_queued_and_submitted_meanwhile(
    engine: PrivateEngine, make_worker: type[Worker]
) -> None:
    worker: Worker = await make_worker(1)  # type: ignore[call-arg]
    running = await submit(worker, "echo before; sleep 6; echo after")
    await printed(worker, running.id, "before\n")
    queued = await submit(worker, "echo queued")

    await asyncio.to_thread(engine.stop)
    assert await health_status(worker) == (503, False)
    meanwhile = await submit(worker, "echo meanwhile")
    assert (await worker.jobs.get(running.id)).state == JobState.RUNNING
    await asyncio.to_thread(engine.start)

    final = await worker.jobs.wait_final(running.id, 60)
    assert (final.state, final.exit_code, final.message) == (JobState.SUCCEEDED, 0, None), final
    assert final.stdout == "before\nafter\n", "the output before the outage is kept, and none is doubled"
    for job, words in ((queued, "queued\n"), (meanwhile, "meanwhile\n")):
        done = await worker.jobs.wait_final(job.id, 60)
        assert (done.state, done.stdout) == (JobState.SUCCEEDED, words), done
    everything = (await worker.jobs.find(JobQuery())).jobs
    assert [job.id for job in everything if job.reason == Reason.ENGINE_ERROR] == []
    assert await health_status(worker) == (200, True)


async def test_a_job_with_a_free_slot_waits_in_the_queue_while_the_engine_is_down(
    engine: PrivateEngine, make_worker: type[Worker]
) -> None:
    worker: Worker = await make_worker(2)  # type: ignore[call-arg]
    first = await worker.jobs.wait_final((await submit(worker, "true")).id, 60)  # the scheduler runs
    assert first.state == JobState.SUCCEEDED, first
    await asyncio.to_thread(engine.stop)
    try:
        job = await submit(worker, "echo hello")
        # Claimed (the worker does not know yet), refused by the engine, and queued again instead of failed.
        waiting = await job_when(worker, job.id, lambda job: job.message is not None)
        assert waiting.state == JobState.QUEUED, waiting
        assert waiting.message is not None and "the Docker engine stopped answering" in waiting.message
        assert "waits in the queue" in waiting.message and "Connection aborted" not in waiting.message
        assert await health_status(worker) == (503, False)
    finally:
        await asyncio.to_thread(engine.start)
    done = await worker.jobs.wait_final(job.id, 60)
    assert (done.state, done.stdout, done.message) == (JobState.SUCCEEDED, "hello\n", None), done
    assert await health_status(worker) == (200, True)


async def test_pools_drain_and_refill_and_a_pooled_job_survives_an_engine_restart(
    engine: PrivateEngine, make_worker: type[Worker]
) -> None:
    pools = [{"image": BUSYBOX, "size": 2, "reuse_jobs": 10}]
    worker: Worker = await make_worker(2, pools=pools, pool_warm_total=0)  # type: ignore[call-arg]
    await pools_ready(worker)
    before = await worker.jobs.wait_final((await submit(worker, "echo $HOSTNAME")).id, 60)
    assert before.run.pooled and before.state == JobState.SUCCEEDED, before

    running = await submit(worker, "echo before; sleep 6; echo after")
    await printed(worker, running.id, "before\n")
    await asyncio.to_thread(engine.stop)
    meanwhile = await submit(worker, "echo $HOSTNAME")
    await asyncio.to_thread(engine.start)

    taken_up = await worker.jobs.wait_final(running.id, 60)
    assert (taken_up.state, taken_up.stdout, taken_up.run.pooled) == (JobState.SUCCEEDED, "before\nafter\n", True)

    done = await worker.jobs.wait_final(meanwhile.id, 60)
    assert done.state == JobState.SUCCEEDED, done
    assert done.stdout != before.stdout, "no container from before the outage serves a job after it"
    await pools_ready(worker)
    after = await worker.jobs.wait_final((await submit(worker, "echo $HOSTNAME")).id, 60)
    assert after.run.pooled and after.state == JobState.SUCCEEDED and after.stdout != before.stdout, after
