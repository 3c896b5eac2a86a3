"""Pools over HTTP: GET /pools, /workers/status and /health show them, jobs are served from them, and a kill -9
with idle and busy pool containers loses no job and leaves no container."""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any

import docker
import pytest

from tests.acceptance.conftest import Server, ServerFactory
from tests.conftest import BUSYBOX, containers_of, mounts_under

pytestmark = pytest.mark.docker
POOLS = json.dumps([{"image": BUSYBOX, "size": 2}])


def wait_idle(server: Server, idle: int, timeout_s: float = 60) -> list[dict[str, Any]]:
    """Poll GET /pools until the first pool has `idle` idle containers."""
    deadline = time.monotonic() + timeout_s
    while True:
        pools: list[dict[str, Any]] = server.client.get("/pools").json()
        if pools and pools[0]["idle"] >= idle:
            return pools
        assert time.monotonic() < deadline, f"pools did not fill: {pools}"
        time.sleep(0.05)


def test_pools_are_shown_and_serve_jobs(start_server: ServerFactory) -> None:
    server = start_server(pools=POOLS, pool_warm_total=0, max_concurrent_jobs=3)
    pools = wait_idle(server, 2)
    assert pools == [
        {
            "image": BUSYBOX,
            "runtime": "docker",
            "origin": "config",
            "size": 2,
            "reuse_jobs": 0,
            "disk_mb": 1024,
            "idle": 2,
            "busy": 0,
            "starting": 0,
            "jobs_served": 0,
            "last_error": None,
        }
    ]
    job = server.post_job(wait=True, image=BUSYBOX, command="echo pooled; exit 2").json()
    assert (job["state"], job["exit_code"], job["stdout"], job["run"]["pooled"]) == ("failed", 2, "pooled\n", True)
    assert server.client.get("/pools").json()[0]["jobs_served"] == 1
    health = server.client.get("/health").json()
    assert [pool["image"] for pool in health["pools"]] == [BUSYBOX]
    status = server.client.get("/workers/status").json()
    assert status["healthy"] is True and status["max_workers"] == 3
    assert status["busy"] + status["idle"] == 3 and status["queued"] == 0
    assert status["started_containers"] >= 1 and status["pools"][0]["image"] == BUSYBOX


def answered_in_a_log(client: docker.DockerClient, containers: list[str], run_id: str) -> bool:
    """Whether a sandbox's supervisor wrote its answer to run `run_id` (one JSON line on its stdout)."""
    for container in containers:
        for line in client.api.logs(container, stdout=True, stderr=False).splitlines():
            with contextlib.suppress(ValueError):
                answer = json.loads(line)
                if isinstance(answer, dict) and answer.get("id") == run_id:
                    return True
    return False


def test_kill_9_with_idle_and_busy_pool_containers_loses_no_job_and_leaves_no_container(
    start_server: ServerFactory, docker_client: docker.DockerClient
) -> None:
    """One pooled job ends while the worker is down (its answer is read from the container's log), one is still
    running when it is back (its answer comes over a new connection); both are taken up and finish normally."""
    server = start_server(pools=json.dumps([{"image": BUSYBOX, "size": 3}]), pool_warm_total=0, max_concurrent_jobs=2)
    wait_idle(server, 3)
    short = server.post_job(image=BUSYBOX, command="echo before; sleep 1; echo after").json()
    long = server.post_job(image=BUSYBOX, command="echo before; sleep 8; echo after; exit 3").json()
    queued = server.post_job(image=BUSYBOX, command="echo queued-ran").json()
    for job in (short, long):
        assert server.wait_state(job["id"], "running")["run"]["pooled"] is True
        # "running" is stored just before the command goes to the container: wait until it has surely started.
        deadline = time.monotonic() + 30
        while "before" not in server.client.get(f"/jobs/{job['id']}/logs").text:
            assert time.monotonic() < deadline, "the pooled job never printed"
            time.sleep(0.05)
    server.kill9()
    left = containers_of(docker_client, server.worker_id)
    assert len(left) >= 3, "the idle and the busy pool containers outlived the worker"
    # The short job ends while the worker is down: its supervisor's answer is in its container's log.
    deadline = time.monotonic() + 30
    while not answered_in_a_log(docker_client, left, short["id"]):
        assert time.monotonic() < deadline, "the short job never ended while the worker was down"
        time.sleep(0.05)

    server.start()
    ended = server.wait_state(short["id"], "failed", "succeeded")
    assert (ended["state"], ended["stdout"], ended["run"]["pooled"]) == ("succeeded", "before\nafter\n", True), ended
    later = server.wait_state(long["id"], "failed", "succeeded")
    assert (later["state"], later["exit_code"], later["stdout"]) == ("failed", 3, "before\nafter\n"), later
    assert server.wait_state(queued["id"], "succeeded")["stdout"] == "queued-ran\n"
    wait_idle(server, 3)
    deadline = time.monotonic() + 30  # a job's container goes just after its result is stored
    while set(left) & set(containers_of(docker_client, server.worker_id)):
        assert time.monotonic() < deadline, "stale pool containers are reaped, taken-up ones replaced"
        time.sleep(0.1)
    data_dir = server.log_path.parent
    assert server.stop() == 0
    assert containers_of(docker_client, server.worker_id) == []
    assert mounts_under(data_dir) == [], "every pool container's disk is unmounted"
