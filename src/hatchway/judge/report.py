"""What a grading found: the compile step's result, each test's result and the report stored with the job,
every text in it capped."""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from hatchway.judge.verdicts import GroupResult, Verdict

COMPILE_OUTPUT_CHARS = 64 * 1024
"""How much of the compiler's output a result keeps."""
EXCERPT_CHARS = 4 * 1024
"""How much of a test's output and stderr a result keeps."""
MESSAGE_CHARS = 4 * 1024
"""How much of a checker's message or a result's message a result keeps."""
_TRUNCATED = "\n… (truncated)"


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
