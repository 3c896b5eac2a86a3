"""Crash recovery after kill -9, and graceful SIGTERM: no job is lost or left in a wrong state."""

from __future__ import annotations

import signal
import time

import docker
import pytest

from hatchway.engines.base import JOB_LABEL, WORKER_LABEL
from tests.acceptance.conftest import ServerFactory
from tests.conftest import BUSYBOX, containers_of

pytestmark = pytest.mark.docker


def test_kill_9_then_restart_reattaches_running_and_runs_queued(
    start_server: ServerFactory, docker_client: docker.DockerClient
) -> None:
    server = start_server(max_concurrent_jobs=1)
    running = server.post_job(image=BUSYBOX, command="echo before; sleep 3; echo after").json()
    queued = server.post_job(image=BUSYBOX, command=["echo", "queued-ran"]).json()
    server.wait_state(running["id"], "running")
    orphan = docker_client.containers.create(
        BUSYBOX, ["true"], labels={WORKER_LABEL: server.worker_id, JOB_LABEL: "nobody"}
    )
    server.kill9()

    server.start()
    finished = server.wait_state(running["id"], "succeeded", "failed")
    assert (finished["state"], finished["stdout"]) == ("succeeded", "before\nafter\n")
    assert server.wait_state(queued["id"], "succeeded")["stdout"] == "queued-ran\n"
    assert orphan.id not in containers_of(docker_client, server.worker_id)


def test_kill_9_with_the_container_gone_records_worker_restart(
    start_server: ServerFactory, docker_client: docker.DockerClient
) -> None:
    server = start_server()
    job = server.post_job(image=BUSYBOX, command=["sleep", "60"]).json()
    server.wait_state(job["id"], "running")
    server.kill9()
    for container_id in containers_of(docker_client, server.worker_id):
        docker_client.containers.get(container_id).remove(force=True)

    server.start()
    lost = server.wait_state(job["id"], "failed", timeout_s=30)
    assert lost["reason"] == "worker_restart" and lost["finished_at"] is not None


def test_sigterm_drains_running_jobs_records_final_states_and_keeps_the_queue(
    start_server: ServerFactory,
) -> None:
    server = start_server(max_concurrent_jobs=2, shutdown_grace_s=3, kill_grace_s=1)
    quick = server.post_job(image=BUSYBOX, command="sleep 1; echo finished-in-grace").json()
    slow = server.post_job(image=BUSYBOX, command=["sleep", "60"]).json()
    waiting = server.post_job(image=BUSYBOX, command=["echo", "after-restart"]).json()
    server.wait_state(quick["id"], "running")
    server.wait_state(slow["id"], "running")

    assert server.stop(timeout_s=30) == 0

    server.start()
    quick_done = server.client.get(f"/jobs/{quick['id']}").json()
    assert (quick_done["state"], quick_done["stdout"]) == ("succeeded", "finished-in-grace\n")
    slow_done = server.client.get(f"/jobs/{slow['id']}").json()
    assert (slow_done["state"], slow_done["reason"]) == ("killed", "shutdown")
    assert server.wait_state(waiting["id"], "succeeded")["stdout"] == "after-restart\n"


def test_bad_configuration_stops_start_up_naming_the_key(tmp_path: pytest.TempPathFactory) -> None:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("HATCHWAY_")}
    env.update(HATCHWAY_MAX_CONCURRENT_JOBS="zero", HATCHWAY_DATA_DIR=str(tmp_path))
    result = subprocess.run(
        [sys.executable, "-m", "hatchway.cli.main", "serve"], env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert "HATCHWAY_MAX_CONCURRENT_JOBS" in result.stderr and "Traceback" not in result.stderr


def test_a_second_sigterm_stops_at_once_and_the_next_start_takes_up_the_job(start_server: ServerFactory) -> None:
    server = start_server(shutdown_grace_s=60, kill_grace_s=1)
    job = server.post_job(image=BUSYBOX, command=["sleep", "60"]).json()
    server.wait_state(job["id"], "running")
    assert server.process is not None
    server.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 10
    while server.client.get("/health").status_code != 503:  # draining: it would give the job 60 s
        assert time.monotonic() < deadline, "the first SIGTERM did not start the drain"
        time.sleep(0.05)
    stopped_at = time.monotonic()
    assert server.stop(timeout_s=20) == 0
    assert time.monotonic() - stopped_at < 10, "the second signal did not wait for the job's container"

    server.env["HATCHWAY_SHUTDOWN_GRACE_S"] = "1"
    server.start()
    assert server.client.get(f"/jobs/{job['id']}").json()["state"] == "running", "its container outlived the stop"
    assert server.stop(timeout_s=30) == 0
    server.start()
    ended = server.client.get(f"/jobs/{job['id']}").json()
    assert (ended["state"], ended["reason"]) == ("killed", "shutdown")
