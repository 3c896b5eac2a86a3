"""Pulled submissions (`kind: submissions`) end to end against a double of the submission judge's master (Stos) on
127.0.0.1 and the real Docker engine: the master's archives (flat, over file:// as deployed, or http), its
problem_specification's per-test limits, the result in its worker's shape, and faults of the master."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from hatchway.errors import FetchFailed
from hatchway.sources.submissions import INFO_CHARS
from hatchway.store.base import JobQuery
from tests.conftest import until
from tests.fakes.judge_master import MIB, JudgeMaster, Status, judge_master, specified
from tests.integration.conftest import source_starter

pytestmark = pytest.mark.docker

SUM_C = """#include <stdio.h>
int main(void) { long a, b; if (scanf("%ld %ld", &a, &b) != 2) return 1; printf("%ld\\n", a + b); return 0; }
"""
TESTS = {"1": ("1 2\n", "3\n"), "10": ("40 2\n", "42\n"), "2": ("2 2\n", "4\n")}
SPIN_PY = "if input() == 'spin':\n    while True:\n        pass\nprint('ok')\n"
LIMITS_C = """#include <stdio.h>
#include <stdlib.h>
#include <string.h>
/* "mem" touches 96 MB; "deep" recurses through about 4 MB of stack, inside the default 8 MB, not inside 1 MB. */
static int deep(int n) { volatile char pad[1024]; pad[0] = (char)n; return n ? deep(n - 1) + pad[0] : 0; }
int main(void) {
    char mode[8];
    if (scanf("%7s", mode) != 1) return 1;
    if (strcmp(mode, "mem") == 0) {
        volatile char *p = malloc(96 << 20);
        if (!p) return 2;
        for (long i = 0; i < (96L << 20); i += 4096) p[i] = 1;
    }
    else deep(4000);
    puts("ok");
    return 0;
}
"""


@pytest.fixture
def master(tmp_path: Path) -> Iterator[JudgeMaster]:
    shared = tmp_path / "shared"  # the master's shared volume: archives handed out as file:// URLs
    shared.mkdir()
    with judge_master(shared_dir=shared) as fake:
        yield fake


@pytest.fixture
async def start(tmp_path: Path, worker_id: str, master: JudgeMaster) -> AsyncIterator[Any]:
    source = {"name": "judge", "kind": "submissions", "url": master.url, "api_key": master.api_key}
    start, started = source_starter(tmp_path, worker_id, source)

    async def starting(**overrides: Any) -> Any:
        # As the operator of the real deployment allows its shared volume.
        overrides.setdefault("bundle_allowed_urls", [f"{(tmp_path / 'shared').as_uri()}/*", "http://127.0.0.1*"])
        return await start(**overrides)

    yield starting
    for worker in started:
        await worker.shutdown()


async def results(master: JudgeMaster, count: int) -> dict[str, dict[str, Any]]:
    return await asyncio.to_thread(master.wait_results, count)


def shown(result: dict[str, Any]) -> list[tuple[str, bool, int]]:
    return [(t["test_name"], t["grade"], t["ret_code"]) for t in result["test_results"]]


async def test_the_four_submissions_are_graded_and_reported_as_the_master_s_worker_reports(
    master: JudgeMaster, start: Any
) -> None:
    errors = "".join(f"int f{i}(void) {{ return undefined_{i}; }}\n" for i in range(400))
    master.add("c-ac", "c", {"main.c": SUM_C}, TESTS)
    master.add("py-wa", "python", {"main.py": "print(0)\n"}, TESTS)
    spin = {"1": ("quick\n", "ok\n"), "2": ("spin\n", "ok\n")}
    master.add("py-tle", "python", {"main.py": SPIN_PY}, spin, specification=[specified("2", time_limit=0.5)])
    master.add("cpp-ce", "c++", {"main.cpp": errors + "int main() { return 0; }\n"}, TESTS)
    worker = await start(source={"poll_interval_s": 0.2})
    got = await results(master, 4)

    ac = got["c-ac"]
    assert (ac["points"], ac["info"]) == (3, "AC"), ac
    assert shown(ac) == [("1", True, 0), ("2", True, 0), ("10", True, 0)], "natural order, as the worker sorts"
    assert all(t["info"] == "AC" and t["time"] >= 0 and t["memory"] > 0 for t in ac["test_results"]), ac
    wa = got["py-wa"]
    assert (wa["points"], wa["info"], [t["grade"] for t in wa["test_results"]]) == (0, "WA", [False] * 3), wa
    tle = got["py-tle"]
    assert (tle["points"], tle["info"]) == (1, "TLE"), tle
    quick, spun = tle["test_results"]
    assert (quick["grade"], spun["grade"], spun["info"][:3]) == (True, False, "TLE"), tle
    assert 0.5 <= spun["time"] < 2, "stopped at the problem's own 0.5 s, not the source's 2 s"
    ce = got["cpp-ce"]
    assert ce["points"] == 0 and "undefined_0" in ce["info"], ce
    assert len(ce["info"]) == INFO_CHARS + 3 and ce["info"].endswith("..."), "capped as the master's worker caps it"
    assert [(t["test_name"], t["grade"]) for t in ce["test_results"]] == [("1", False), ("2", False), ("10", False)]

    await worker.drain()  # after which it sends nothing more: every report it would ever send is in
    assert master.answers == [(sid, 204) for sid, _ in master.results], "each accepted at once, none refused"
    assert master.pending() == [] and master.claimed == 4
    status = worker.sources[0].status()
    assert (status.kind, status.claims, status.reports_sent, status.reports_pending) == ("submissions", 4, 4, 0)


async def test_per_test_limits_apply_to_the_tests_named_and_the_others_take_the_source_s(
    master: JudgeMaster, start: Any
) -> None:
    tests = {"1": ("mem\n", "ok\n"), "2": ("mem\n", "ok\n"), "3": ("deep\n", "ok\n"), "10": ("deep\n", "ok\n")}
    limits = [specified("1", total_memory_limit=32 * MIB), specified("3", stack_size_limit=1 * MIB)]
    master.add("limits", "c", {"main.c": LIMITS_C}, tests, specification=limits)
    await start(source={"poll_interval_s": 0.2, "grade_limits": {"memory_mb": 256}})
    got = (await results(master, 1))["limits"]
    verdicts = [(t["test_name"], t["info"].split(":")[0]) for t in got["test_results"]]
    assert verdicts == [("1", "MLE"), ("2", "AC"), ("3", "RE"), ("10", "AC")], got
    assert got["points"] == 2
    assert got["test_results"][2]["ret_code"] == -11, "the 1 MiB stack overflowed: SIGSEGV, as Python reports it"


async def test_hatchway_s_layout_a_null_mainfile_and_items_that_cannot_be_graded(
    master: JudgeMaster, start: Any
) -> None:
    two = {"b.py": "def answer():\n    return 42\n", "a.py": "import b\ninput()\nprint(b.answer())\n"}
    master.add("folders", "python", two, {"1": ("x\n", "42\n")}, mainfile="a.py", folders=True)
    master.add("no-main", "python", two, {"1": ("x\n", "42\n")}, mainfile=None)  # the first file: a.py
    master.add("cobol", "cobol", {"main.cob": "DISPLAY 'HI'."}, TESTS)
    master.put({"id": "no-task", "submission_url": master.archive("x", {"main.py": "print(1)"}), "lang": "py"})
    worker = await start(source={"poll_interval_s": 0.2})
    got = await results(master, 4)
    assert {sid: (got[sid]["points"], got[sid]["info"]) for sid in ("folders", "no-main")} == {
        "folders": (1, "AC"),
        "no-main": (1, "AC"),
    }, got
    for refused, says in [("cobol", "unknown language 'cobol'"), ("no-task", "task_url: Field required")]:
        assert got[refused]["points"] == 0 and got[refused]["test_results"] == [], got[refused]
        assert got[refused]["info"].startswith("IE\n") and says in got[refused]["info"], got[refused]
    jobs = (await worker.jobs.find(JobQuery(labels={"source": "judge"}))).jobs
    assert {job.external_id for job in jobs if job.spec.kind == "grade"} == {"folders", "no-main"}


async def test_a_master_failing_every_fourth_request_still_gets_one_result_each(
    tmp_path: Path, worker_id: str, quick_backoff: float
) -> None:
    # Archives over http from the failing master too: a grading must not fetch again what its claim checked.
    with judge_master(fail_every=4, fail_downloads_every=4) as master:
        source = {"name": "judge", "kind": "submissions", "url": master.url, "api_key": master.api_key}
        start, started = source_starter(tmp_path, worker_id, source)
        try:
            for i in range(6):
                master.add(f"s{i}", "python", {"main.py": f"input()\nprint({i})\n"}, {"1": ("x\n", f"{i}\n")})
            worker = await start(source={"poll_interval_s": 0.2})
            got = await results(master, 6)
            assert {sid: (body["points"], body["info"]) for sid, body in got.items()} == {
                f"s{i}": (1, "AC") for i in range(6)
            }
            await worker.drain()  # after which it sends nothing more
            assert master.reported_ids() == [f"s{i}" for i in range(6)], "exactly one result per submission"
            assert master.answers == [(sid, 204) for sid, _ in master.results], "no result the master refused"
        finally:
            for started_worker in started:
                await started_worker.shutdown()


async def test_an_archive_download_that_fails_for_a_while_is_tried_again_and_one_refused_is_not(
    tmp_path: Path, worker_id: str
) -> None:
    with judge_master() as master:
        source = {"name": "judge", "kind": "submissions", "url": master.url, "api_key": master.api_key}
        start, started = source_starter(tmp_path, worker_id, source)
        try:
            master.downloads_failing = 2  # 503 twice: a master having a bad moment, not a bad submission
            master.add("retried", "python", {"main.py": "print(1)\n"}, {"1": ("", "1\n")})
            worker = await start(source={"poll_interval_s": 0.2})
            got = await results(master, 1)
            assert (got["retried"]["points"], got["retried"]["info"]) == (1, "AC"), got
            assert worker.sources[0].status().errors == 2, "each failed try is counted"
            master.downloads_refused = 1  # 403: trying again would not help
            master.add("refused", "python", {"main.py": "print(1)\n"}, {"1": ("", "1\n")})
            got = await results(master, 2)
            assert got["refused"]["info"] == f"IE\nsubmission_url: {FetchFailed.MESSAGE}"
        finally:
            for started_worker in started:
                await started_worker.shutdown()


async def test_a_result_the_master_no_longer_wants_is_dropped_not_sent_again(master: JudgeMaster, start: Any) -> None:
    master.add("taken-back", "python", {"main.py": "print(1)\n"}, {"1": ("", "1\n")})
    master.refuse_reports = True
    worker = await start(source={"poll_interval_s": 0.2})
    await asyncio.to_thread(master.wait_claimed, 1)
    await until(lambda: master.report_attempts >= 1, "the result was never sent")
    with master.lock:
        master.status["taken-back"] = Status.COMPLETED  # meanwhile another worker's result was taken
    master.refuse_reports = False
    await until(lambda: master.answers != [], "the result was never sent again")
    await worker.drain()
    assert master.answers == [("taken-back", 400)] and master.results == [], "sent once more, told 400, dropped"
    assert worker.sources[0].status().reports_pending == 0


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
    assert "refused the API key (403)" in caplog.text and "wrong-key-of-the-test" not in caplog.text
    assert master.claimed == 0 and master.pending() == ["s"], "nothing was taken"
