"""A fleet of real `hatchway serve` workers on one PostgreSQL store, with a short lease (3 s): a worker killed with
kill -9 is taken over by a survivor (its claimed job runs there, its running job fails `worker_lost`, its grading is
graded again and ends once) and `GET /workers` shows it expired; a worker paused past its lease (SIGSTOP) and
resumed finishes and reports nothing it lost, its containers go, and it goes on as a new generation."""

from __future__ import annotations

import io
import json
import signal
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from typing import Any

import docker
import psycopg
import pytest

from hatchway.engines.base import JOB_LABEL
from tests.acceptance.conftest import Server, ServerFactory
from tests.conftest import BUSYBOX, containers_of
from tests.fakes import JsonHandler, serving
from tests.fakes.receiver import Delivery, receiving
from tests.postgres_db import fresh_schema_sync

pytestmark = [pytest.mark.docker, pytest.mark.postgres]

LEASE_S = 3
IMAGES = "hatchway-test/*,hatchway-profile/*"
# Sleeps as long as its input says, then answers: a grading that takes a while.
PY_SLOW = "import time\nseconds = float(input())\ntime.sleep(seconds)\nprint('done')\n"


class Gate:
    """An archive server whose answers wait until `open`: a job fetching its bundle stays claimed, not started."""

    def __init__(self) -> None:
        self.opened = threading.Event()
        self.asked = threading.Event()
        self.url = ""
        archive = io.BytesIO()
        with zipfile.ZipFile(archive, "w") as zipped:
            zipped.writestr("hello.txt", "hello from the bundle\n")
        self.body = archive.getvalue()


@pytest.fixture
def gate() -> Iterator[Gate]:
    state = Gate()

    class Handler(JsonHandler):
        def do_GET(self) -> None:
            state.asked.set()
            state.opened.wait(120)
            self.answer(200, raw=state.body)

    with serving(Handler) as url:
        state.url = f"{url}/bundle.zip"
        yield state
        state.opened.set()


@pytest.fixture
def store_url() -> Iterator[str]:
    """The fleet's schema: a test asks for it before `start_server`, so that its workers stop before it goes."""
    with fresh_schema_sync() as url:
        yield url


def fleet_worker(start_server: ServerFactory, store_url: str, **settings: Any) -> Server:
    values: dict[str, Any] = {
        "store_url": store_url,
        "worker_lease_s": LEASE_S,
        "poll_interval_s": 0.5,
        "max_concurrent_jobs": 3,
        "allowed_images": IMAGES,
    }
    values.update(settings)
    return start_server(**values)


def until(what: str, check: Callable[[], Any], timeout_s: float = 90) -> Any:
    """Poll (another process's doing: there is nothing to wait on) until `check` answers something true."""
    deadline = time.monotonic() + timeout_s
    while not (found := check()):
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.1)
    return found


def events(store_url: str, job_id: str) -> list[tuple[str, str, str | None]]:
    """The job's lifecycle events as the shared store recorded them: (type, state, worker)."""
    with psycopg.connect(store_url) as db:
        rows = db.execute("SELECT type, state, worker_id FROM events WHERE job_id = %s ORDER BY id", (job_id,))
        return [(kind, state, worker) for kind, state, worker in rows.fetchall()]


def ended_once(store_url: str, job_id: str) -> tuple[str, str | None]:
    """The one job_finished event of the job: (state, worker)."""
    finished = [(state, worker) for kind, state, worker in events(store_url, job_id) if kind == "job_finished"]
    assert len(finished) == 1, f"job {job_id} ended {len(finished)} times: {events(store_url, job_id)}"
    return finished[0]


def job_state(server: Server, job_id: str, *states: str) -> dict[str, Any] | None:
    job: dict[str, Any] = server.client.get(f"/jobs/{job_id}").json()
    return job if job["state"] in states else None


def listed(server: Server) -> dict[str, dict[str, Any]]:
    return {worker["id"]: worker for worker in server.client.get("/workers").json()}


def slow_grading(server: Server) -> str:
    tests = [{"input": "0.5\n", "expected_output": "done\n"} for _ in range(12)]
    answer = server.client.post("/grade", json={"language": "python", "code": PY_SLOW, "tests": tests})
    assert answer.status_code == 201, answer.text
    grade_id: str = answer.json()["id"]
    until("a test of the grading was graded", lambda: ": AC " in server.client.get(f"/jobs/{grade_id}/logs").text)
    return grade_id


