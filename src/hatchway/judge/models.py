"""Grading values: the body of POST /grade, its limits, and the result GET /grade/{id} returns.

Validated once, at the edge. What needs a problem archive's test names (groups naming tests) is checked here when
the tests are inline, and again with `check_groups` once an archive is loaded.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator

from hatchway.errors import LimitTooHigh
from hatchway.judge.profiles import Profile
from hatchway.judge.verdicts import GroupResult, Verdict, check_groups
from hatchway.models import (
    CallbackStatus,
    CallbackUrl,
    CleanStr,
    JobId,
    JobState,
    LabelKey,
    LabelValue,
    RelativePath,
    Runtime,
)

CHALLENGE_LABEL = "challenge"
"""The label a grader pool's `challengeId` is kept under."""
COMPILE_OUTPUT_CHARS = 64 * 1024
"""How much of the compiler's output a result keeps."""
EXCERPT_CHARS = 4 * 1024
"""How much of a test's output and stderr a result keeps."""
MESSAGE_CHARS = 4 * 1024
"""How much of a checker's message or a result's message a result keeps."""
_TRUNCATED = "\n… (truncated)"


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value


Name = Annotated[CleanStr, Field(min_length=1, max_length=128), AfterValidator(_not_blank)]
"""A language profile, build tool, test or group name."""


class GradeLimitTooHigh(LimitTooHigh, ValueError):
    """A grading limit (request-wide or one test's) is above the configured maximum; the message names each one.

    A `LimitTooHigh`, so the API answers 422, and a `ValueError` for callers that validate values generically.
    """


class TestSpec(BaseModel):
    """One test given inline: its input, the output expected, and what it is worth.

    Also accepts a grader pool's spelling, `expectedOutput`. A missing `name` defaults to the test's position,
    "1", "2", ..., when the test is part of a request.
    """

    __test__: ClassVar[bool] = False  # not a pytest test class

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: Annotated[CleanStr, Field(max_length=128)] = Field(default="", description="Defaults to its position.")
    input: str = Field(default="", description="What the program reads on stdin.")
    expected_output: str = Field(default="", validation_alias=AliasChoices("expected_output", "expectedOutput"))
    points: float = Field(default=1.0, ge=0, allow_inf_nan=False)
    time_limit_s: float | None = Field(default=None, gt=0, allow_inf_nan=False, description="CPU seconds.")
    memory_mb: int | None = Field(default=None, ge=6)


class Group(BaseModel):
    """Tests scored together: the group earns `points` only if all its tests pass and its dependencies did."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Name
    tests: list[Name] = Field(description="Names of the tests in the group.")
    points: float = Field(ge=0, allow_inf_nan=False)
    depends_on: list[Name] = Field(default_factory=list, description="Groups that must pass for this one to count.")


class ExactChecker(BaseModel):
    """The output must equal the expected output byte for byte."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["exact"] = "exact"


class LinesChecker(BaseModel):
    """Line by line, ignoring trailing whitespace on each line, trailing empty lines, and CRLF versus LF."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["lines"] = "lines"


class TokensChecker(BaseModel):
    """The same whitespace-separated tokens, however they are spaced."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["tokens"] = "tokens"


class FloatChecker(BaseModel):
    """Tokens, where two numbers match if they are within `abs_tol` or within `rel_tol` of the expected value."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["float"] = "float"
    abs_tol: float = Field(default=1e-6, ge=0, allow_inf_nan=False)
    rel_tol: float = Field(default=1e-6, ge=0, allow_inf_nan=False)


class UnorderedChecker(BaseModel):
    """The same lines in any order (as a multiset), each compared as the `lines` checker does."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["unordered"] = "unordered"


class CustomChecker(BaseModel):
    """A program, in a configured language, that judges each output.

    It exits 0 to accept and 1 to refuse; anything else is an internal error. The first line it prints is the
    message shown with the verdict, and a line `points=F` (F in [0, 1]) awards that fraction of the test's points.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["custom"] = "custom"
    language: Name
    code: str = Field(min_length=1)


Checker = Annotated[
    ExactChecker | LinesChecker | TokensChecker | FloatChecker | UnorderedChecker | CustomChecker,
    Field(discriminator="type"),
]
BuiltinChecker = ExactChecker | LinesChecker | TokensChecker | FloatChecker | UnorderedChecker


class RequestedGradeLimits(BaseModel):
    """Limits a client may ask for; absent fields take the worker's defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    time_limit_s: float | None = Field(default=None, gt=0, allow_inf_nan=False, description="CPU seconds per test.")
    wall_limit_s: float | None = Field(
        default=None, gt=0, allow_inf_nan=False, description="Wall seconds per test; 3 x time_limit_s + 1 if absent."
    )
    memory_mb: int | None = Field(default=None, ge=6, description="Memory per test, in MB.")
    output_bytes: int | None = Field(default=None, ge=0, description="Cap on what one test may print.")
    processes: int | None = Field(default=None, ge=1, description="Processes and threads a test may have at once.")
    compile_timeout_s: float | None = Field(
        default=None, gt=0, allow_inf_nan=False, description="Wall-clock seconds the compile step may take."
    )
    compile_memory_mb: int | None = Field(default=None, ge=6, description="Memory for the compile step, in MB.")


