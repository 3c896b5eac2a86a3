"""A real `hatchway serve` as the queue-pull platform's worker: the double of its queue service, its event bus (the
real Redis, a real subscriber), `kill -9` in the middle of a task and a restart, and its /health as the
platform's worker answered it."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.acceptance.conftest import ServerFactory, all_reported
from tests.fakes.tasks_master import TasksMaster, tasks_master
from tests.redis_bus import REDIS_URL, kinds, subscribed

pytestmark = pytest.mark.docker


@pytest.fixture
def master() -> Iterator[TasksMaster]:
    with tasks_master() as fake:
        yield fake


def test_kill_9_in_the_middle_of_a_task_gives_one_report_and_one_end_on_the_bus(
    start_server: ServerFactory, master: TasksMaster
) -> None:
    master.add("long", "import time\nprint('start', flush=True)\ntime.sleep(4)\nprint('end')", timeout=60)
    source = {
        "name": "queue",
        "kind": "tasks",
        "url": master.url,
        "api_key": master.api_key,
        "poll_interval_s": 0.2,
        "redis_url": REDIS_URL,
    }
    with subscribed() as bus:
        server = start_server(sources=json.dumps([source]), allowed_images="hatchway-test/*,hatchway-profile/*")
        health = server.client.get("/health").json()
        assert (health["status"], health["worker_id"], health["queue_url"]) == ("ok", server.worker_id, master.url)
        assert {"name": "docker", "available": True} in health["engines"]
        bus.wait(lambda got: ("evaluation:long:logs", "start") in [(c, d.get("content")) for c, d in got], "'start'")
        server.kill9()  # the task's program is still running: it sleeps 4 s after its first line

        server.start()
        reports = master.wait_reports(1)
        messages = bus.wait_end("long")
        all_reported(server, "queue")
        assert server.stop() == 0  # drained: it sends nothing more, so every report and event it would send is out
    assert reports == [("long", "complete", reports[0][2])], reports
    said = reports[0][2]["output"]
    assert (said["status"], said["output"], said["exit_code"]) == ("completed", "start\nend\n", 0)
    assert master.unknown_reports == [] and master.claimed == 1, "one report, nothing claimed or reported twice"
    # Its start and first line before the kill; its end (the whole output, then how it ended) once, after it.
    assert kinds(messages) == ["evaluation:running", "logs", "logs-final", "evaluation:completed"], messages
    assert messages[2][1]["content"] == "start\nend\n" and messages[3][1]["status"] == "completed"
    assert messages[3][1]["executor_id"] == server.worker_id
