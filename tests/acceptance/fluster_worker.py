"""A real `hatchway serve` as a Fluster worker, with the controller's test double in front of it: what
test_fluster_dropin.py and the hostile Fluster tests share."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

from hatchway.fluster.proto import cluster_pb2 as pb
from tests.acceptance.conftest import Server
from tests.fakes.fluster_controller import FlusterController

BASE_IMAGE = "hatchway-test/fluster-python:latest"
"""hatchway-test/python with cloudpickle (scripts/test-images.sh): the Python of the tests' own major.minor."""
PORT_RANGE = (31000, 31400)


def fluster_settings(controller: FlusterController, **more: Any) -> dict[str, Any]:
    """The settings of a worker of `controller`, for `start_server`."""
    return {
        "fluster__controller_url": controller.url,
        "fluster__base_image": BASE_IMAGE,
        "fluster__port_range": f"[{PORT_RANGE[0]}, {PORT_RANGE[1]}]",
        "allow_host_network": "true",
        **more,
    }


def register(controller: FlusterController, server: Server) -> str:
    """Wait for the worker to register itself with the controller (as it does at start); its id."""
    controller.wait_for(lambda: server.worker_id in controller.workers, message=f"{server.worker_id} never registered")
    return server.worker_id


def poll_status(
    controller: FlusterController,
    job_id: str,
    until: Callable[[pb.JobStatus], bool],
    timeout_s: float = 90,
    **how: Any,
) -> pb.JobStatus:
    """GetJobStatus, as the controller's clients poll it, until `until` holds."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = controller.get_job_status(job_id, **how)
        if until(status):
            return status
        assert time.monotonic() < deadline, f"job {job_id} stuck: {status}"
        time.sleep(0.2)  # polling a remote state, as the real clients do: there is no event to wait on


def final(controller: FlusterController, job_id: str, **how: Any) -> pb.JobStatus:
    finished = (pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, pb.JOB_STATE_KILLED)
    return poll_status(controller, job_id, lambda status: status.state in finished, **how)


def read_port(port: int, timeout_s: float = 60) -> bytes:
    """Connect to the job's port from the host (retrying until it listens) and read what it sends."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
                return connection.recv(1024)
        except OSError:
            assert time.monotonic() < deadline, f"nothing listens on port {port}"
            time.sleep(0.1)  # another process's listener: there is no event to wait on
