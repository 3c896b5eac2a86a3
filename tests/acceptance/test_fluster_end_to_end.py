"""Both halves of hatchway's Fluster worker together, as the controller meets them (issue 19): the worker registers
itself, the controller dispatches a cloudpickled entrypoint to it (RunJob), and hears each of its states through
ReportJobState, once: across a `kill -9` of the worker in the middle of the job, and a controller that is down
while the job ends."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from typing import Any

import cloudpickle
import docker
import pytest

from hatchway.fluster.proto import cluster_pb2 as pb
from hatchway.output.events import EventType
from tests.acceptance.conftest import Server, ServerFactory
from tests.acceptance.fluster_worker import fluster_settings, read_port
from tests.acceptance.test_fluster_controller import fluster_health, in_store, states
from tests.conftest import containers_of
from tests.fakes.fluster_controller import FlusterController, fluster_controller
from tests.fakes.fluster_jobs import serialized_entrypoint

pytestmark = pytest.mark.docker

# The entrypoints below travel by value, as a client's own functions do (the container cannot import this module).
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def sleep_long() -> None:
    import time

    print("started", flush=True)
    time.sleep(600)


def answer_once(word: str) -> str:
    """Send `word` to the first connection on FLUSTER_PORT_ACTOR, then end: the test decides when the job ends."""
    import os
    import socket

    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((os.environ["FLUSTER_BIND_HOST"], int(os.environ["FLUSTER_PORT_ACTOR"])))
        listener.listen(1)
        connection, _ = listener.accept()
        with connection:
            connection.sendall(word.encode())
    print(word, flush=True)
    return word


@pytest.fixture
def controller() -> Iterator[FlusterController]:
    with fluster_controller() as double:
        yield double


def start(start_server: ServerFactory, controller: FlusterController, **more: Any) -> Server:
    settings = fluster_settings(controller, fluster__register_retry_s=0.2, fluster__heartbeat_s=0.5)
    return start_server(poll_interval_s=0.2, **settings, **more)


def dispatch(
    controller: FlusterController, job_id: str, entrypoint: Any, *args: Any, ports: tuple[str, ...] = ()
) -> None:
    controller.launch(job_id, serialized_entrypoint(entrypoint, *args), ports=ports)
    answer = controller.dispatch(job_id)
    assert isinstance(answer, pb.Worker.RunJobResponse), answer


def test_kill_9_mid_job_gives_the_controller_exactly_one_final_state(
    start_server: ServerFactory, controller: FlusterController, docker_client: docker.DockerClient
) -> None:
    server = start(start_server, controller)
    controller.wait_registered()
    dispatch(controller, "long", sleep_long)
    controller.wait_for(lambda: states(controller, "long"))  # RUNNING, reported (the dispatch set it already)
    [job] = server.client.get("/jobs", params={"label": "fluster.job_id:long"}).json()["jobs"]
    running = in_store(server, lambda store: store.events_after(0, limit=50, job_id=job["id"])).events[-1]
    assert running.type == EventType.JOB_RUNNING
    deadline = time.monotonic() + 30
    while fluster_health(server)["reported_event"] < running.id:  # RUNNING's report is recorded as sent
        assert time.monotonic() < deadline, fluster_health(server)
        time.sleep(0.05)
    server.kill9()
    for container_id in containers_of(docker_client, server.worker_id):  # its host lost the job's container too
        docker_client.containers.get(container_id).remove(force=True)

    server.start()
    controller.wait_state("long", pb.JOB_STATE_FAILED)
    beats = len(controller.registrations())
    controller.wait_registered(beats + 2)  # time for a second report, were one to come
    assert states(controller, "long") == ["JOB_STATE_RUNNING", "JOB_STATE_FAILED"]
    assert controller.jobs["long"].state == pb.JOB_STATE_FAILED and controller.ignored_reports == []


def test_a_controller_down_while_the_job_ends_hears_its_end_once_it_is_back(
    start_server: ServerFactory, controller: FlusterController
) -> None:
    server = start(start_server, controller)
    controller.wait_registered()
    dispatch(controller, "quiet", answer_once, "hello", ports=("actor",))
    controller.wait_for(lambda: states(controller, "quiet"))  # RUNNING, reported
    [job] = server.client.get("/jobs", params={"label": "fluster.job_id:quiet"}).json()["jobs"]
    with controller.outage():
        assert read_port(job["run"]["ports"]["actor"]) == b"hello"  # the job ends now, the controller away
        assert server.wait_state(job["id"], "succeeded")["stdout"] == "hello\n"
        deadline = time.monotonic() + 30
        while fluster_health(server)["errors"] < 2:  # its report, and a registration, tried and failed
            assert time.monotonic() < deadline, fluster_health(server)
            time.sleep(0.1)
        assert states(controller, "quiet") == ["JOB_STATE_RUNNING"]
    controller.wait_state("quiet", pb.JOB_STATE_SUCCEEDED)
    beats = len(controller.registrations())
    controller.wait_registered(beats + 2)
    assert states(controller, "quiet") == ["JOB_STATE_RUNNING", "JOB_STATE_SUCCEEDED"]
