"""`kind: submissions`: the submission judge's master.

`POST {url}/worker/submission` hands out `{"id", "task_url", "submissions_url", "lang" (or "compiler"),
"mainfile", "problem_specification"}` (or 204 or 404: nothing to do). The archive at `submissions_url` holds the
submission under `src/`; the one at `task_url` holds the tests, `in/NAME.in` and `out/NAME.out`. The submission
is graded in the profile its language maps to, and its result goes to `PUT {url}/worker/submissions/{id}/result`
as `{"points", "info", "test_results": [...]}`. Claiming and reporting are `PulledSource`'s.

What the master is told (the reference worker's master documents no scale, so these are hatchway's choices,
written down in docs/sources.md): `points` is the score in percent of the maximum (0 to 100); `info` is the overall
verdict (AC, WA, TLE, MLE, OLE, RE, CE, IE), followed on the next lines by the compiler's output for CE and by
the reason for IE; each test's `time` is CPU seconds, `memory` its peak in KiB, and `ret_code` its exit code, or
128 + the signal that killed it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from hatchway.errors import HatchwayError, ShuttingDown
from hatchway.grading.service import GradeService
from hatchway.jobs.service import JobService
from hatchway.judge.report import GradeReport, TestResult
from hatchway.judge.request import GradeRequest
from hatchway.judge.verdicts import Verdict
from hatchway.models import Job
from hatchway.settings import SourceConfig
from hatchway.sources.pulled import ItemRefused, PulledSource, Report

SOURCE_FOLDER = "src"
"""Where the submission's files are in its archive."""


class SubmissionsSource(PulledSource):
    """Pulls submissions from a judge's master, grades each, and reports each one's result exactly once."""

    kind = "submissions"
    claim_method = "POST"
    claim_path = "/worker/submission"
    item_name = "submission"

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
        task_url = _text(item, "task_url", "the URL of the task's tests")
        submissions_url = _text(item, "submissions_url", "the URL of the submission's files")
        profile = self._profile(item)
        main = item.get("mainfile")
        if main is not None and not isinstance(main, str):
            raise ItemRefused(f"mainfile must be a file name, not {main!r}")
        files = await self._grades.source_files(submissions_url, SOURCE_FOLDER, "submissions_url", source=self.name)
        if main:
            main = main.removeprefix(f"{SOURCE_FOLDER}/")
            if main not in files:
                raise ItemRefused(f"mainfile {main!r} is not among the submission's files: {', '.join(sorted(files))}")
        try:
            request = GradeRequest.model_validate(
                {
                    "language": profile,
                    "files": files,
                    "main": main or None,
                    "problem_url": task_url,
                    "limits": self._config.grade_limits.model_dump(exclude_none=True),
                    "runtime": self._config.runtime,
                    "labels": self._labels(external_id),
                }
            )
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'submission'}: {e['msg']}" for e in exc.errors())
            raise ItemRefused(f"the submission cannot be graded: {problems}") from exc
        try:
            grade, _ = await self._grades.submit(request, origin=self.name, external_id=external_id)
        except ShuttingDown:
            raise
        except HatchwayError as exc:
            raise ItemRefused(f"the submission cannot be graded: {exc}") from exc
        return grade.id

    def _profile(self, item: dict[str, Any]) -> str:
        lang = item.get("lang") or item.get("compiler")
        if not isinstance(lang, str) or not lang.strip():
            raise ItemRefused("the submission names no language (lang or compiler)")
        profile = self._languages.get(lang.strip().lower())
        if profile is None:
            raise ItemRefused(f"unknown language {lang!r}; this worker knows: {', '.join(sorted(self._languages))}")
        return profile

    def _report(self, job: Job) -> Report:
        return Report("PUT", f"/worker/submissions/{job.external_id or ''}/result", result_of(job))


def result_of(job: Job) -> dict[str, Any]:
    """The result the master is told of an ended grade job of this source (or of an item refused)."""
    report = job.grade
    if report is None or report.verdict is None:
        why = job.message or f"the grading ended {job.state.value}" + (f": {job.reason.value}" if job.reason else "")
        tests = [] if report is None else report.tests
        return {"points": 0, "info": f"{Verdict.IE.value}\n{why}", "test_results": [_test(test) for test in tests]}
    return {
        "points": _percent(report),
        "info": _info(report, job.message),
        "test_results": [_test(test) for test in report.tests],
    }


def _percent(report: GradeReport) -> float:
    if report.max_score <= 0:
        return 0
    return round(100 * report.score / report.max_score, 2)


def _info(report: GradeReport, message: str | None) -> str:
    verdict = report.verdict or Verdict.IE
    if verdict is Verdict.CE and report.compile is not None:
        return f"{verdict.value}\n{report.compile.output}".rstrip("\n")
    if verdict is Verdict.IE:
        return f"{verdict.value}\n{report.message or message or 'the judge failed'}"
    return verdict.value


def _test(test: TestResult) -> dict[str, Any]:
    ret_code = test.exit_code
    if ret_code is None and test.signal is not None:
        ret_code = 128 + test.signal
    info = test.verdict.value if not test.checker_message else f"{test.verdict.value}: {test.checker_message}"
    return {
        "test_name": test.name,
        "grade": test.verdict is Verdict.AC,
        "ret_code": ret_code,
        "time": test.time_s,
        "memory": None if test.memory_bytes is None else test.memory_bytes // 1024,
        "info": info,
    }


def _text(item: dict[str, Any], field: str, what: str) -> str:
    value = item.get(field)
    if not isinstance(value, str) or not value.strip():
        raise ItemRefused(f"the submission has no {field} ({what})")
    return value
