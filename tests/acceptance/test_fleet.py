"""A fleet under load, losing workers: three real workers on one PostgreSQL store take 300 jobs and gradings,
each submitted to a worker picked at random; one worker is killed outright (SIGKILL) while it runs jobs, another
is stopped (SIGTERM) while it runs jobs. The survivor reclaims what the dead one held once its lease expires.

What must hold, counted from the store's own event log and from the engine's container starts, not from what the
workers say about themselves: every job ends exactly once; none is lost; no plain job's container starts twice (a
job that may have started on the dead worker is failed `worker_lost`, never run again); only gradings are run
again, and only those the dead worker held; and every worker, asked about any job, answers its final state.
"""

from __future__ import annotations

import collections
import random
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import docker
import psycopg
import pytest

from hatchway.engines.base import JOB_LABEL, WORKER_LABEL
from tests.acceptance.conftest import Server, ServerFactory
from tests.conftest import BUSYBOX
from tests.postgres_db import fresh_schema_sync

pytestmark = pytest.mark.postgres

PLAIN_JOBS = 240
GRADINGS = 60
LEASE_S = 3
SUM = "a, b = map(int, input().split())\nprint(a + b)\n"


class ContainerStarts:
    """Every container start the engine reports for the fleet's workers, by job id, from a docker events stream
    opened before the first job."""

    def __init__(self, client: docker.DockerClient, worker_ids: set[str]) -> None:
        self.by_job: collections.Counter[str] = collections.Counter()
        self._worker_ids = worker_ids
        self._stream = client.events(decode=True, filters={"type": "container", "event": "start"})
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for event in self._stream:
            labels = event.get("Actor", {}).get("Attributes", {})
            if labels.get(WORKER_LABEL) in self._worker_ids and JOB_LABEL in labels:
                self.by_job[labels[JOB_LABEL]] += 1

    def close(self) -> None:
        self._stream.close()
        self._reader.join(timeout=10)


@pytest.fixture
def starts(docker_client: docker.DockerClient) -> Iterator[dict[str, ContainerStarts]]:
    holder: dict[str, ContainerStarts] = {}
    yield holder
    if "it" in holder:
        holder["it"].close()


def grading(n: int) -> dict[str, Any]:
    return {"language": "python", "code": SUM, "tests": [{"input": f"{n} 1\n", "expected_output": f"{n + 1}\n"}]}


def running_on(server: Server, worker_id: str) -> list[str]:
    jobs = server.client.get("/jobs", params={"state": "running", "limit": 500}).json()["jobs"]
    return [job["id"] for job in jobs if job["worker_id"] == worker_id]


def wait_until_running_on(asked: Server, worker: Server, timeout_s: float = 120) -> None:
    """Until `worker` runs at least one job (as the store says, asked through `asked`)."""
    deadline = time.monotonic() + timeout_s
    while not running_on(asked, worker.worker_id):
        assert time.monotonic() < deadline, f"{worker.worker_id} never ran a job"
        time.sleep(0.05)


def wait_all_final(server: Server, ids: list[str], timeout_s: float) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    while True:
        found = {job_id: server.client.get(f"/jobs/{job_id}").json() for job_id in ids}
        waiting = [job_id for job_id, job in found.items() if job["state"] not in ("succeeded", "failed", "killed")]
        if not waiting:
            return found
        assert time.monotonic() < deadline, f"{len(waiting)} jobs never ended, e.g. {found[waiting[0]]}"
        time.sleep(0.5)


def store_events(url: str) -> dict[str, list[tuple[str, str | None, str | None]]]:
    """Each job's lifecycle events from the store's log, oldest first: (type, worker, reason)."""
    with psycopg.connect(url) as db:
        rows = db.execute("SELECT job_id, type, worker_id, reason FROM events ORDER BY id").fetchall()
    events: dict[str, list[tuple[str, str | None, str | None]]] = collections.defaultdict(list)
    for job_id, kind, worker_id, reason in rows:
        events[job_id].append((kind, worker_id, reason))
    return events


