"""A job's image build as a client sees it when it is cut short: the job killed, the worker stopped, the worker
killed outright. Its steps' containers, disks and images go in each case, and the job ends (or comes back) as any
job that had not started would."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any

import docker
import pytest

from tests.acceptance.conftest import Server, ServerFactory
from tests.conftest import build_leftovers

pytestmark = pytest.mark.docker

BUSYBOX = "hatchway-test/busybox:latest"


def post_build(server: Server, nonce: str, seconds: int) -> str:
    dockerfile = f"FROM {BUSYBOX}\nCOPY f /f\nRUN echo started-{nonce}; sleep {seconds}\n"
    body = {"build": {"dockerfile": dockerfile, "files": {"f": nonce}}, "command": ["cat", "/f"]}
    created = server.post_job(**body, limits={"timeout_s": 300})
    assert created.status_code == 201, created.text
    job_id: str = created.json()["id"]
    return job_id


def running_step(client: docker.DockerClient, server: Server, job_id: str, timeout_s: float = 60) -> dict[str, Any]:
    """The worker's build step that runs now (once its RUN has started)."""
    filters = {"label": [f"hatchway.worker_id={server.worker_id}", "hatchway.role=build"], "status": "running"}
    deadline = time.monotonic() + timeout_s
    while not (found := client.api.containers(filters=filters)):
        assert time.monotonic() < deadline, f"no build step started: {server.client.get(f'/jobs/{job_id}').json()}"
        time.sleep(0.05)  # a container nothing tells us about
    info: dict[str, Any] = client.api.inspect_container(found[0]["Id"])
    return info


def gone(client: docker.DockerClient, container_id: str) -> bool:
    try:
        client.api.inspect_container(container_id)
    except docker.errors.NotFound:
        return True
    return False


def test_killing_a_job_stops_its_build(start_server: ServerFactory, docker_client: docker.DockerClient) -> None:
    server = start_server()
    job_id = post_build(server, uuid.uuid4().hex[:12], 600)
    step = running_step(docker_client, server, job_id)
    killed_at = time.monotonic()
    assert server.client.delete(f"/jobs/{job_id}").status_code in (200, 202)
    job = server.wait_state(job_id, "killed", timeout_s=60)
    assert job["reason"] == "cancelled" and time.monotonic() - killed_at < 30, job
    deadline = time.monotonic() + 30
    while not gone(docker_client, step["Id"]):
        assert time.monotonic() < deadline, "the killed build's step was left running"
        time.sleep(0.05)
    assert build_leftovers(docker_client, job_id) == []
    assert server.stop() == 0


def test_stopping_the_worker_stops_a_build_and_the_job_waits_for_the_next_start(
    start_server: ServerFactory, docker_client: docker.DockerClient
) -> None:
    server = start_server()
    job_id = post_build(server, uuid.uuid4().hex[:12], 600)
    running_step(docker_client, server, job_id)
    stopping_at = time.monotonic()
    assert server.stop() == 0
    assert time.monotonic() - stopping_at < 60, "the drain does not wait for the build's 300 s"
    assert build_leftovers(docker_client, job_id) == []
    server.start()
    job = server.wait_state(job_id, "queued", "building")
    assert job["message"] is None or "stopped" not in job["message"]
    assert server.client.delete(f"/jobs/{job_id}").status_code in (200, 202)
    server.wait_state(job_id, "killed")
    assert server.stop() == 0


def test_a_worker_killed_mid_build_leaves_nothing_once_it_is_back(
    start_server: ServerFactory, docker_client: docker.DockerClient
) -> None:
    server = start_server()
    nonce = uuid.uuid4().hex[:12]
    job_id = post_build(server, nonce, 3)
    step = running_step(docker_client, server, job_id)
    layer = Path(step["GraphDriver"]["Data"]["UpperDir"]).parent
    assert os.path.ismount(layer), "the step's layer is on the build's disk"
    server.kill9()
    server.start()
    job = server.wait_state(job_id, "succeeded", "failed", timeout_s=120)
    assert (job["state"], job["stdout"]) == ("succeeded", nonce), "built again from scratch, and run"
    assert gone(docker_client, step["Id"]) and not os.path.ismount(layer), "recovery removed the dead build's step"
    assert build_leftovers(docker_client, job_id) == [], "and the image its COPY had committed"
    assert server.stop() == 0
