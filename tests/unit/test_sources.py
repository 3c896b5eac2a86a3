"""Job sources' pure parts: waiting, and what a submission's master is told of a grading."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from hatchway.judge.report import CompileResult, GradeReport, TestResult
from hatchway.judge.verdicts import Verdict
from hatchway.models import Job, JobState, Reason
from hatchway.settings import SourceConfig
from hatchway.sources.base import pause
from hatchway.sources.languages import language_map
from hatchway.sources.submissions import INFO_CHARS, result_of


async def test_a_pause_with_nothing_to_wake_it_waits_its_time() -> None:
    loop = asyncio.get_running_loop()
    began = loop.time()
    await pause(None, 0.05)
    assert loop.time() - began >= 0.04


async def test_a_pause_ends_when_stop_is_set() -> None:
    stop = asyncio.Event()
    stop.set()
    await asyncio.wait_for(pause(stop, 3600), 5)


def graded(make_job: Callable[..., Job], report: GradeReport | None, **fields: Any) -> Job:
    values: dict[str, Any] = {"state": JobState.SUCCEEDED, "grade": report, "origin": "judge", "external_id": "7"}
    return make_job(**(values | fields))


def test_an_accepted_submission_gets_a_point_a_test_and_each_test_its_measures(make_job: Callable[..., Job]) -> None:
    tests = [
        TestResult(name="1", verdict=Verdict.AC, points=1, time_s=0.25, memory_bytes=4096 * 1024, exit_code=0),
        TestResult(name="2", verdict=Verdict.AC, points=1, time_s=0.5, memory_bytes=2048, exit_code=0),
    ]
    report = GradeReport(verdict=Verdict.AC, score=2, max_score=2, passed=2, total=2, tests=tests)
    assert result_of(graded(make_job, report)) == {
        "points": 2,
        "info": "AC",
        "test_results": [
            {"test_name": "1", "grade": True, "ret_code": 0, "time": 0.25, "memory": 4096.0, "info": "AC"},
            {"test_name": "2", "grade": True, "ret_code": 0, "time": 0.5, "memory": 2.0, "info": "AC"},
        ],
    }


def test_points_count_the_tests_passed_or_a_percentage_and_a_signal_is_negative(make_job: Callable[..., Job]) -> None:
    tests = [
        TestResult(name="a", verdict=Verdict.AC, points=1, exit_code=0),
        TestResult(name="b", verdict=Verdict.WA, checker_message="expected 3, got 4", exit_code=0),
        TestResult(name="c", verdict=Verdict.RE, signal=11),
    ]
    report = GradeReport(verdict=Verdict.RE, score=1, max_score=3, passed=1, total=3, tests=tests)
    result = result_of(graded(make_job, report))
    assert (result["points"], result["info"]) == (1, "RE")
    assert result_of(graded(make_job, report), percent=True)["points"] == 33, "a whole number: the master takes int"
    assert [(t["grade"], t["ret_code"], t["info"], t["time"], t["memory"]) for t in result["test_results"]] == [
        (True, 0, "AC", 0.0, 0.0),
        (False, 0, "WA: expected 3, got 4", 0.0, 0.0),
        (False, -11, "RE", 0.0, 0.0),  # as the master's worker reports a signal (Python's returncode)
    ]


def test_a_compile_error_carries_the_compiler_output_capped(make_job: Callable[..., Job]) -> None:
    report = GradeReport(
        verdict=Verdict.CE, max_score=1, total=1, compile=CompileResult(exit_code=1, output="main.c:1: error\n")
    )
    result = result_of(graded(make_job, report))
    assert (result["points"], result["info"]) == (0, "main.c:1: error\n")
    long = report.model_copy(update={"compile": CompileResult(exit_code=1, output="e" * (INFO_CHARS + 1))})
    assert result_of(graded(make_job, long))["info"] == "e" * INFO_CHARS + "..."
    silent = report.model_copy(update={"compile": CompileResult(exit_code=1, output="")})
    assert result_of(graded(make_job, silent))["info"] == "CE"


def test_an_item_that_could_not_be_graded_gets_no_points_and_says_why(make_job: Callable[..., Job]) -> None:
    refused = graded(make_job, None, state=JobState.FAILED, reason=Reason.REFUSED, message="unknown language 'x'")
    assert result_of(refused) == {"points": 0, "info": "IE\nunknown language 'x'", "test_results": []}
    killed = graded(make_job, GradeReport(message=None), state=JobState.KILLED, reason=Reason.SHUTDOWN)
    assert result_of(killed)["info"] == "IE\nthe grading ended killed: shutdown"


def test_the_language_map_has_defaults_and_takes_the_source_own_over_them() -> None:
    config = SourceConfig(
        name="judge", kind="submissions", url="http://127.0.0.1:1", languages={"C": "cpp", "kotlin": "java"}
    )
    languages = language_map(config)
    assert languages["c"] == "cpp" and languages["kotlin"] == "java"
    assert (languages["cxx"], languages["python3"], languages["node"], languages["go"]) == (
        "cpp",
        "python",
        "javascript",
        "go",
    )
