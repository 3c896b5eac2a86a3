"""Pulled submissions from a double of the submission judge's master across a real `hatchway serve` process: kill -9
with gradings running and results pending, then a restart, still gives exactly one result per submission, each
accepted (204) the first time it reaches the master; GET /sources and GET /jobs show them."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from hatchway.jobs.service import source_job_id
from tests.acceptance.conftest import ServerFactory, all_reported
from tests.fakes.judge_master import JudgeMaster, judge_master

pytestmark = pytest.mark.docker


@pytest.fixture
def master() -> Iterator[JudgeMaster]:
    with judge_master() as fake:
        yield fake


def sources_setting(master: JudgeMaster) -> str:
    source = {
        "name": "judge",
        "kind": "submissions",
        "url": master.url,
        "api_key": master.api_key,
        "poll_interval_s": 0.2,
    }
    return json.dumps([source])


def test_kill_9_with_gradings_running_and_results_pending_gives_one_result_each(
    start_server: ServerFactory, master: JudgeMaster
) -> None:
    master.refuse_reports = True
    master.add("quick", "python", {"main.py": "print(int(input()) * 2)\n"}, {"1": ("21\n", "42\n")})
    slow = "import time\ntime.sleep(4)\nprint(input())\n"  # sleeps in wall time, well inside the wall limit
    master.add("slow", "python", {"main.py": slow}, {"1": ("x\n", "x\n")})
    server = start_server(
        sources=sources_setting(master), max_concurrent_jobs=2, allowed_images="hatchway-test/*,hatchway-profile/*"
    )
    deadline = time.monotonic() + 90
    while not (master.claimed == 2 and master.report_attempts >= 1):  # quick graded, its result refused
        assert time.monotonic() < deadline, f"claimed {master.claimed}, report attempts {master.report_attempts}"
        time.sleep(0.1)
    server.wait_state(source_job_id("judge", "slow"), "running")
    listed = server.client.get("/sources").json()
    assert [source["name"] for source in listed] == ["api", "judge"]
    pending = listed[1]
    assert (pending["name"], pending["kind"], pending["claims"], pending["reports_sent"]) == (
        "judge",
        "submissions",
        2,
        0,
    )
    assert pending["reports_pending"] >= 1
    server.kill9()

    master.refuse_reports = False
    server.start()
    got = master.wait_results(2)
    listed = all_reported(server, "judge")
    assert server.stop() == 0  # drained: it sends nothing more, so every report it would send is in
    assert master.reported_ids() == ["quick", "slow"], master.results
    assert (got["quick"]["points"], got["quick"]["info"]) == (1, "AC")
    assert (got["slow"]["points"], got["slow"]["info"]) == (1, "AC"), "graded again from scratch after the restart"
    assert master.claimed == 2, "nothing was claimed twice"
    assert master.answers == [(sid, 204) for sid, _ in master.results], "no result the master refused"
    assert sorted(job["external_id"] for job in listed) == ["quick", "slow"]