def test_a_worker_killed_mid_run_is_taken_over_by_a_survivor(
    store_url: str, start_server: ServerFactory, gate: Gate, docker_client: docker.DockerClient
) -> None:
    victim = fleet_worker(start_server, store_url)
    running = victim.post_job(image=BUSYBOX, command=["sleep", "300"]).json()
    victim.wait_state(running["id"], "running")
    grading = slow_grading(victim)
    claimed = victim.post_job(image=BUSYBOX, command=["cat", "hello.txt"], bundle_url=gate.url).json()
    assert gate.asked.wait(30) and victim.wait_state(claimed["id"], "building")
    survivor = fleet_worker(start_server, store_url)
    assert listed(survivor)[victim.worker_id]["running"] == 2

    victim.kill9()
    gate.opened.set()
    ran = survivor.wait_state(claimed["id"], "succeeded", "failed", timeout_s=90)
    assert (ran["state"], ran["stdout"], ran["worker_id"]) == (
        "succeeded",
        "hello from the bundle\n",
        survivor.worker_id,
    )
    lost = survivor.wait_state(running["id"], "failed")
    assert (lost["reason"], lost["worker_id"]) == ("worker_lost", victim.worker_id)
    graded = until("the grading ended", lambda: job_state(survivor, grading, "succeeded", "failed", "killed"))
    assert (graded["state"], graded["worker_id"], graded["grade"]["verdict"]) == ("succeeded", survivor.worker_id, "AC")
    assert survivor.client.get(f"/grade/{grading}").json()["passed"] == 12

    assert ended_once(store_url, claimed["id"]) == ("succeeded", survivor.worker_id)
    assert ended_once(store_url, running["id"]) == ("failed", victim.worker_id)
    assert ended_once(store_url, grading) == ("succeeded", survivor.worker_id)
    for job_id in (claimed["id"], grading):
        assert [kind for kind, _, _ in events(store_url, job_id)].count("job_requeued") == 1, "taken over once"
    fleet = listed(survivor)
    gone = fleet[victim.worker_id]
    assert (gone["health"], gone["reclaimed_by"], gone["running"], gone["building"]) == (
        "expired",
        survivor.worker_id,
        0,
        0,
    )
    assert fleet[survivor.worker_id]["health"] == "alive"
    assert containers_of(docker_client, victim.worker_id), "its containers are on its host, out of the survivor's reach"

    victim.start()  # back on its host: nothing of its last life is taken up again, and what it left is removed
    until("the victim's leftovers removed", lambda: not containers_of(docker_client, victim.worker_id))
    back = listed(survivor)[victim.worker_id]
    assert (back["health"], back["generation"], back["reclaimed_at"]) == ("alive", 2, None)
    assert ended_once(store_url, running["id"]) == ("failed", victim.worker_id)


def test_a_worker_paused_past_its_lease_touches_nothing_it_lost_and_goes_on(
    store_url: str, start_server: ServerFactory, gate: Gate, docker_client: docker.DockerClient
) -> None:
    with receiving() as receiver:
        victim = fleet_worker(start_server, store_url)
        hook = f"{receiver.url}/hook"
        # It ends while its worker is paused: the worker, resumed, must not record it.
        ending = victim.post_job(image=BUSYBOX, command="sleep 8; echo ended-on-victim", callback_url=hook).json()
        victim.wait_state(ending["id"], "running")
        claimed = victim.post_job(image=BUSYBOX, command=["cat", "hello.txt"], bundle_url=gate.url).json()
        assert gate.asked.wait(30) and victim.wait_state(claimed["id"], "building")
        survivor = fleet_worker(start_server, store_url)
        assert victim.process is not None

        victim.process.send_signal(signal.SIGSTOP)
        try:
            lost = survivor.wait_state(ending["id"], "failed", timeout_s=60)
            assert (lost["reason"], lost["worker_id"]) == ("worker_lost", victim.worker_id)
            gate.opened.set()
            ran = survivor.wait_state(claimed["id"], "succeeded", "failed", timeout_s=60)
            assert (ran["state"], ran["worker_id"]) == ("succeeded", survivor.worker_id)
            until("its job's container exited while it was paused", lambda: _exited(docker_client, ending["id"]))
        finally:
            victim.process.send_signal(signal.SIGCONT)

        back = until("the victim came back as a new generation", lambda: _generation(survivor, victim, 2))
        assert back["health"] == "alive" and back["reclaimed_at"] is None
        # Its jobs' containers (those its pools keep started for later jobs are not theirs).
        until("its jobs' containers removed", lambda: not containers_of(docker_client, victim.worker_id, pooled=False))
        log = victim.log_path.read_text()
        assert "lost its lease (reclaimed)" in log and '"event": "job_finish_refused"' in log
        after = survivor.client.get(f"/jobs/{ending['id']}").json()
        assert (after["state"], after["reason"], after["stdout"]) == ("failed", "worker_lost", "")
        assert ended_once(store_url, ending["id"]) == ("failed", victim.worker_id)
        assert ended_once(store_url, claimed["id"]) == ("succeeded", survivor.worker_id)

        delivered = receiver.wait_for(1)
        # The victim goes on: a job it takes now ends as usual, and its callback comes after the lost one's.
        again = victim.post_job(image=BUSYBOX, command=["echo", "again"], callback_url=hook, wait=True).json()
        assert (again["state"], again["stdout"]) == ("succeeded", "again\n")
        delivered = receiver.wait_for(2)
        assert [_body(item)["id"] for item in delivered] == [ending["id"], again["id"]], "the lost job's once"
        assert (_body(delivered[0])["state"], _body(delivered[0])["reason"]) == ("failed", "worker_lost")


def _exited(client: docker.DockerClient, job_id: str) -> bool:
    found = client.api.containers(all=True, filters={"label": f"{JOB_LABEL}={job_id}"})
    return bool(found) and all(item["State"] == "exited" for item in found)


def _generation(survivor: Server, victim: Server, generation: int) -> dict[str, Any] | None:
    entry = listed(survivor).get(victim.worker_id)
    return entry if entry is not None and entry["generation"] == generation else None


def _body(item: Delivery) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(item.body)
    return body
