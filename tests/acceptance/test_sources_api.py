"""Pulled work across a real `hatchway serve` process: kill -9 with items running and reports pending, then a
restart, still gives exactly one report per item; GET /sources shows the source."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from tests.acceptance.conftest import ServerFactory
from tests.fakes.tasks_master import TasksMaster, tasks_master

pytestmark = pytest.mark.docker


@pytest.fixture
def master() -> Iterator[TasksMaster]:
    with tasks_master() as fake:
        yield fake


def sources_setting(master: TasksMaster) -> str:
    source = {"name": "queue", "kind": "tasks", "url": master.url, "api_key": master.api_key, "poll_interval_s": 0.2}
    return json.dumps([source])


def test_kill_9_with_items_running_and_reports_pending_gives_one_report_each(
    start_server: ServerFactory, master: TasksMaster
) -> None:
    master.refuse_reports = True
    master.add("quick", "print('quick')")
    master.add("long", "import time; print('long', flush=True); time.sleep(6); print('end')")
    server = start_server(
        sources=sources_setting(master), max_concurrent_jobs=2, allowed_images="hatchway-test/*,hatchway-profile/*"
    )
    deadline = time.monotonic() + 60
    while not (master.claimed == 2 and master.report_attempts >= 1):  # quick ended, its report refused
        assert time.monotonic() < deadline, f"claimed {master.claimed}, report attempts {master.report_attempts}"
        time.sleep(0.1)
    pending = server.client.get("/sources").json()[0]
    assert (pending["name"], pending["claims"], pending["reports_sent"]) == ("queue", 2, 0)
    assert pending["reports_pending"] >= 1
    assert pending["polls"] >= 2 and pending["report_failures"] >= 1
    metrics = server.client.get("/metrics").text
    assert 'hatchway_source_claims_total{source="queue"} 2.0' in metrics
    assert 'hatchway_source_reports_pending{source="queue"}' in metrics
    server.kill9()

    master.refuse_reports = False
    server.start()
    reports = master.wait_reports(2)
    time.sleep(1.5)
    assert sorted(eval_id for eval_id, _, _ in master.reports) == ["long", "quick"], master.reports
    got = master.by_id()
    assert got["quick"][0] == "complete" and got["quick"][1]["output"] == "quick\n"
    assert got["long"][0] == "complete" and got["long"][1]["output"] == "long\nend\n", "taken up after the restart"
    assert master.claimed == 2, "nothing was claimed twice"
    assert len(reports) == 2
    listed = server.client.get("/jobs", params={"label": "source:queue"}).json()["jobs"]
    assert sorted(job["external_id"] for job in listed) == ["long", "quick"]
    assert all(job["reported_at"] is not None for job in listed)
