"""Fixtures shared by every tier: the real Docker engine and the locally built test images."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import pytest

from hatchway.engines.builder import BuildHost
from hatchway.engines.volumes import LoopVolumes
from hatchway.models import Job
from hatchway.worker.worker import Worker

ROOT = Path(__file__).resolve().parent.parent
BUSYBOX = "hatchway-test/busybox:latest"
PYTHON = "hatchway-test/python:latest"
OWN_COMMAND = "hatchway-test/own-command:latest"
"""An image with a command of its own (CMD `sh run.sh` in WORKDIR /app): prints its working directory, then its
stdin."""


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    """The real engine. If it does not answer, the tests that need it fail: they are never skipped."""
    client = docker.from_env()
    client.ping()
    for image in (BUSYBOX, PYTHON, OWN_COMMAND):
        try:
            client.images.get(image)
        except docker.errors.ImageNotFound:
            subprocess.run([str(ROOT / "scripts" / "test-images.sh")], check=True)
            break
    yield client
    client.close()


@pytest.fixture
def worker_id() -> str:
    return f"test-{uuid.uuid4().hex[:10]}"


def containers_of(client: docker.DockerClient, worker_id: str, *, pooled: bool = True) -> list[str]:
    """Ids of every container, running or not, labelled as this worker's (without `pooled`, but those kept in
    its pools)."""
    # One listing call: containers.list() inspects each one after, and a pool may remove one in between.
    found = client.api.containers(all=True, filters={"label": f"hatchway.worker_id={worker_id}"})
    return [item["Id"] for item in found if pooled or (item.get("Labels") or {}).get("hatchway.role") != "pool"]


def build_host(volumes: Path, worker_id: str = "test-builds") -> BuildHost:
    """What a test's image manager builds with: job-sized disks under `volumes`, on runc and gVisor."""
    return BuildHost(
        worker_id=worker_id, volumes=LoopVolumes(volumes, owner=None), runtimes={"docker": None, "gvisor": "runsc"}
    )


def build_leftovers(client: docker.DockerClient, owner: str) -> list[str]:
    """Containers and intermediate images the builds for job `owner` left on the engine (each carries its label)."""
    label = {"label": f"hatchway.job_id={owner}"}
    containers = client.api.containers(all=True, filters=label)
    images = client.api.images(all=True, filters=label)
    return [f"container {item['Id'][:12]}" for item in containers] + [f"image {item['Id'][:19]}" for item in images]


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below `path`: a job's disk left mounted would be one."""
    with open("/proc/self/mounts") as mounts:
        points = [line.split()[1] for line in mounts]
    return [point for point in points if point == str(path) or point.startswith(f"{path}/")]


async def until(check: Callable[[], bool], what: str, timeout_s: float = 20) -> None:
    """Return once check() holds, looking every 10 ms; fail saying `what` did not happen within `timeout_s`. For a
    condition nothing signals (a file a sandboxed program writes, a flag a task sets); await a signal where one
    exists."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not check():
        assert asyncio.get_running_loop().time() < deadline, what
        await asyncio.sleep(0.01)


async def job_when(worker: Worker, job_id: str, what: Callable[[Job], bool], timeout_s: float = 30) -> Job:
    """The job once `what` holds for it (awaiting its change signals, not polling)."""
    async with asyncio.timeout(timeout_s):
        while True:
            with worker.parts.signals.watching(job_id) as changed:
                job = await worker.jobs.get(job_id)
                if what(job):
                    return job
                await worker.parts.signals.wait(changed, timeout_s)
