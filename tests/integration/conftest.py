"""An in-process worker on real SQLite and the real Docker engine."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import docker
import pytest

from hatchway.errors import JobNotFound
from hatchway.models import Job, JobRequest, JobState, Stream
from hatchway.settings import Settings
from hatchway.sources import base as sources_base
from hatchway.worker.bootstrap import build_worker
from hatchway.worker.worker import Worker
from tests.conftest import BUSYBOX, containers_of, mounts_under

RunJob = Callable[..., Awaitable[Job]]

LOCALHOST_ECHO = """
import socket
server = socket.create_server(("localhost", 0))
client = socket.create_connection(("localhost", server.getsockname()[1]))
peer, _ = server.accept()
client.sendall(b"over loopback")
print(peer.recv(100).decode())
"""
"""A Python job that talks to itself through `localhost`: the name resolves and the loopback carries it."""


def make_settings(tmp_path: Path, worker_id: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "worker_id": worker_id,
        "max_concurrent_jobs": 2,
        "kill_grace_s": 1.0,
        "shutdown_grace_s": 1.0,
        "poll_interval_s": 0.5,
        # Jobs take the cold path unless a test asks for pools (warm ones would make containers of their own).
        "pool_warm_total": 0,
        # The tests' archive servers and callback receivers listen on loopback, which a worker reaches for someone
        # else only when told to.
        "allowed_private_networks": ["127.0.0.0/8"],
    }
    values.update(overrides)
    return Settings(**values)


def source_starter(
    tmp_path: Path, worker_id: str, source: dict[str, Any]
) -> tuple[Callable[..., Awaitable[Worker]], list[Worker]]:
    """A function starting workers that pull from `source` (a test's `source={...}` laid over it, other keywords
    are settings), and the list of those started, for the fixture to shut down."""
    started: list[Worker] = []

    async def start(**overrides: Any) -> Worker:
        settings = make_settings(tmp_path, worker_id, sources=[source | overrides.pop("source", {})], **overrides)
        worker = build_worker(settings)
        await worker.start()
        started.append(worker)
        return worker

    return start, started


@pytest.fixture
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> float:
    """Sources back off 1, 2, 3 ... s between failed attempts instead of 5, 10, 15 ...: the same steps, sooner (a
    test of what the steps do need not wait the real ones out). The step."""
    monkeypatch.setattr(sources_base, "BACKOFF_STEP_S", 1.0)
    return 1.0


@pytest.fixture
def worker_settings(tmp_path: Path, worker_id: str) -> Settings:
    return make_settings(tmp_path, worker_id)


@pytest.fixture
async def worker(worker_settings: Settings, docker_client: docker.DockerClient) -> AsyncIterator[Worker]:
    started = build_worker(worker_settings)
    await started.start()
    yield started
    await started.shutdown()
    assert containers_of(docker_client, worker_settings.worker_id) == [], "the worker left containers behind"
    assert mounts_under(worker_settings.data_dir) == [], "the worker left a job's disk mounted"


@pytest.fixture
def submit(worker: Worker) -> Callable[..., Awaitable[Job]]:
    async def _submit(command: list[str] | str, image: str | None = BUSYBOX, **fields: Any) -> Job:
        if "build" in fields:
            image = None
        job, created = await worker.jobs.submit(JobRequest(image=image, command=command, **fields))
        assert created
        return job

    return _submit


@pytest.fixture
def run_job(worker: Worker, submit: Callable[..., Awaitable[Job]]) -> RunJob:
    """Submit a job and return it once it has ended."""

    async def _run(command: list[str] | str, **fields: Any) -> Job:
        job = await submit(command, **fields)
        final = await worker.jobs.wait_final(job.id, 90)
        assert final.state.is_final, f"job did not finish: {final}"
        return final

    return _run


async def wait_for_state(worker: Worker, job_id: str, state: JobState, timeout_s: float = 30) -> Job:
    """The job once it has reached `state` (awaiting its change signals, not polling); a job not stored yet is
    waited for too (storing it signals it)."""
    import asyncio

    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        with worker.parts.signals.watching(job_id) as changed:
            try:
                job: Job | None = await worker.jobs.get(job_id)
            except JobNotFound:
                job = None
            if job is not None and job.state == state:
                return job
            remaining = deadline - asyncio.get_running_loop().time()
            assert remaining > 0 and (job is None or not job.state.is_final), f"job never reached {state}: {job}"
            await worker.parts.signals.wait(changed, remaining)


async def printed(worker: Worker, job_id: str, text: str, timeout_s: float = 30) -> None:
    """Return once the running job's stdout holds `text` (awaiting its output as it comes, not polling)."""
    import asyncio

    capture = worker.jobs.capture(job_id)
    assert capture is not None, f"job {job_id} has no live output: it is not running"
    async with asyncio.timeout(timeout_s):
        while True:
            changed = capture.next_change()
            if text in capture.text(Stream.STDOUT):
                return
            await changed.wait()


async def pools_ready(worker: Worker, timeout_s: float = 60) -> None:
    """Return once every pool of the worker has an idle container (so that the next job is served from one)."""
    import asyncio

    async with asyncio.timeout(timeout_s):
        while True:
            changed = worker.parts.pools.next_change()
            if all(pool.idle > 0 for pool in worker.parts.pools.status()):
                return
            await changed.wait()
