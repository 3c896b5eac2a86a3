"""A real `hatchway serve` with the `fluster` block, against the double of Fluster's controller: it registers and
heartbeats as the real worker does; a controller that is down for a while gets the registration and every state
once it is back, each once; a `kill -9` of the worker mid-job leaves exactly one final state reported after the
restart.

The jobs are Fluster jobs (origin `fluster`) queued straight into the worker's SQLite store from this process (the
store is made for several processes on one file; the worker's scheduler finds them by its poll): a stand-in for the
WorkerService's RunJob, which is not what these tests are about.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import docker
import pytest

from hatchway.fluster.proto import cluster_pb2 as pb
from hatchway.jobs.service import source_job_id
from hatchway.models import Job, JobRequest, JobState, utcnow
from hatchway.output.events import EventType
from hatchway.settings import Settings
from hatchway.sources.fluster_jobs import ORIGIN, external_id
from hatchway.store.sqlite import SqliteStore
from hatchway.worker.wiring import policy_from_settings
from tests.acceptance.conftest import Server, ServerFactory
from tests.conftest import BUSYBOX, containers_of
from tests.fakes.fluster_controller import FlusterController, fluster_controller, now_ms

pytestmark = pytest.mark.docker
T = TypeVar("T")


@pytest.fixture
def controller() -> Iterator[FlusterController]:
    with fluster_controller() as double:
        yield double


def start(start_server: ServerFactory, controller: FlusterController, **settings: Any) -> Server:
    return start_server(
        fluster__controller_url=controller.url,
        fluster__register_retry_s=0.2,
        fluster__heartbeat_s=0.5,
        poll_interval_s=0.2,
        **settings,
    )


def queue_fluster_job(server: Server, job_id: str, command: str) -> str:
    """Queue attempt 0 of the controller's job `job_id` as the worker's Fluster job; its hatchway id."""
    data_dir = Path(server.env["HATCHWAY_DATA_DIR"])
    settings = Settings(data_dir=data_dir, allowed_images=["hatchway-test/*"])
    policy = policy_from_settings(settings, allowed_runtimes=["docker"], available_runtimes=lambda: ["docker"])
    spec = policy.admit(JobRequest(image=BUSYBOX, command=command), source=ORIGIN).spec
    external = external_id(job_id, 0)
    job = Job(
        id=source_job_id(ORIGIN, external),
        state=JobState.QUEUED,
        created_at=utcnow(),
        image=spec.image,
        labels=spec.labels,
        priority=spec.priority,
        spec=spec,
        origin=ORIGIN,
        external_id=external,
    )

    in_store(server, lambda store: store.enqueue(job))
    return job.id


def in_store(server: Server, what: Callable[[SqliteStore], Awaitable[T]]) -> T:
    """`what` done to the worker's store from this process."""

    async def done() -> T:
        store = SqliteStore(Path(server.env["HATCHWAY_DATA_DIR"]) / "hatchway.db")
        try:
            return await what(store)
        finally:
            await store.close()

    return asyncio.run(done())


def dispatched(controller: FlusterController, job_id: str, worker_id: str) -> None:
    """The controller has the job on this worker, as after its RunJob."""
    controller.launch(job_id, b"")
    with controller.lock:
        controller.jobs[job_id].mark_dispatched(worker_id, now_ms())


def states(controller: FlusterController, job_id: str) -> list[str]:
    return [pb.JobState.Name(report.state) for report in controller.reports(job_id)]


def fluster_health(server: Server) -> dict[str, Any]:
    status: dict[str, Any] = server.client.get("/health").json()["fluster"]
    return status


