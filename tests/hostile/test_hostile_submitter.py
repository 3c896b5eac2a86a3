"""A submitter who takes the id a job source will give its next item would make that item collide with their job,
so the master's real item is never run nor reported. Ids in a source's namespace are that source's alone."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from hatchway.jobs.service import source_job_id
from tests.acceptance.conftest import ServerFactory
from tests.fakes.tasks_master import TasksMaster, tasks_master

pytestmark = pytest.mark.docker


@pytest.fixture
def master() -> Iterator[TasksMaster]:
    with tasks_master() as fake:
        yield fake


def test_a_submitter_cannot_squat_the_id_of_a_source_s_next_item(
    start_server: ServerFactory, master: TasksMaster
) -> None:
    source = {"name": "queue", "kind": "tasks", "url": master.url, "api_key": master.api_key, "poll_interval_s": 0.1}
    server = start_server(sources=json.dumps([source]), allowed_images="hatchway-test/*,hatchway-profile/*")
    squatted = source_job_id("queue", "next")
    for kind, path, body in (
        ("job", "/jobs", {"id": squatted, "image": "hatchway-test/busybox", "command": "echo squatter"}),
        ("grading", "/grade", {"id": squatted, "language": "python", "code": "print(1)", "tests": [{}]}),
        ("job", "/jobs", {"id": "queue.anything", "image": "hatchway-test/busybox", "command": "true"}),
    ):
        refused = server.client.post(path, json=body)
        assert refused.status_code == 422, (kind, refused.text)
        assert "namespace of a job source" in refused.json()["error"]["message"]
    assert (
        server.post_job(id="queue-like-but-not-its", image="hatchway-test/busybox", command="true").status_code == 201
    )
    master.add("next", "print('the real item')")
    reports = master.wait_reports(1)
    assert reports == [("next", "complete", reports[0][2])] and reports[0][2]["output"]["output"] == "the real item\n"
    assert server.client.get(f"/jobs/{squatted}").json()["origin"] == "queue"
    assert server.stop() == 0
