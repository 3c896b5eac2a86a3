"""A master that answers a claim with anything at all costs the worker that one answer, never the worker: deep
JSON, numbers past what Python converts, ids too long to be reported, bodies over the size cap. Before, the first
of these stopped the whole worker 40 ms after it started (`loop_died`), and again after every restart."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from hatchway.sources.pulled import MAX_ANSWER_BYTES
from tests.acceptance.conftest import ServerFactory
from tests.fakes.tasks_master import TasksMaster, tasks_master

pytestmark = pytest.mark.docker

HOSTILE_ANSWERS = {
    "deep JSON": b"[" * 100_000 + b"]" * 100_000,
    "a 5000-digit id": b'{"eval_id": ' + b"7" * 5000 + b', "code": "print(1)"}',
    "a 100 000-character id": json.dumps({"eval_id": "x" * 100_000, "code": "print(1)"}).encode(),
    "an id with a control character": json.dumps({"eval_id": "a\nb", "code": "print(1)"}).encode(),
    "a body over the cap": b'{"eval_id": "big", "code": "' + b"#" * MAX_ANSWER_BYTES + b'"}',
}


@pytest.fixture
def master() -> Iterator[TasksMaster]:
    with tasks_master() as fake:
        yield fake


def test_a_master_s_hostile_answers_cost_one_item_each_and_the_worker_goes_on(
    start_server: ServerFactory, master: TasksMaster
) -> None:
    master.hostile = list(HOSTILE_ANSWERS.values())
    master.add("after", "print('still here')")
    source = {"name": "queue", "kind": "tasks", "url": master.url, "api_key": master.api_key, "poll_interval_s": 0.1}
    server = start_server(sources=json.dumps([source]), allowed_images="hatchway-test/*,hatchway-profile/*")
    reports = master.wait_reports(1)
    assert reports == [("after", "complete", reports[0][2])], "only the real task was taken, and it ran"
    assert reports[0][2]["output"]["output"] == "still here\n"
    assert master.hostile == [], "every hostile answer was read"
    assert server.process is not None and server.process.poll() is None, "the worker is still up"
    queue = next(item for item in server.client.get("/sources").json() if item["name"] == "queue")
    assert queue["claims"] == 1, "no hostile answer became a job"
    assert queue["errors"] >= len(HOSTILE_ANSWERS), queue
    log = server.log_path.read_text()
    assert log.count('"event": "source_bad_item"') + log.count('"event":"source_bad_item"') >= 4, log[-3000:]
    assert "loop_died" not in log
    assert server.stop() == 0