def test_it_registers_then_heartbeats_and_health_says_so(
    start_server: ServerFactory, controller: FlusterController
) -> None:
    server = start(start_server, controller, fluster__worker_id="fw-1", fluster__advertise_address="10.9.8.7:31000")
    controller.wait_registered(3)
    first, *beats = controller.registrations()
    assert (first.worker_id, first.address) == ("fw-1", "10.9.8.7:31000")
    assert first.resources.cpu == first.metadata.cpu_count >= 1 and first.resources.memory.endswith("g")
    assert first.metadata.memory_bytes > 0 and first.metadata.hostname and first.metadata.ip_address
    assert all(beat.worker_id == "fw-1" for beat in beats)
    health = fluster_health(server)
    assert health["registered"] and health["worker_id"] == "fw-1" and health["url"] == controller.url
    assert health["errors"] == 0


def test_a_controller_down_for_a_while_gets_the_registration_and_every_state_once_back(
    start_server: ServerFactory, controller: FlusterController
) -> None:
    controller.down()
    server = start(start_server, controller)
    job = queue_fluster_job(server, "while-down", "echo done")
    assert server.wait_state(job, "succeeded")["stdout"] == "done\n"
    deadline = time.monotonic() + 30
    while fluster_health(server)["errors"] < 3:  # registrations retried, the reports too
        assert time.monotonic() < deadline, fluster_health(server)
        time.sleep(0.1)
    assert not fluster_health(server)["registered"]
    dispatched(controller, "while-down", server.worker_id)
    controller.up()
    controller.wait_registered()
    controller.wait_state("while-down", pb.JOB_STATE_SUCCEEDED)
    assert states(controller, "while-down") == ["JOB_STATE_RUNNING", "JOB_STATE_SUCCEEDED"]
    assert controller.ignored_reports == []
    assert fluster_health(server)["registered"]


def test_kill_9_mid_job_leaves_exactly_one_final_state_reported_after_the_restart(
    start_server: ServerFactory, controller: FlusterController, docker_client: docker.DockerClient
) -> None:
    server = start(start_server, controller)
    controller.wait_registered()
    dispatched(controller, "lost", server.worker_id)
    job = queue_fluster_job(server, "lost", "sleep 60")
    controller.wait_for(lambda: controller.reports("lost"))  # RUNNING (the dispatch marked it so already)
    running_event = in_store(server, lambda store: store.events_after(0, limit=10, job_id=job)).events[-1]
    assert running_event.type == EventType.JOB_RUNNING
    deadline = time.monotonic() + 30
    while fluster_health(server)["reported_event"] < running_event.id:  # its report is recorded as sent
        assert time.monotonic() < deadline
        time.sleep(0.05)
    server.kill9()
    for container_id in containers_of(docker_client, server.worker_id):  # the job's container went with it
        docker_client.containers.get(container_id).remove(force=True)

    server.start()
    assert server.wait_state(job, "failed")["reason"] == "worker_restart"
    controller.wait_state("lost", pb.JOB_STATE_FAILED)
    heartbeats = len(controller.registrations())
    controller.wait_registered(heartbeats + 2)  # time for a second report, were one to come
    assert states(controller, "lost") == ["JOB_STATE_RUNNING", "JOB_STATE_FAILED"]
    final = controller.reports("lost")[-1]
    assert (final.attempt_id, final.worker_id) == (0, server.worker_id) and final.error


def test_states_not_yet_reported_at_a_kill_9_are_reported_after_the_restart(
    start_server: ServerFactory, controller: FlusterController
) -> None:
    server = start(start_server, controller)
    controller.wait_registered()
    dispatched(controller, "unsent", server.worker_id)
    controller.down()
    job = queue_fluster_job(server, "unsent", "echo ran")
    assert server.wait_state(job, "succeeded")["stdout"] == "ran\n"
    server.kill9()
    assert controller.reports("unsent") == []

    controller.up()
    server.start()
    controller.wait_state("unsent", pb.JOB_STATE_SUCCEEDED)
    heartbeats = len(controller.registrations())
    controller.wait_registered(heartbeats + 2)  # time for a second report, were one to come
    assert states(controller, "unsent") == ["JOB_STATE_RUNNING", "JOB_STATE_SUCCEEDED"]
