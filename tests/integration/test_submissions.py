"""Pulled submissions (`kind: submissions`) end to end against a fake judge's master on 127.0.0.1 and the real
Docker engine: verdicts, items that cannot be graded, and faults of the master."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from hatchway.errors import FetchFailed
from hatchway.store.base import JobQuery
from tests.conftest import until
from tests.fakes.judge_master import JudgeMaster, judge_master
from tests.integration.conftest import source_starter

pytestmark = pytest.mark.docker

SUM_C = """#include <stdio.h>
int main(void) { long a, b; if (scanf("%ld %ld", &a, &b) != 2) return 1; printf("%ld\\n", a + b); return 0; }
"""
TESTS = {"1": ("1 2\n", "3\n"), "2": ("40 2\n", "42\n")}


@pytest.fixture
def master() -> Iterator[JudgeMaster]:
    with judge_master() as fake:
        yield fake


@pytest.fixture
async def start(tmp_path: Path, worker_id: str, master: JudgeMaster) -> AsyncIterator[Any]:
    source = {"name": "judge", "kind": "submissions", "url": master.url, "api_key": master.api_key}
    start, started = source_starter(tmp_path, worker_id, source)
    yield start
    for worker in started:
        await worker.shutdown()


async def results(master: JudgeMaster, count: int) -> dict[str, dict[str, Any]]:
    return await asyncio.to_thread(master.wait_results, count)


async def test_submissions_are_graded_and_each_gets_one_report(master: JudgeMaster, start: Any) -> None:
    master.garbage = 1  # bad JSON first: nothing to report to, noted, and the worker goes on
    master.add(1, "c", {"main.c": SUM_C}, TESTS)
    master.add("wa", "python3", {"main.py": "print(0)\n"}, TESTS)
    master.add("ce", "gcc", {"main.c": "int main(void) { return oops; }\n"}, TESTS)
    master.add("re", "py", {"sol.py": "import sys\nraise SystemExit(3)\n"}, TESTS, mainfile="src/sol.py")
    master.add("cobol", "cobol", {"main.cob": "DISPLAY 'HI'."}, TESTS)
    master.put({"id": "no-task", "submissions_url": master.archive("x", {"src/main.py": "print(1)"}), "lang": "py"})
    master.put({"lang": "py", "task_url": "http://nowhere.invalid/"})  # no id: cannot be reported
    traversal = master.archive("evil", {"src/main.py": "print(1)\n", "src/../../../evil.py": "print(2)\n"})
    master.add("traversal", "py", {"main.py": "print(3)\n"}, TESTS, submissions_url=traversal)
    worker = await start(source={"poll_interval_s": 0.2})
    got = await results(master, 7)

    ac = got["1"]
    assert (ac["points"], ac["info"]) == (100, "AC"), ac
    assert [(t["test_name"], t["grade"], t["ret_code"], t["info"]) for t in ac["test_results"]] == [
        ("1", True, 0, "AC"),
        ("2", True, 0, "AC"),
    ]
    assert all(t["time"] >= 0 and t["memory"] > 0 for t in ac["test_results"]), "CPU seconds and KiB measured"
    assert (got["wa"]["points"], got["wa"]["info"]) == (0, "WA")
    assert [t["grade"] for t in got["wa"]["test_results"]] == [False, False]
    assert got["ce"]["points"] == 0 and got["ce"]["info"].startswith("CE\n") and "oops" in got["ce"]["info"]
    assert [(t["test_name"], t["grade"]) for t in got["ce"]["test_results"]] == [("1", False), ("2", False)]
    assert got["re"]["info"] == "RE" and [t["ret_code"] for t in got["re"]["test_results"]] == [3, 3]
    for refused, says in [
        ("cobol", "unknown language 'cobol'; this worker knows: c, c++, cpp"),
        ("no-task", "no task_url"),
        ("traversal", "submissions_url"),
    ]:
        assert got[refused]["points"] == 0 and got[refused]["test_results"] == [], got[refused]
        assert got[refused]["info"].startswith("IE\n") and says in got[refused]["info"], got[refused]
    assert "outside" in got["traversal"]["info"] or ".." in got["traversal"]["info"], got["traversal"]

    await worker.drain()  # after which it sends nothing more: every report it would ever send is in
    assert len(master.results) == 7, "exactly one report per item"
    status = worker.sources[0].status()
    assert (status.kind, status.claims, status.reports_sent, status.reports_pending) == ("submissions", 7, 7, 0)
    assert status.errors >= 2, "the bad JSON and the item without an id were counted"
    jobs = (await worker.jobs.find(JobQuery(labels={"source": "judge"}))).jobs
    assert {job.external_id for job in jobs} == {"1", "wa", "ce", "re", "cobol", "no-task", "traversal"}
    assert all(job.reported_at is not None and job.origin == "judge" for job in jobs)
    graded = {job.external_id for job in jobs if job.spec.kind == "grade"}
    assert graded == {"1", "wa", "ce", "re"}, "pulled work is an ordinary grade, listed with its labels"


async def test_a_master_failing_every_third_request_still_gets_one_report_each(master: JudgeMaster, start: Any) -> None:
    master.fail_every = 3
    for i in range(5):
        master.add(f"s{i}", "python", {"main.py": f"input()\nprint({i})\n"}, {"1": ("x\n", f"{i}\n")})
    worker = await start(source={"poll_interval_s": 0.2})
    got = await results(master, 5)
    assert {sid: (body["points"], body["info"]) for sid, body in got.items()} == {
        f"s{i}": (100, "AC") for i in range(5)
    }
    await worker.drain()  # after which it sends nothing more
    assert master.reported_ids() == [f"s{i}" for i in range(5)], "exactly one report per item"


async def test_an_archive_download_that_fails_for_a_while_is_tried_again_and_one_refused_is_not(
    master: JudgeMaster, start: Any
) -> None:
    master.downloads_failing = 2  # 503 twice: a master having a bad moment, not a bad submission
    master.add("retried", "python", {"main.py": "print(1)\n"}, {"1": ("", "1\n")})
    worker = await start(source={"poll_interval_s": 0.2})
    got = await results(master, 1)
    assert (got["retried"]["points"], got["retried"]["info"]) == (100, "AC"), got
    assert worker.sources[0].status().errors == 2, "each failed try is counted"
    master.downloads_refused = 1  # 403: trying again would not help
    master.add("refused", "python", {"main.py": "print(1)\n"}, {"1": ("", "1\n")})
    got = await results(master, 2)
    # The master is told what anyone is told of a fetch that failed; the worker's log says it was a 403.
    assert got["refused"]["info"] == f"IE\nsubmissions_url: {FetchFailed.MESSAGE}"
    assert worker.sources[0].status().errors == 2


async def test_archives_the_master_serves_only_with_its_key_are_fetched_with_it(
    master: JudgeMaster, start: Any
) -> None:
    master.archives_need_key = True
    master.add("keyed", "python", {"main.py": "print(1)\n"}, {"1": ("", "1\n")})
    await start(source={"poll_interval_s": 0.2})
    got = await results(master, 1)
    assert (got["keyed"]["points"], got["keyed"]["info"]) == (100, "AC"), got


async def test_a_wrong_api_key_is_retried_with_a_backoff_and_said_clearly(
    master: JudgeMaster, start: Any, caplog: pytest.LogCaptureFixture
) -> None:
    master.add("s", "python", {"main.py": "print(1)\n"}, {"1": ("", "1\n")})
    worker = await start(source={"api_key": "wrong-key-of-the-test"})
    # The first request is refused at once; the next comes only after the backoff (5 s).
    await until(lambda: worker.sources[0].status().errors > 0, "the master's refusal was never seen")
    status = worker.sources[0].status()
    assert status.errors == 1, "no second request before the backoff"
    assert status.backoff_s == 5 and status.last_error is not None and "api_key" in status.last_error
    assert "refused the API key (401)" in caplog.text and "wrong-key-of-the-test" not in caplog.text
    assert master.claimed == 0 and master.submissions, "nothing was taken"
