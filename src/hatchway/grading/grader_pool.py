"""The grader pool's dialect: the body its clients send its orchestrator (`POST /grade`, `POST /submit`, `POST
/grade/batch`) and the one its orchestrator sends a worker's `POST /grade`, turned into hatchway gradings; and a
grading turned into the answers those clients and that orchestrator read.

Taken from its code (services/grader-orchestration: index.ts, types.ts, worker.rs, fixtures.rs): a submission is
`{challengeId, code, language, tool, testCases, userId, metadata: {gasLimit, timeLimit, enableTracing,
checkPlagiarism, ...}}`, unknown fields ignored; a test case is a fixture `{id, name, description, input,
expected_output, hidden, timeout, gas_limit}` (its `input` and `expected_output` any JSON value) or `{input,
expectedOutput}`. `timeLimit` and a test's `timeout` are seconds, as the orchestrator (`timeLimit * 1000` ms for
its call to the worker) and the worker (`Duration::from_secs(fixture.timeout.min(time_limit))`) use them.

How it maps is decided here, once, and documented in docs/compatibility.md ("The grader worker pool").
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any, Literal, TypeVar

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError

from hatchway.errors import InvalidRequest
from hatchway.grading.service import result_of
from hatchway.judge.limits import GradeLimits
from hatchway.judge.request import GradeRequest
from hatchway.judge.verdicts import Verdict
from hatchway.models import Job, JobState

POOL_FIELDS = frozenset({"testCases", "metadata", "userId"})
"""A body holding any of these is the pool's: hatchway's own POST /grade body has none of them (`testCases` is
the pool's spelling of `tests`, accepted since before there was a dialect; `metadata` and `userId` were refused)."""

PASSING_SCORE = 70
"""The pool's worker says `success` from this score on (worker.rs: `final_score >= 70`)."""

SUBMITTED = "Grading job submitted successfully"
DIALECT: Literal["grader-pool"] = "grader-pool"
"""A grading submitted in the pool's dialect records it (`GradeSpec.dialect`): GET /grade/{id} answers it so."""

_Model = TypeVar("_Model", bound=BaseModel)

_STATUS = {
    JobState.QUEUED: "queued",
    JobState.BUILDING: "processing",
    JobState.RUNNING: "processing",
    JobState.SUCCEEDED: "completed",
    JobState.FAILED: "failed",
    JobState.KILLED: "failed",
}
"""hatchway's job states as the pool's four: a grading that ran is `completed` whatever its verdict."""


def is_pool_body(body: object) -> bool:
    """Whether a POST /grade body is in the pool's dialect (see `POOL_FIELDS`)."""
    return isinstance(body, dict) and not POOL_FIELDS.isdisjoint(body)


class _Lenient(BaseModel):
    """The pool's bodies: unknown fields are ignored, as its orchestrator and worker ignore them."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)


class PoolMetadata(_Lenient):
    """`metadata`: limits and switches. Only `timeLimit` means something to hatchway (see docs)."""

    gas_limit: int | None = Field(default=None, alias="gasLimit", description="Ignored: nothing here meters gas.")
    time_limit: float | None = Field(
        default=None, alias="timeLimit", gt=0, allow_inf_nan=False, description="Seconds per test."
    )
    enable_tracing: bool | None = Field(default=None, alias="enableTracing", description="Ignored.")


class PoolTestCase(_Lenient):
    """One test case, in the fixture shape or the client's `{input, expectedOutput}`."""

    id: str | int | None = None
    name: str | None = None
    description: str | None = None
    input: Any = ""
    expected_output: Any = Field(default="", validation_alias=AliasChoices("expected_output", "expectedOutput"))
    hidden: bool = False
    timeout: float | None = Field(default=None, gt=0, allow_inf_nan=False, description="Seconds.")
    gas_limit: int | None = None


class PoolSubmission(_Lenient):
    """A submission to the orchestrator (`POST /grade`, `/submit`, one of a batch) or the orchestrator's call to
    a worker (the same, `metadata`'s limits also on top as `timeLimit`, `gasLimit`)."""

    id: str | int | None = Field(default=None, description="A batch's submission id.")
    challenge_id: str | int | None = Field(default=None, alias="challengeId")
    user_id: str | int | None = Field(default=None, alias="userId")
    code: str | None = None
    language: str | None = None
    tool: str | None = None
    test_cases: list[PoolTestCase] | None = Field(default=None, alias="testCases")
    metadata: PoolMetadata = Field(default_factory=PoolMetadata)
    time_limit: float | None = Field(default=None, alias="timeLimit", gt=0, allow_inf_nan=False)


class PoolBatch(_Lenient):
    """`POST /grade/batch`: submissions graded together, the batch's `metadata` under each one's own."""

    submissions: list[dict[str, Any]] = Field(min_length=1, max_length=1000)
    tournament_id: str | int | None = Field(default=None, alias="tournamentId")
    metadata: dict[str, Any] = Field(default_factory=dict)


def speaks_pool(job: Job) -> bool:
    """Whether `job` is a grading submitted in the pool's dialect."""
    return job.spec.grade is not None and job.spec.grade.dialect == DIALECT


def parse_submission(body: Any) -> PoolSubmission:
    """The pool's submission in `body`; InvalidRequest naming the field otherwise."""
    return _parsed(PoolSubmission, body)


def parse_batch(body: Any) -> PoolBatch:
    return _parsed(PoolBatch, body)


def to_grade_request(
    submission: PoolSubmission, maximums: GradeLimits, *, job_id: str | None = None, labels: Mapping[str, str] = {}
) -> GradeRequest:
    """The hatchway grading a pool submission asks for. Raises InvalidRequest saying what to change.

    `timeLimit` becomes each test's CPU and wall limit and a test's `timeout` its own CPU limit where smaller, both
    capped at this worker's maximums (the orchestrator capped its call to a worker at its own `WORKER_TIMEOUT`).
    A test's input and expected output that are not strings are given as their JSON text.
    """
    if not submission.test_cases:
        raise InvalidRequest(
            "testCases: give at least one test case; hatchway does not fetch a challenge's fixtures by challengeId"
        )
    time_limit = submission.metadata.time_limit or submission.time_limit
    limits: dict[str, float] = {}
    if time_limit is not None:
        limits = {
            "time_limit_s": min(time_limit, maximums.time_limit_s),
            "wall_limit_s": min(time_limit, maximums.wall_limit_s),
        }
    tests = []
    for case in submission.test_cases:
        own = [value for value in (case.timeout, time_limit) if value is not None]
        test: dict[str, Any] = {
            "input": _text(case.input),
            "expected_output": _text(case.expected_output),
            "hidden": case.hidden,
        }
        name = case.id if case.id is not None else case.name
        if name is not None:
            test["name"] = str(name)
        if case.timeout is not None:
            test["time_limit_s"] = min(*own, maximums.time_limit_s)
        tests.append(test)
    extra = {"user": str(submission.user_id)} if submission.user_id is not None else {}
    body = {
        "id": job_id,
        "language": submission.language,
        "tool": submission.tool,
        "code": submission.code,
        "tests": tests,
        "challengeId": submission.challenge_id,
        "labels": {**extra, **labels},
        "limits": limits,
    }
    return _parsed(GradeRequest, {key: value for key, value in body.items() if value is not None})


def answer(job: Job, *, message: str | None = None) -> dict[str, Any]:
    """A grading as the pool's clients read it: hatchway's own fields (GET /grade/{id}), and the pool's beside.

    `score` is the pool's: a percentage, 0 to 100, of `max_score` (rounded down, as the worker computed
    `passed * 100 / total`); hatchway's score in points is `points`.
    """
    result = result_of(job)
    body = result.model_dump(mode="json")
    spec = job.spec.grade
    body |= {
        "jobId": job.id,
        "status": _STATUS[job.state],
        "submittedAt": job.created_at.isoformat(),
        "language": None if spec is None else spec.profile.name,
        "points": result.score,
        "score": _percent(result.score, result.max_score),
        "passedTests": result.passed,
        "totalTests": result.total,
        "message": message or result.message or _said(job),
    }
    if job.state.is_final:
        body |= {
            "completedAt": None if job.finished_at is None else job.finished_at.isoformat(),
            "timeUsed": None if job.duration_s is None else round(job.duration_s * 1000),
            "output": _summary(job),
            "error": _error(job),
        }
    return body


def worker_answer(job: Job) -> dict[str, Any]:
    """What the pool's worker answers its orchestrator's POST /grade: the grading's result in the same answer,
    `success` once the score reaches PASSING_SCORE."""
    body = answer(job)
    body["success"] = job.state is JobState.SUCCEEDED and body["score"] >= PASSING_SCORE
    return body


def worker_refusal(message: str) -> dict[str, Any]:
    """The pool's worker answers a job it cannot grade with 200 and `{error, status: failed}`; the orchestrator
    then records it as graded with score 0 and that error."""
    return {
        "success": False,
        "status": "failed",
        "error": message,
        "score": 0,
        "passedTests": 0,
        "totalTests": 0,
        "output": "",
    }


def _percent(score: float, max_score: float) -> int:
    return math.floor(100 * score / max_score + 1e-9) if max_score > 0 else 0


def _summary(job: Job) -> str:
    """The worker's `output`: tests passed, public and hidden apart (`Public: 10/10, Hidden: 9/10`), and the
    verdict."""
    report = job.grade
    spec = job.spec.grade
    if report is None or spec is None:
        return ""
    hidden = {test.name for test in spec.tests or () if test.hidden}
    counts = {True: [0, 0], False: [0, 0]}
    for test in report.tests:
        tally = counts[test.name in hidden]
        tally[0] += test.verdict is Verdict.AC
        tally[1] += 1
    public, secret = counts[False], counts[True]
    verdict = "" if report.verdict is None else f", verdict {report.verdict.value}"
    return f"Public: {public[0]}/{public[1]}, Hidden: {secret[0]}/{secret[1]}{verdict}"


def _error(job: Job) -> str:
    report = job.grade
    if job.state is not JobState.SUCCEEDED:
        return job.message or (job.reason.value if job.reason is not None else job.state.value)
    if report is not None and report.verdict is Verdict.CE and report.compile is not None:
        return report.compile.output
    return ""


def _said(job: Job) -> str:
    report = job.grade
    if job.state is JobState.QUEUED:
        return "queued"
    if not job.state.is_final or report is None or report.verdict is None:
        return job.state.value
    return f"{report.verdict.value}: {report.passed}/{report.total} tests passed"


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _parsed(model: type[_Model], body: Any) -> _Model:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or '(body)'}: {error['msg']}" for error in exc.errors()
        )
        raise InvalidRequest(problems) from exc
