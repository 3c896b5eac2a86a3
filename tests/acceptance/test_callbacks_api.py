"""Callbacks as a client meets them: a real `hatchway serve` POSTs each job's and grading's final state to a fake
receiver on 127.0.0.1, signed, retried, recorded on the job, and delivered after a `kill -9` and restart."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import docker
import pytest

from tests.acceptance.conftest import Server, ServerFactory, free_port
from tests.conftest import BUSYBOX, containers_of
from tests.fakes.receiver import Delivery, Receiver, receiving

pytestmark = pytest.mark.docker

SECRET = "the-callback-secret-of-these-tests"
SETTINGS = {
    "callback_secret": SECRET,
    "callback_allowed_urls": "http://127.0.0.1:*",
    "allowed_images": "hatchway-test/*,hatchway-profile/*",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, docker_client: docker.DockerClient) -> Iterator[Server]:
    worker_id = f"callbacks-{os.getpid()}-{free_port()}"
    running = Server(tmp_path_factory.mktemp("callbacks"), worker_id, max_concurrent_jobs=2, **SETTINGS).start()
    yield running
    assert running.stop() == 0
    running.client.close()
    assert containers_of(docker_client, worker_id) == []


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with receiving() as fake:
        yield fake


def callback_when(
    server: Server, path: str, what: Callable[[dict[str, Any]], bool], timeout_s: float = 60
) -> dict[str, Any]:
    """Poll over HTTP, as a client would, until `what` holds for the callback of the job (or grading) at `path`."""
    deadline = time.monotonic() + timeout_s
    while True:
        found: dict[str, Any] = server.client.get(path).json()
        if found["callback"] is not None and what(found["callback"]):
            return found
        assert time.monotonic() < deadline, f"callback never got there: {found['callback']}"
        time.sleep(0.1)


def settled(server: Server, path: str, timeout_s: float = 60) -> dict[str, Any]:
    """The job (or grading) at `path` once its callback is no longer pending."""
    return callback_when(server, path, lambda callback: callback["state"] != "pending", timeout_s)


def signed(delivery: Delivery) -> bool:
    expected = "sha256=" + hmac.new(SECRET.encode(), delivery.body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(delivery.headers.get("x-hatchway-signature", ""), expected)


def without_callback(found: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in found.items() if key != "callback"}


def test_a_job_s_callback_is_signed_retried_and_recorded_on_the_job(server: Server, receiver: Receiver) -> None:
    receiver.answers = [500, 500]
    created = server.post_job(image=BUSYBOX, command="echo called back", callback_url=f"{receiver.url}/hook")
    assert created.status_code == 201, created.text
    job = created.json()
    assert job["callback"]["state"] == "pending" and job["callback"]["attempts"] == 0
    assert job["spec"]["callback_url"] == f"{receiver.url}/hook"

    job = settled(server, f"/jobs/{job['id']}")
    callback = job["callback"]
    assert (callback["state"], callback["attempts"], callback["last_status"]) == ("delivered", 3, 200)
    assert callback["delivered_at"] is not None and callback["last_error"] is None
    got = receiver.wait_for(3)
    assert [item.answered for item in got] == [500, 500, 200]
    assert all(signed(item) for item in got)
    assert {item.headers["x-hatchway-delivery"] for item in got} == {callback["delivery_id"]}
    assert {item.headers["x-hatchway-event"] for item in got} == {"job.finished"}
    assert json.loads(got[-1].body) == without_callback(job), "the body is the job as GET /jobs/{id} shows it"
    assert json.loads(got[-1].body)["stdout"] == "called back\n"
    assert SECRET not in server.log_path.read_text()
    metrics = server.client.get("/metrics").text
    assert 'hatchway_callback_deliveries_total{result="delivered"}' in metrics
    assert 'hatchway_callback_deliveries_total{result="retry"} 0.0' not in metrics, "the two 500s count as retries"


def test_a_refused_callback_is_recorded_as_failed(server: Server, receiver: Receiver) -> None:
    receiver.answers = [410]
    job = server.post_job(image=BUSYBOX, command="true", callback_url=f"{receiver.url}/gone").json()
    callback = settled(server, f"/jobs/{job['id']}")["callback"]
    assert (callback["state"], callback["attempts"], callback["last_status"]) == ("failed", 1, 410)
    assert callback["last_error"] == "the receiver answered 410"
    assert len(receiver.received) == 1


def test_a_grading_s_callback_carries_its_result(server: Server, receiver: Receiver) -> None:
    body = {
        "language": "python",
        "code": "a, b = map(int, input().split())\nprint(a + b)\n",
        "tests": [{"input": "1 2\n", "expected_output": "3\n"}],
        "callback_url": f"{receiver.url}/graded",
    }
    created = server.client.post("/grade", json=body)
    assert created.status_code == 201, created.text
    grade = settled(server, f"/grade/{created.json()['id']}", timeout_s=120)
    assert grade["callback"]["state"] == "delivered" and grade["verdict"] == "AC"
    [got] = receiver.received
    assert signed(got) and got.headers["x-hatchway-event"] == "grade.finished"
    assert json.loads(got.body) == without_callback(grade), "the body is the grading as GET /grade/{id} shows it"


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("http://127.0.0.2:8000/hook", "callback_url is not allowed"),
        ("http://user:pw@127.0.0.1:8000/hook", "no credentials"),
        ("ftp://127.0.0.1/hook", "callback_url"),
        ("not a url", "callback_url"),
    ],
)
def test_a_bad_callback_url_is_a_422_saying_so(server: Server, url: str, words: str) -> None:
    for path, body in (
        ("/jobs", {"image": BUSYBOX, "command": "true"}),
        ("/grade", {"language": "python", "code": "print(1)", "tests": [{"input": "", "expected_output": "1\n"}]}),
    ):
        answer = server.client.post(path, json={**body, "callback_url": url})
        assert answer.status_code == 422, (path, answer.text)
        assert words in answer.json()["error"]["message"], (path, answer.text)


def test_a_pending_callback_survives_kill_9_and_arrives_once(start_server: ServerFactory) -> None:
    port = free_port()
    receiver = Receiver(then=503)
    with receiving(port, receiver):
        server = start_server(**SETTINGS)
        job = server.post_job(image=BUSYBOX, command="echo before the crash", callback_url=f"{receiver.url}/hook")
        job_id = job.json()["id"]
        tried = callback_when(server, f"/jobs/{job_id}", lambda callback: callback["attempts"] >= 1)
        assert tried["callback"]["state"] == "pending" and tried["callback"]["last_status"] == 503
        server.kill9()
    assert receiver.delivered() == []

    receiver.then = 200
    with receiving(port, receiver):
        server.start()
        job = settled(server, f"/jobs/{job_id}")
    callback = job["callback"]
    assert callback["state"] == "delivered" and callback["attempts"] >= 2
    [delivered] = receiver.delivered()
    assert signed(delivered) and json.loads(delivered.body)["stdout"] == "before the crash\n"
    assert {item.headers["x-hatchway-delivery"] for item in receiver.received} == {callback["delivery_id"]}
    assert len({item.body for item in receiver.received}) == 1, "the same bytes before and after the restart"
