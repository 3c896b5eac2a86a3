"""Any worker of a fleet answers for any job (issue 18): two real workers on one PostgreSQL store; a job placed on
B is followed live and its artifacts fetched through A, which forwards to B what only B has. With B gone, A says
so (502 worker_unreachable, naming B) rather than answering with nothing."""

from __future__ import annotations

import json

import pytest

from tests.acceptance.conftest import ServerFactory

pytestmark = [pytest.mark.docker, pytest.mark.postgres]

IMAGE = "hatchway-test/busybox"


def test_a_job_on_one_worker_is_followed_and_its_artifacts_fetched_through_another(start_fleet: ServerFactory) -> None:
    a = start_fleet(labels=json.dumps({"side": "a"}))
    b = start_fleet(labels=json.dumps({"side": "b"}))
    gate = "/work/go"  # the job waits for this file, which the test's DELETE never creates: it is stopped instead
    script = f"mkdir -p out; echo kept > out/result.txt; echo first; while [ ! -e {gate} ]; do sleep 0.1; done"
    created = a.post_job(id="on-b", image=IMAGE, command=["sh", "-c", script], placement={"side": "b"})
    assert created.status_code == 201, created.text
    job = a.wait_state("on-b", "running")
    assert job["worker_id"] == b.worker_id

    # The live output is on B: A streams it through, while the job still runs.
    with a.client.stream("GET", "/jobs/on-b/logs", params={"follow": "true"}) as followed:
        assert followed.status_code == 200
        lines = followed.iter_lines()
        assert next(lines) == "first"
        assert a.client.get("/jobs/on-b").json()["state"] == "running", "seen live, before the job's end"
        stopped = a.client.delete("/jobs/on-b", params={"grace_s": 0})
        assert stopped.status_code == 200 and stopped.json()["state"] == "killed", stopped.text
        assert list(lines) == [], "the stream ends with the job"

    # Its artifacts are where it ran.
    listing = a.client.get("/jobs/on-b/artifacts")
    assert listing.status_code == 200 and listing.json() == [{"path": "result.txt", "size": 5}], listing.text
    fetched = a.client.get("/jobs/on-b/artifacts/result.txt")
    assert fetched.status_code == 200 and fetched.content == b"kept\n"
    missing = a.client.get("/jobs/on-b/artifacts/nothing.txt")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "artifact_not_found", "B's own answer"

    # Gone, B cannot be asked; A names it.
    b.kill9()
    unreachable = a.client.get("/jobs/on-b/artifacts")
    assert unreachable.status_code == 502, unreachable.text
    assert unreachable.json()["error"]["code"] == "worker_unreachable"
    assert b.worker_id in unreachable.json()["error"]["message"]
    b.start()  # to clean up what it left, as a worker that comes back does


def test_a_forwarded_request_is_not_forwarded_again(start_fleet: ServerFactory) -> None:
    a = start_fleet(labels=json.dumps({"side": "a"}))
    b = start_fleet(labels=json.dumps({"side": "b"}))
    keep = ["sh", "-c", "mkdir -p out; echo kept > out/result.txt"]
    done = a.post_job(wait=True, id="ran-on-b", image=IMAGE, command=keep, placement={"side": "b"})
    assert done.json()["worker_id"] == b.worker_id
    assert a.client.get("/jobs/ran-on-b/artifacts").json() == [{"path": "result.txt", "size": 5}], "from B"
    # A request that says it was forwarded already is answered from what this worker has (A kept nothing), so
    # two workers that disagree about who holds a job never bounce a request between them.
    answer = a.client.get("/jobs/ran-on-b/artifacts", headers={"X-Hatchway-Forwarded-By": b.worker_id})
    assert answer.status_code == 200 and answer.json() == [], answer.text
