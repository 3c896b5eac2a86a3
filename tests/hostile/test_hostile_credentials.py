"""A job source's API key is its own: it goes with the requests its own items make to its master, and with nobody
else's. A client naming a URL on the master's origin (`bundle_url`, `problem_url`) must not have it sent with the
key: the judge master's archives hold hidden tests and other contestants' submissions, and the queue's
`/tasks/next` hands out (and so takes away) a task. Nor may a client get an archive the source fetched with its key
by naming its sha256 with a URL of its own: the worker must fetch the client's URL, not hand over the cached copy.

The loopback the fake masters listen on is allowed here (`allowed_private_networks`), so that the client's
requests do reach the masters and the tests see what they carry."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.acceptance.conftest import ServerFactory, all_reported
from tests.conftest import BUSYBOX
from tests.fakes.judge_master import JudgeMaster, judge_master
from tests.fakes.site import site
from tests.fakes.tasks_master import TasksMaster, tasks_master

pytestmark = pytest.mark.docker

IMAGES = "hatchway-test/*,hatchway-profile/*"


@pytest.fixture
def queue() -> Iterator[TasksMaster]:
    with tasks_master() as fake:
        yield fake


@pytest.fixture
def judge() -> Iterator[JudgeMaster]:
    with judge_master(archives_need_key=True) as fake:
        yield fake


def source(master: Any, kind: str, **fields: Any) -> str:
    return json.dumps([{"name": "m", "kind": kind, "url": master.url, "api_key": master.api_key, **fields}])


def test_a_client_s_url_on_a_queue_s_origin_gets_no_key_and_takes_no_task(
    start_server: ServerFactory, queue: TasksMaster
) -> None:
    # A queue that guards its claims with the key (the real one hands out tasks to anyone who asks: there a client
    # takes a task with or without the worker). The source asks for work every 10 s: the client's requests come
    # between two of its polls.
    queue.claims_need_key = True
    server = start_server(sources=source(queue, "tasks", poll_interval_s=10), allowed_images=IMAGES)
    first_poll = time.monotonic()
    while not queue.polls:
        assert time.monotonic() - first_poll < 30, "the source never asked for work"
        time.sleep(0.05)
    queue.add("t1", "print('the first task')")
    queue.add("t2", "print('the second task')")
    claim = f"{queue.url}/tasks/next"
    graded = server.client.post("/grade", json={"language": "python", "code": "print(1)", "problem_url": claim})
    job = server.post_job(wait=True, image=BUSYBOX, command="true", bundle_url=claim).json()
    assert queue.unkeyed == ["/tasks/next", "/tasks/next"], "both reached the master, without its key"
    assert graded.status_code == 422 and "could not be fetched" in graded.json()["error"]["message"], graded.text
    assert (job["state"], job["reason"]) == ("failed", "bad_bundle") and "could not be fetched" in job["message"]
    reports = queue.wait_reports(2)
    assert {(eval_id, verb) for eval_id, verb, _ in reports} == {("t1", "complete"), ("t2", "complete")}
    assert queue.by_id()["t1"][1]["output"]["output"] == "the first task\n", "the source ran the tasks it claimed"
    assert server.stop() == 0


def test_a_client_gets_neither_a_judge_s_archives_nor_what_the_source_fetched_with_its_key(
    start_server: ServerFactory, judge: JudgeMaster
) -> None:
    judge.add("s1", "python", {"main.py": "print(int(input()) * 2)\n"}, {"1": ("21\n", "42\n")})
    server = start_server(sources=source(judge, "submissions", poll_interval_s=0.2), allowed_images=IMAGES)
    result = judge.wait_results(1)["s1"]
    assert (result["points"], result["info"]) == (1, "AC"), "the source's own items get its key"
    all_reported(server, "m")
    hidden = f"{judge.url}/archives/task-s1.zip"
    with judge.lock:
        sha = hashlib.sha256(judge.archives["task-s1"]).hexdigest()
        judge.downloads.clear()
    # The master's archive by its URL: fetched without the key, so refused by the master.
    job = server.post_job(wait=True, image=BUSYBOX, command="cat 1.out", bundle_url=hidden).json()
    assert (job["state"], job["reason"]) == ("failed", "bad_bundle") and "42" not in (job["stdout"] or "")
    with judge.lock:
        assert judge.downloads == [("/archives/task-s1.zip", False)], "asked for without the key"
    # The same archive by its hash, with a URL of the client's own: the client's URL is fetched, and has nothing.
    with site({}) as own:
        nothing = f"{own.url}/nothing.zip"
        job = server.post_job(
            wait=True, image=BUSYBOX, command="cat 1.out", bundle_url=nothing, bundle_sha256=sha
        ).json()
        assert (job["state"], job["reason"]) == ("failed", "bad_bundle") and "42" not in (job["stdout"] or "")
        graded = server.client.post(
            "/grade",
            json={"language": "python", "code": "print(42)", "problem_url": nothing, "problem_sha256": sha},
        )
        assert graded.status_code == 422 and "could not be fetched" in graded.json()["error"]["message"], graded.text
        assert own.requests() == [("GET", "/nothing.zip")] * 2, "the client's own URL was fetched both times"
    assert server.stop() == 0
