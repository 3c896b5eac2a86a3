"""Job sources across a real `hatchway serve` process: the HTTP API is one, answering until the drain is over;
kill -9 with pulled items running and reports pending, then a restart, still gives exactly one report per item;
GET /sources shows every source."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.acceptance.conftest import Server, ServerFactory, all_reported
from tests.conftest import BUSYBOX
from tests.fakes.tasks_master import TasksMaster, tasks_master

pytestmark = pytest.mark.docker


@pytest.fixture
def master() -> Iterator[TasksMaster]:
    with tasks_master() as fake:
        yield fake


def sources_setting(master: TasksMaster) -> str:
    source = {"name": "queue", "kind": "tasks", "url": master.url, "api_key": master.api_key, "poll_interval_s": 0.2}
    return json.dumps([source])


def sources(server: Server) -> dict[str, dict[str, Any]]:
    listed = server.client.get("/sources").json()
    assert listed[0]["name"] == "api", "the HTTP API comes first"
    return {source["name"]: source for source in listed}


def test_the_http_api_is_a_source_that_counts_its_jobs_and_answers_until_the_drain_is_over(
    start_server: ServerFactory,
) -> None:
    server = start_server(shutdown_grace_s=2, kill_grace_s=1)
    assert sources(server)["api"] == {
        "name": "api",
        "kind": "http",
        "url": server.url,
        "pushes": True,
        "last_poll_at": None,
        "polls": 0,
        "claims": 0,
        "reports_sent": 0,
        "report_failures": 0,
        "reports_pending": 0,
        "errors": 0,
        "backoff_s": 0.0,
        "last_error": None,
        "events": None,
    }
    sleeper = {"id": "api-source-sleeper", "image": BUSYBOX, "command": ["sleep", "60"]}
    assert server.post_job(**sleeper).status_code == 201
    with ThreadPoolExecutor(1) as pool, httpx.Client(base_url=server.url, timeout=60) as waiting:
        # A client that sends the same job again and waits for its end, which comes with the drain.
        answer = pool.submit(waiting.post, "/jobs", json=sleeper, params={"wait": "true"})
        server.wait_state(sleeper["id"], "running")
        assert server.post_job(**sleeper).status_code == 200
        assert server.post_job(image=BUSYBOX).status_code == 422
        assert sources(server)["api"]["claims"] == 1, "a new job counts; the same one again or a refused one does not"
        assert [source["name"] for source in server.client.get("/health").json()["sources"]] == ["api"]
        assert 'hatchway_source_claims_total{source="api"} 1.0' in server.client.get("/metrics").text

        assert server.process is not None
        server.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while server.client.get("/health").status_code != 503:  # draining, and still answering new requests
            assert time.monotonic() < deadline, "the worker did not begin to drain"
            time.sleep(0.05)
        ended = answer.result(timeout=30)
    assert ended.status_code == 200, ended.text
    assert (ended.json()["state"], ended.json()["reason"]) == ("killed", "shutdown"), ended.text
    assert server.process.wait(timeout=30) == 0


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
    pending = sources(server)["queue"]
    assert (pending["kind"], pending["pushes"], pending["claims"], pending["reports_sent"]) == ("tasks", False, 2, 0)
    assert pending["reports_pending"] >= 1
    assert pending["polls"] >= 2 and pending["report_failures"] >= 1
    metrics = server.client.get("/metrics").text
    assert 'hatchway_source_claims_total{source="queue"} 2.0' in metrics
    assert 'hatchway_source_reports_pending{source="queue"}' in metrics
    server.kill9()

    master.refuse_reports = False
    server.start()
    reports = master.wait_reports(2)
    listed = all_reported(server, "queue")
    assert server.stop() == 0  # drained: it sends nothing more, so every report it would send is in
    assert sorted(eval_id for eval_id, _, _ in master.reports) == ["long", "quick"], master.reports
    got = master.by_id()
    assert got["quick"][0] == "complete" and got["quick"][1]["output"]["output"] == "quick\n"
    assert got["long"][0] == "complete" and got["long"][1]["output"]["output"] == "long\nend\n", (
        "taken up after the restart"
    )
    assert master.claimed == 2, "nothing was claimed twice"
    assert len(reports) == 2
    assert sorted(job["external_id"] for job in listed) == ["long", "quick"]