def test_three_workers_lose_two_and_every_job_ends_exactly_once(
    start_server: ServerFactory, docker_client: docker.DockerClient, starts: dict[str, ContainerStarts]
) -> None:
    with fresh_schema_sync() as url:
        fleet = [
            start_server(
                store_url=url,
                worker_lease_s=LEASE_S,
                max_concurrent_jobs=3,
                shutdown_grace_s=60,  # the drain waits for its jobs (each under a second): none is cut off
                allowed_images="hatchway-test/*,hatchway-profile/*",
                pool_warm_total=0,  # every plain job in a container of its own: its start is the engine's to count
            )
            for _ in range(3)
        ]
        doomed, stopped, survivor = fleet
        starts["it"] = ContainerStarts(docker_client, {server.worker_id for server in fleet})
        pick = random.Random(18)
        plain = [f"fleet-job-{n}" for n in range(PLAIN_JOBS)]
        bodies: list[tuple[str, str, dict[str, Any]]] = [
            ("/jobs", job_id, {"id": job_id, "image": BUSYBOX, "command": f"sleep 0.{pick.randint(1, 6)}; echo {n}"})
            for n, job_id in enumerate(plain)
        ]
        bodies += [("/grade", "", grading(n)) for n in range(GRADINGS)]
        pick.shuffle(bodies)

        def submit(item: tuple[str, str, dict[str, Any]]) -> str:
            path, _, body = item
            answer = pick.choice(fleet).client.post(path, json=body)
            assert answer.status_code == 201, answer.text
            return str(answer.json()["id"])

        with ThreadPoolExecutor(6) as clients:
            ids = list(clients.map(submit, bodies))
        gradings = sorted(set(ids) - set(plain))
        assert len(set(ids)) == PLAIN_JOBS + GRADINGS

        wait_until_running_on(survivor, doomed)
        doomed.kill9()
        wait_until_running_on(survivor, stopped)
        assert stopped.stop() == 0, "a worker stopped with SIGTERM drains and exits cleanly"

        final = wait_all_final(survivor, ids, timeout_s=600)
        starts["it"].close()
        events = store_events(url)

        # The dead worker comes back (its host rebooted, say): it reaps its containers, and touches no job it lost.
        doomed.start()
        stopped.start()
        for server in fleet:
            for job_id in ids:
                assert server.client.get(f"/jobs/{job_id}").json()["state"] == final[job_id]["state"], job_id

    lost: list[str] = []
    for job_id in ids:
        kinds = [kind for kind, _, _ in events[job_id]]
        assert kinds.count("job_finished") == 1, f"{job_id} did not end exactly once: {events[job_id]}"
        assert kinds[-1] == "job_finished", f"{job_id} changed after it ended: {events[job_id]}"
        job = final[job_id]
        if job_id in plain:
            assert starts["it"].by_job[job_id] <= 1, f"{job_id} ran twice: {events[job_id]}"
            if job["state"] == "succeeded":
                assert job["stdout"].strip() == job_id.removeprefix("fleet-job-")
                assert starts["it"].by_job[job_id] == 1
            else:
                assert job["reason"] == "worker_lost", f"{job_id} ended {job['state']} {job['reason']}"
                assert any(worker == doomed.worker_id for _, worker, _ in events[job_id])
                lost.append(job_id)
        else:
            assert job["state"] == "succeeded", f"grading {job_id} ended {job['state']} {job['reason']}"
            if kinds.count("job_running") > 1:  # graded again, by rule, only after the dead worker lost it
                assert "job_requeued" in kinds
                assert any(kind == "job_running" and worker == doomed.worker_id for kind, worker, _ in events[job_id])
    print(f"fleet: {len(lost)} plain jobs lost with their worker; {len(gradings)} gradings")