class GradeLimits(BaseModel):
    """Grading limits with every value decided. The defaults are the documented ones.

    A missing `wall_limit_s` is derived from `time_limit_s` as 3 x CPU + 1, so a program that waits or sleeps is
    stopped without cutting short one that is merely slow.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    time_limit_s: float = Field(default=2.0, gt=0, allow_inf_nan=False, description="CPU seconds per test.")
    wall_limit_s: float = Field(
        default=7.0, gt=0, allow_inf_nan=False, description="Wall-clock seconds per test (3 x CPU + 1 if not given)."
    )
    memory_mb: int = Field(default=256, ge=6, description="Memory per test, in MB.")
    output_bytes: int = Field(default=1024 * 1024, ge=0, description="Output a test may print.")
    processes: int = Field(default=64, ge=1, description="Processes and threads a test may have at once.")
    compile_timeout_s: float = Field(
        default=30.0, gt=0, allow_inf_nan=False, description="Wall-clock seconds the compile step may take."
    )
    compile_memory_mb: int = Field(default=1024, ge=6, description="Memory for the compile step, in MB.")

    @model_validator(mode="before")
    @classmethod
    def _derive_wall(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("wall_limit_s") is None and data.get("time_limit_s") is not None:
            return {**data, "wall_limit_s": default_wall_s(data["time_limit_s"])}
        return data


def default_wall_s(time_limit_s: float) -> float:
    """The wall limit that goes with a CPU limit when none is asked for: 3 x CPU + 1 seconds."""
    return 3 * time_limit_s + 1


def resolve_limits(
    requested: RequestedGradeLimits,
    defaults: GradeLimits,
    maximums: GradeLimits,
    *,
    tests: Sequence[TestSpec] = (),
) -> GradeLimits:
    """The limits a grading runs with: what was asked for, else the defaults.

    Raises `GradeLimitTooHigh` naming every requested value above its maximum, including the per-test
    `time_limit_s` and `memory_mb` of `tests`. A wall limit derived from a requested CPU limit is capped at the
    maximum wall limit instead of being refused, since the client did not ask for it.
    """
    asked = requested.model_dump(exclude_none=True)
    too_high = [
        f"limits.{name} = {value} is above the maximum {getattr(maximums, name)}"
        for name, value in asked.items()
        if value > getattr(maximums, name)
    ]
    for test in tests:
        for name in ("time_limit_s", "memory_mb"):
            value = getattr(test, name)
            if value is not None and value > getattr(maximums, name):
                too_high.append(f"test {test.name!r} {name} = {value} is above the maximum {getattr(maximums, name)}")
    if too_high:
        raise GradeLimitTooHigh("; ".join(too_high))
    values = defaults.model_dump() | asked
    if "wall_limit_s" not in asked and "time_limit_s" in asked:
        values["wall_limit_s"] = min(default_wall_s(asked["time_limit_s"]), maximums.wall_limit_s)
    return GradeLimits(**values)


def limits_for_test(
    limits: GradeLimits, maximums: GradeLimits, *, time_limit_s: float | None, memory_mb: int | None
) -> GradeLimits:
    """The limits one test runs with, given its own `time_limit_s` and `memory_mb` (None: the request's).

    A test's own CPU limit also widens its wall limit to 3 x CPU + 1 when that is more, up to the maximum, so a
    test given more CPU time is not cut short by the request-wide wall limit. The values must already have passed
    `resolve_limits`.
    """
    update: dict[str, Any] = {}
    if time_limit_s is not None:
        wall = max(limits.wall_limit_s, min(default_wall_s(time_limit_s), maximums.wall_limit_s))
        update |= {"time_limit_s": time_limit_s, "wall_limit_s": wall}
    if memory_mb is not None:
        update["memory_mb"] = memory_mb
    return GradeLimits.model_validate(limits.model_dump() | update)


ProblemUrl = Annotated[str, Field(pattern=r"^(https?|file)://", max_length=4096)]
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class GradeRequest(BaseModel):
    """The body of POST /grade: a submission, the tests to judge it with, and how to judge.

    Tests come from exactly one of `tests`, `testCases` (a grader pool's spelling) and `problem_url` (an archive in
    the judge's layout, see `hatchway.judge.problem`). A grader pool's `challengeId` is kept as the label
    `challenge`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    id: JobId | None = Field(default=None, description="Client-chosen id; resubmitting it returns the same grading.")
    language: Name | None = Field(default=None, description="A language profile name.")
    tool: Name | None = Field(default=None, description="A build tool name, mapped to a language profile.")
    code: str | None = Field(default=None, min_length=1, description="One source file.")
    files: dict[RelativePath, str] | None = Field(default=None, description="Relative path -> text.")
    main: RelativePath | None = Field(default=None, description="The entry point: one of `files`.")
    tests: list[TestSpec] | None = None
    test_cases: list[TestSpec] | None = Field(default=None, alias="testCases", description="A grader pool's tests.")
    problem_url: ProblemUrl | None = Field(default=None, description="A .zip or .tar(.gz) with in/ and out/.")
    problem_sha256: Sha256 | None = None
    challenge_id: str | int | None = Field(default=None, alias="challengeId", description="Kept as label `challenge`.")
    checker: Checker = Field(default_factory=LinesChecker)
    limits: RequestedGradeLimits = Field(default_factory=RequestedGradeLimits)
    groups: list[Group] = Field(default_factory=list)
    stop_on_first_failure: bool = False
    priority: int = Field(default=0, ge=-1_000_000, le=1_000_000, description="Higher runs first.")
    labels: dict[LabelKey, LabelValue] = Field(default_factory=dict)
    runtime: Runtime = Field(default="auto", description="docker (runc), gvisor (runsc), or auto.")
    callback_url: CallbackUrl | None = Field(
        default=None, description="POSTed the grading's JSON once it has ended (see README, Callbacks)."
    )

    @model_validator(mode="before")
    @classmethod
    def _challenge_label(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        challenge = data.get("challengeId", data.get("challenge_id"))
        if challenge is None:
            return data
        labels = data.get("labels") or {}
        if not isinstance(labels, dict):
            return data  # the field's own validation explains what labels must be
        if labels.get(CHALLENGE_LABEL, str(challenge)) != str(challenge):
            raise ValueError(
                f"challengeId {challenge!r} and labels.{CHALLENGE_LABEL} {labels[CHALLENGE_LABEL]!r} differ"
            )
        return {**data, "labels": {**labels, CHALLENGE_LABEL: str(challenge)}}

    @field_validator("tests", "test_cases", mode="before")
    @classmethod
    def _default_names(cls, value: Any) -> Any:
        if not isinstance(value, list):
            return value
        return [
            {**item, "name": str(position)} if isinstance(item, dict) and item.get("name") is None else item
            for position, item in enumerate(value, start=1)
        ]

    @field_validator("tests", "test_cases")
    @classmethod
    def _tests_named_once(cls, value: list[TestSpec] | None) -> list[TestSpec] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("give at least one test")
        for position, test in enumerate(value, start=1):
            if not test.name.strip():
                raise ValueError(f"test {position} has an empty name; leave `name` out to name it by position")
        repeated = [name for name, count in Counter(test.name for test in value).items() if count > 1]
        if repeated:
            raise ValueError(
                "test names must be unique (unnamed tests are named by position); repeated: "
                + ", ".join(repr(name) for name in repeated)
            )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> GradeRequest:
        if self.language is None and self.tool is None:
            raise ValueError("give `language` (a language profile) or `tool` (a build tool)")
        if (self.code is None) == (self.files is None):
            raise ValueError("give exactly one of `code` (one source file) and `files`")
        if self.files is not None and not self.files:
            raise ValueError("`files` must hold at least one file")
        if self.main is not None:
            if self.files is None:
                raise ValueError("`main` picks one of `files`; it cannot be used with `code`")
            if self.main not in self.files:
                raise ValueError(f"main {self.main!r} is not one of the files: {_listed(self.files)}")
        given = [self.tests is not None, self.test_cases is not None, self.problem_url is not None]
        if sum(given) != 1:
            raise ValueError("give exactly one of `tests`, `testCases` and `problem_url`")
        if self.problem_sha256 is not None and self.problem_url is None:
            raise ValueError("problem_sha256 needs problem_url")
        cases = self.cases
        check_groups(None if cases is None else {test.name for test in cases}, self.groups)
        return self

    @property
    def cases(self) -> list[TestSpec] | None:
        """The inline tests, from `tests` or `testCases`, each named; None when they come from `problem_url`."""
        return self.tests if self.tests is not None else self.test_cases


def _listed(names: Sequence[str] | dict[str, str], most: int = 10) -> str:
    shown = [repr(name) for name in list(names)[:most]]
    more = len(names) - most
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


def _capped(limit: int) -> AfterValidator:
    def cap(value: str) -> str:
        return value if len(value) <= limit else value[: limit - len(_TRUNCATED)] + _TRUNCATED

    return AfterValidator(cap)


def excerpt(data: bytes, limit: int = EXCERPT_CHARS) -> str:
    """Up to `limit` characters of `data` as text, marked when cut; reads no more than it keeps of a large output."""
    text = data[: limit * 4].decode("utf-8", errors="replace")  # a UTF-8 character is at most 4 bytes
    if len(text) <= limit and len(data) <= limit * 4:
        return text
    return text[: limit - len(_TRUNCATED)] + _TRUNCATED


CompileOutput = Annotated[str, _capped(COMPILE_OUTPUT_CHARS)]
Excerpt = Annotated[str, _capped(EXCERPT_CHARS)]
Message = Annotated[str, _capped(MESSAGE_CHARS)]
Seconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class CompileResult(BaseModel):
    """How building the submission went: the compiler's exit code, its output (capped), and its times."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    exit_code: int | None
    output: CompileOutput = ""
    time_s: Seconds | None = Field(default=None, description="CPU seconds.")
    wall_s: Seconds | None = None


class TestResult(BaseModel):
    """How one test went.

    `points` is what the test earned: its points times the fraction the checker awarded. With groups the score
    counts the groups' points only, and the tests' points are for information. `output` and `stderr` are
    excerpts of what the program printed.
    """

    __test__: ClassVar[bool] = False  # not a pytest test class

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    verdict: Verdict
    points: float = 0.0
    time_s: Seconds | None = Field(default=None, description="CPU seconds.")
    wall_s: Seconds | None = None
    memory_bytes: int | None = Field(default=None, description="Peak memory.")
    exit_code: int | None = None
    signal: int | None = None
    checker_message: Message | None = None
    output: Excerpt = ""
    stderr: Excerpt = ""


class GradeReport(BaseModel):
    """What a grading found: stored with the job when it ends. `verdict` is null until then."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    verdict: Verdict | None = None
    score: float = Field(default=0.0, allow_inf_nan=False)
    max_score: float = Field(default=0.0, allow_inf_nan=False)
    passed: int = Field(default=0, ge=0, description="Tests with verdict AC.")
    total: int = Field(default=0, ge=0, description="Tests in the grading.")
    compile: CompileResult | None = None
    tests: list[TestResult] = Field(default_factory=list)
    groups: list[GroupResult] = Field(default_factory=list)
    message: Message | None = Field(default=None, description="Details of an internal error, for example.")


class GradeResult(GradeReport):
    """A grading as GET /grade/{id} returns it: its job's id and state, and its report."""

    id: str
    state: JobState
    callback: CallbackStatus | None = Field(
        default=None, description="The delivery of its result to `callback_url`, if it has one."
    )


class GradeSpec(BaseModel):
    """An admitted grading: everything it runs with, decided at submission (a profile changed in the config
    later does not change a queued grading)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    profile: Profile
    files: dict[str, str] = Field(description="The submission's files, written into /box.")
    main: str = Field(description="The main source file, relative to /box.")
    tests: list[TestSpec] | None = Field(description="Inline tests; None when they come from problem_url.")
    problem_url: str | None = None
    problem_sha256: str | None = None
    checker: Checker
    checker_profile: Profile | None = Field(default=None, description="The custom checker's language.")
    limits: GradeLimits
    max_limits: GradeLimits = Field(description="The worker's maximums, for per-test limits.")
    groups: list[Group] = Field(default_factory=list)
    stop_on_first_failure: bool = False


def _complete_job_models() -> None:
    # hatchway.models names these only for type checkers, as they are built from its own values.
    from hatchway import models

    namespace = {"GradeSpec": GradeSpec, "GradeReport": GradeReport}
    for model in (models.JobSpec, models.Job, models.Outcome):
        model.model_rebuild(_types_namespace=namespace)


_complete_job_models()
