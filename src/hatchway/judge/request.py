"""The grading request language: the body of POST /grade (including a grader pool's spellings), its tests,
groups and checkers, and the admitted `GradeSpec` a grading runs with.

Validated once, at the edge. What needs a problem archive's test names (groups naming tests) is checked here when
the tests are inline, and again with `check_groups` once an archive is loaded.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SerializationInfo,
    field_serializer,
    field_validator,
    model_validator,
)

from hatchway.fields import CallbackUrl, CleanStr, JobId, LabelKey, LabelValue, Placement, Runtime, SourcePath
from hatchway.judge.limits import GradeLimits, RequestedGradeLimits
from hatchway.judge.profiles import Profile
from hatchway.judge.verdicts import check_groups

CHALLENGE_LABEL = "challenge"
"""The label a grader pool's `challengeId` is kept under."""
WITH_HIDDEN_TESTS = "with_hidden_tests"
"""The serialization context key (`{WITH_HIDDEN_TESTS: True}`) that keeps hidden tests' inputs and expected
outputs in a dump: only the job store passes it. Every other dump (an answer, a callback) withholds them."""


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value


Name = Annotated[CleanStr, Field(min_length=1, max_length=128), AfterValidator(_not_blank)]
"""A language profile, build tool, test or group name."""


class TestSpec(BaseModel):
    """One test given inline: its input, the output expected, and what it is worth.

    Also accepts a grader pool's spelling, `expectedOutput`. A missing `name` defaults to the test's position,
    "1", "2", ..., when the test is part of a request.

    A `hidden` test's input and expected output are serialized as "" unless the context holds
    `WITH_HIDDEN_TESTS` (the job store's dump), so that no answer or callback carrying the job's spec shows them;
    its result keeps no output, stderr or checker message (see grading/session.py) for the same reason.
    """

    __test__: ClassVar[bool] = False  # not a pytest test class

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: Annotated[CleanStr, Field(max_length=128)] = Field(default="", description="Defaults to its position.")
    input: str = Field(default="", description="What the program reads on stdin.")
    expected_output: str = Field(default="", validation_alias=AliasChoices("expected_output", "expectedOutput"))
    points: float = Field(default=1.0, ge=0, allow_inf_nan=False)
    time_limit_s: float | None = Field(default=None, gt=0, allow_inf_nan=False, description="CPU seconds.")
    memory_mb: int | None = Field(default=None, ge=6)
    stack_mb: int | None = Field(
        default=None, ge=1, le=1024 * 1024, description="Stack size; None: the image's default (8 MB)."
    )
    hidden: bool = Field(
        default=False, description="Judged, but its input, expected output and the program's output never shown."
    )

    @field_serializer("input", "expected_output")
    def _withheld(self, value: str, info: SerializationInfo) -> str:
        if self.hidden and not (info.context or {}).get(WITH_HIDDEN_TESTS):
            return ""
        return value


class TestLimitsSpec(BaseModel):
    """One test's own limits, for a test of `problem_url` named `name` (an inline test carries them itself).

    A limit left out is the grading's; one test's limits are checked against the worker's maximums as the
    grading's are. A name the archive does not have is ignored, as the submission judge's worker ignores it.
    """

    __test__: ClassVar[bool] = False  # not a pytest test class

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Name
    time_limit_s: float | None = Field(default=None, gt=0, allow_inf_nan=False, description="CPU seconds.")
    memory_mb: int | None = Field(default=None, ge=6)
    stack_mb: int | None = Field(
        default=None, ge=1, le=1024 * 1024, description="Stack size; None: the image's default (8 MB)."
    )


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
    files: dict[SourcePath, str] | None = Field(
        default=None, description="Relative path -> text; no path component may start with '-' or '@'."
    )
    main: SourcePath | None = Field(default=None, description="The entry point: one of `files`.")
    tests: list[TestSpec] | None = None
    test_cases: list[TestSpec] | None = Field(default=None, alias="testCases", description="A grader pool's tests.")
    problem_url: ProblemUrl | None = Field(default=None, description="A .zip or .tar(.gz) with in/ and out/.")
    problem_sha256: Sha256 | None = None
    test_limits: list[TestLimitsSpec] = Field(
        default_factory=list, description="Limits of tests of `problem_url`, by name (others: `limits`)."
    )
    challenge_id: str | int | None = Field(default=None, alias="challengeId", description="Kept as label `challenge`.")
    checker: Checker = Field(default_factory=LinesChecker)
    limits: RequestedGradeLimits = Field(default_factory=RequestedGradeLimits)
    groups: list[Group] = Field(default_factory=list)
    stop_on_first_failure: bool = False
    priority: int = Field(default=0, ge=-1_000_000, le=1_000_000, description="Higher runs first.")
    labels: dict[LabelKey, LabelValue] = Field(default_factory=dict)
    placement: Placement = Field(
        default_factory=dict,
        description="Run only on a worker whose labels include all these (see docs/jobs.md, Placement).",
    )
    runtime: Runtime = Field(default="auto", description="docker (runc), gvisor (runsc), or auto.")
    callback_url: CallbackUrl | None = Field(
        default=None, description="POSTed the grading's JSON once it has ended (see docs/jobs.md, Callbacks)."
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
        if self.test_limits and self.problem_url is None:
            raise ValueError("test_limits are for the tests of problem_url; an inline test carries its own limits")
        repeated = [name for name, count in Counter(t.name for t in self.test_limits).items() if count > 1]
        if repeated:
            raise ValueError("test_limits name each test once; repeated: " + ", ".join(map(repr, repeated)))
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


Dialect = Literal["hatchway", "grader-pool"]
"""Whose answers a grading's client reads: hatchway's own, or the grader pool's beside them."""


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
    test_limits: list[TestLimitsSpec] = Field(default_factory=list, description="Limits of `problem_url`'s tests.")
    checker: Checker
    checker_profile: Profile | None = Field(default=None, description="The custom checker's language.")
    limits: GradeLimits
    max_limits: GradeLimits = Field(description="The worker's maximums, for per-test limits.")
    groups: list[Group] = Field(default_factory=list)
    stop_on_first_failure: bool = False
    dialect: Dialect = Field(
        default="hatchway",
        description="How it was asked for, and so how GET /grade/{id} answers: hatchway's fields, or the grader "
        "pool's beside them (docs/compatibility.md).",
    )
