"""`kind: submissions`: the submission judge's master (Stos), as its own worker speaks to it.

`POST {url}/worker/submission` (with `X-API-Key`) hands out the oldest pending submission, `{"id", "task_url",
"submission_url", "lang", "mainfile", "problem_specification"}`, and marks it running; 404 `{"detail": "No pending
submissions."}` means there is none, 403 a wrong key. The archive at `task_url` holds the tests (flat `NAME.in` and
`NAME.out`, or hatchway's `in/` and `out/`), the one at `submission_url` the source files (flat, or under `src/`):
each layout is told by what the archive holds. `mainfile` names the entry point (null: the first file, in natural
order). `problem_specification.tests` gives named tests their own time, memory and stack limits; the others take
the source's `grade_limits`.

The result goes to `PUT {url}/worker/submissions/{id}/result` as the master's worker sends it: `points` is the
number of tests passed (or, with the source's `points: percent`, the score in percent); `info` is the compiler's
output on CE (at most `INFO_CHARS` characters, as the master's worker caps it), the reason on IE, else the verdict;
each test's `time` is CPU seconds, `memory` its peak in KiB, and `ret_code` its exit code, or minus the signal that
killed it (as Python's `returncode` says it). The master answers 204; 400 (not running) and 404 (unknown) mean it
wants no result for that id: the report is dropped, not sent again.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hatchway.errors import HatchwayError, ShuttingDown
from hatchway.grading.service import GradeService
from hatchway.jobs.service import JobService
from hatchway.judge.problem import natural_key
from hatchway.judge.report import GradeReport, TestResult
from hatchway.judge.request import GradeRequest
from hatchway.judge.verdicts import Verdict
from hatchway.models import Job
from hatchway.settings import SourceConfig
from hatchway.sources.pulled import ItemRefused, PulledSource, Report

SOURCE_FOLDER = "src"
"""Where hatchway's own layout keeps a submission's files in its archive (the master's is flat)."""
INFO_CHARS = 10_000
"""The most of the compiler's output `info` carries, as the master's worker reads it."""
_MIB = 1024 * 1024


class TestSpecification(BaseModel):
    """One test of `problem_specification`, with the master's defaults."""

    __test__: ClassVar[bool] = False  # not a pytest test class

    model_config = ConfigDict(frozen=True)

    test_name: str = Field(min_length=1, max_length=128)
    time_limit: float = Field(default=2, gt=0, allow_inf_nan=False, description="Seconds.")
    total_memory_limit: int = Field(default=256 * _MIB, gt=0, description="Bytes.")
    stack_size_limit: int | None = Field(default=None, gt=0, description="Bytes; null: the image's default.")


class ProblemSpecification(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str | None = None
    tests: list[TestSpecification] = Field(default_factory=list)


class Submission(BaseModel):
    """A submission as the master hands it out."""

    model_config = ConfigDict(frozen=True)

    task_url: str = Field(min_length=1)
    submission_url: str = Field(min_length=1)
    lang: str = Field(min_length=1)
    mainfile: str | None = None
    problem_specification: ProblemSpecification | None = None


class SubmissionsSource(PulledSource):
    """Pulls submissions from a judge's master, grades each, and reports each one's result exactly once."""

    kind = "submissions"
    claim_method = "POST"
    claim_path = "/worker/submission"
    item_name = "submission"
    gone = (400, 404, 409, 410)

    def __init__(
        self, config: SourceConfig, *, worker_id: str, grades: GradeService, languages: Mapping[str, str]
    ) -> None:
        super().__init__(config, worker_id=worker_id)
        self._grades = grades
        self._languages = dict(languages)

    def _external_id(self, item: dict[str, Any]) -> str | None:
        submission_id = item.get("id")
        if isinstance(submission_id, bool) or not isinstance(submission_id, str | int):
            return None
        return str(submission_id) or None

    async def _take(self, jobs: JobService, external_id: str, item: dict[str, Any]) -> str:
        try:
            submission = Submission.model_validate(item)
        except ValidationError as exc:
            raise ItemRefused(f"the submission cannot be read: {_problems(exc)}") from exc
        profile = self._profile(submission.lang)
        files = await self._grades.source_files(
            submission.submission_url, SOURCE_FOLDER, "submission_url", source=self.name
        )
        main = submission.mainfile
        if main:
            main = main.removeprefix(f"{SOURCE_FOLDER}/")
            if main not in files:
                raise ItemRefused(f"mainfile {main!r} is not among the submission's files: {', '.join(sorted(files))}")
        else:
            main = min(files, key=natural_key)  # the first file, as the master's worker picks one
        try:
            request = GradeRequest.model_validate(
                {
                    "language": profile,
                    "files": files,
                    "main": main,
                    "problem_url": submission.task_url,
                    "test_limits": _test_limits(submission.problem_specification),
                    "limits": self._config.grade_limits.model_dump(exclude_none=True),
                    "runtime": self._config.runtime,
                    "labels": self._labels(external_id),
                }
            )
        except ValidationError as exc:
            raise ItemRefused(f"the submission cannot be graded: {_problems(exc)}") from exc
        try:
            grade, _ = await self._grades.submit(request, origin=self.name, external_id=external_id)
        except ShuttingDown:
            raise
        except HatchwayError as exc:
            raise ItemRefused(f"the submission cannot be graded: {exc}") from exc
        return grade.id

    def _profile(self, lang: str) -> str:
        profile = self._languages.get(lang.strip().lower())
        if profile is None:
            raise ItemRefused(f"unknown language {lang!r}; this worker knows: {', '.join(sorted(self._languages))}")
        return profile

    def _report(self, job: Job) -> Report:
        body = result_of(job, percent=self._config.points == "percent")
        return Report("PUT", f"/worker/submissions/{job.external_id or ''}/result", body)


def _test_limits(specification: ProblemSpecification | None) -> list[dict[str, Any]]:
    """`problem_specification`'s tests as hatchway's per-test limits (bytes rounded up to whole MiB)."""
    tests = [] if specification is None else specification.tests
    return [
        {
            "name": test.test_name,
            "time_limit_s": test.time_limit,
            "memory_mb": math.ceil(test.total_memory_limit / _MIB),
            "stack_mb": None if test.stack_size_limit is None else math.ceil(test.stack_size_limit / _MIB),
        }
        for test in tests
    ]


def _problems(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'submission'}: {e['msg']}" for e in exc.errors())


def result_of(job: Job, *, percent: bool = False) -> dict[str, Any]:
    """The result the master is told of an ended grade job of this source (or of an item refused). `points` is
    the number of tests passed, or with `percent` the score in percent of the maximum, rounded to a whole."""
    report = job.grade
    if report is None or report.verdict is None:
        why = job.message or f"the grading ended {job.state.value}" + (f": {job.reason.value}" if job.reason else "")
        tests = [] if report is None else report.tests
        return {"points": 0, "info": f"{Verdict.IE.value}\n{why}", "test_results": [_test(test) for test in tests]}
    return {
        "points": _percent(report) if percent else report.passed,
        "info": _info(report, job.message),
        "test_results": [_test(test) for test in report.tests],
    }


def _percent(report: GradeReport) -> int:
    if report.max_score <= 0:
        return 0
    return round(100 * report.score / report.max_score)


def _info(report: GradeReport, message: str | None) -> str:
    verdict = report.verdict or Verdict.IE
    if verdict is Verdict.CE and report.compile is not None and report.compile.output.strip():
        output = report.compile.output
        return output if len(output) <= INFO_CHARS else output[:INFO_CHARS] + "..."
    if verdict is Verdict.IE:
        return f"{verdict.value}\n{report.message or message or 'the judge failed'}"
    return verdict.value


def _test(test: TestResult) -> dict[str, Any]:
    ret_code = test.exit_code
    if ret_code is None:
        ret_code = 0 if test.signal is None else -test.signal
    info = test.verdict.value if not test.checker_message else f"{test.verdict.value}: {test.checker_message}"
    return {
        "test_name": test.name,
        "grade": test.verdict is Verdict.AC,
        "ret_code": ret_code,
        "time": float(test.time_s or 0.0),
        "memory": 0.0 if test.memory_bytes is None else test.memory_bytes / 1024,
        "info": info,
    }
