"""Placement across a fleet (issue 18): two real `hatchway serve` workers on one PostgreSQL store, labelled apart,
run each placed job only where it fits, whichever of them it was submitted to; a job no worker fits waits, out of
the way of the others. A worker alone refuses what it cannot place."""

from __future__ import annotations

import json

import pytest

from tests.acceptance.conftest import ServerFactory

pytestmark = [pytest.mark.docker, pytest.mark.postgres]

IMAGE = "hatchway-test/busybox"


def test_placed_jobs_run_only_on_the_workers_they_fit(start_fleet: ServerFactory) -> None:
    fleet = {"poll_interval_s": 0.5, "max_concurrent_jobs": 2}
    a = start_fleet(labels=json.dumps({"zone": "a"}), **fleet)
    b = start_fleet(labels=json.dumps({"zone": "b", "disk": "ssd"}), **fleet)
    # The best job in the queue fits no worker: it must not hold up the others.
    nowhere = a.post_job(id="nowhere", image=IMAGE, command=["true"], placement={"zone": "c"}, priority=9)
    assert nowhere.status_code == 201, nowhere.text
    assert nowhere.json()["message"] == "waits for a worker whose labels include zone=c"
    wanted: dict[str, tuple[str, dict[str, str]]] = {}  # job id -> the worker to run it, its placement
    for i in range(4):
        for zone, worker in (("a", a.worker_id), ("b", b.worker_id)):
            submitted_to = (a, b)[i % 2]  # each worker takes in jobs for itself and for the other
            job_id = f"{zone}-{i}"
            answer = submitted_to.post_job(
                id=job_id,
                image=IMAGE,
                command=["sh", "-c", "sleep 0.2; echo $HATCHWAY_WORKER_ID"],
                placement={"zone": zone},
            )
            assert answer.status_code == 201, answer.text
            wanted[job_id] = (worker, {"zone": zone})
    ssd = {"disk": "ssd", "zone": "b"}
    answer = b.post_job(id="ssd", image=IMAGE, command=["sh", "-c", "echo $HATCHWAY_WORKER_ID"], placement=ssd)
    assert answer.status_code == 201 and answer.json()["message"] is None, answer.text
    wanted["ssd"] = (b.worker_id, ssd)

    for job_id, (worker, placement) in wanted.items():
        job = a.wait_state(job_id, "succeeded", "failed", "killed", timeout_s=90)  # either worker answers
        assert (job["state"], job["worker_id"], job["stdout"]) == ("succeeded", worker, f"{worker}\n"), job
        assert job["message"] is None and job["spec"]["placement"] == placement, job
    waiting = b.client.get("/jobs/nowhere").json()
    assert (waiting["state"], waiting["worker_id"], waiting["message"]) == (
        "queued",
        None,
        "waits for a worker whose labels include zone=c",
    )
    killed = b.client.delete("/jobs/nowhere")
    assert killed.status_code == 200 and killed.json()["reason"] == "cancelled", killed.text
    assert a.stop() == 0 and b.stop() == 0


def test_a_worker_alone_refuses_a_placement_its_labels_do_not_meet(start_server: ServerFactory) -> None:
    alone = start_server(labels=json.dumps({"zone": "a"}))
    refused = alone.post_job(image=IMAGE, command=["true"], placement={"zone": "b"})
    assert refused.status_code == 403, refused.text
    assert "placement zone=b is not met by this worker's labels (zone=a)" in refused.text
    placed = alone.post_job(wait=True, image=IMAGE, command=["true"], placement={"zone": "a"})
    assert placed.status_code == 201 and placed.json()["state"] == "succeeded", placed.text
