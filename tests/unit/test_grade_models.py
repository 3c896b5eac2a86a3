"""`GradeRequest` validation at the edge, limit resolution, and the shape of `GradeResult`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from pydantic import ValidationError

from hatchway.errors import LimitTooHigh
from hatchway.grading.service import GradeResult
from hatchway.judge.limits import GradeLimits, GradeLimitTooHigh, RequestedGradeLimits, limits_for_test, resolve_limits
from hatchway.judge.report import EXCERPT_CHARS, TestResult, excerpt
from hatchway.judge.request import CustomChecker, FloatChecker, GradeRequest, LinesChecker, TestSpec
from hatchway.judge.verdicts import GroupResult, Verdict
from hatchway.models import JobState

MakeGrade = Callable[..., GradeRequest]
MAXIMUMS = GradeLimits(
    time_limit_s=10,
    wall_limit_s=40,
    memory_mb=1024,
    output_bytes=8 * 1024 * 1024,
    processes=256,
    compile_timeout_s=120,
    compile_memory_mb=4096,
)


@pytest.fixture
def make_grade() -> MakeGrade:
    """Build a `GradeRequest` from JSON-like fields; `None` removes a default field."""

    def make(**fields: Any) -> GradeRequest:
        body: dict[str, Any] = {"language": "python", "code": "print(input())", "tests": [{"input": "1\n"}]}
        body.update(fields)
        return GradeRequest.model_validate({key: value for key, value in body.items() if value is not None})

    return make


def refused(make_grade: MakeGrade, **fields: Any) -> str:
    """The validation message of a request that must be refused."""
    with pytest.raises(ValidationError) as caught:
        make_grade(**fields)
    return str(caught.value)


def test_a_minimal_request_takes_the_defaults(make_grade: MakeGrade) -> None:
    request = make_grade()
    assert request.checker == LinesChecker()
    assert request.limits == RequestedGradeLimits()
    assert (request.groups, request.stop_on_first_failure, request.priority, request.runtime) == ([], False, 0, "auto")
    assert request.cases == [TestSpec(name="1", input="1\n", expected_output="", points=1.0)]


def test_unnamed_tests_are_named_by_position(make_grade: MakeGrade) -> None:
    request = make_grade(tests=[{}, {"name": "big"}, {"name": None}])
    assert [test.name for test in request.tests or []] == ["1", "big", "3"]


def test_unknown_fields_are_rejected(make_grade: MakeGrade) -> None:
    assert "Extra inputs are not permitted" in refused(make_grade, timeout=5)
    assert "Extra inputs are not permitted" in refused(make_grade, tests=[{"stdin": "1"}])


def test_no_tests_is_refused(make_grade: MakeGrade) -> None:
    assert "give at least one test" in refused(make_grade, tests=[])


def test_duplicate_test_names_are_refused_including_positional_ones(make_grade: MakeGrade) -> None:
    assert "repeated: 'a'" in refused(make_grade, tests=[{"name": "a"}, {"name": "a"}])
    # The first test is named "1" by position, so a second test explicitly named "1" collides with it.
    assert "repeated: '1'" in refused(make_grade, tests=[{}, {"name": "1"}])


def test_an_explicitly_empty_test_name_is_refused(make_grade: MakeGrade) -> None:
    assert "empty name" in refused(make_grade, tests=[{"name": " "}])


def test_negative_points_are_refused(make_grade: MakeGrade) -> None:
    assert "greater than or equal to 0" in refused(make_grade, tests=[{"points": -1}])


def test_language_or_tool_is_required_and_both_are_kept(make_grade: MakeGrade) -> None:
    assert "give `language`" in refused(make_grade, language=None)
    assert make_grade(language=None, tool="maven").tool == "maven"
    both = make_grade(language="java", tool="maven")
    assert (both.language, both.tool) == ("java", "maven")
    refused(make_grade, language="")


@pytest.mark.parametrize(
    "fields",
    [{"code": None}, {"files": {"a.py": "x"}}],
    ids=["neither", "both"],
)
def test_exactly_one_of_code_and_files(make_grade: MakeGrade, fields: dict[str, Any]) -> None:
    assert "exactly one of `code`" in refused(make_grade, **fields)


def test_files_with_main(make_grade: MakeGrade) -> None:
    request = make_grade(code=None, files={"src/./main.py": "x", "lib.py": "y"}, main="src/main.py")
    assert request.main == "src/main.py"
    assert "main 'other.py' is not one of the files: 'src/main.py', 'lib.py'" in refused(
        make_grade, code=None, files={"src/main.py": "x", "lib.py": "y"}, main="other.py"
    )
    assert "cannot be used with `code`" in refused(make_grade, main="main.py")
    assert "at least one file" in refused(make_grade, code=None, files={})
    refused(make_grade, code=None, files={"../escape.py": "x"})


@pytest.mark.parametrize(
    ("files", "main", "field"),
    [
        ({"@o": "", "o": "-wrapper /bin/sh,-c,id x.c", "x.c": "int main(){}"}, "@o", "files"),
        ({"main.js": "", "--require=./e.js": ""}, None, "files"),
        ({"src/-x/a.py": ""}, None, "files"),
        ({"a.py": ""}, "-a.py", "main"),
    ],
)
def test_no_file_name_or_main_a_compiler_would_read_as_an_option(
    make_grade: MakeGrade, files: dict[str, str], main: str | None, field: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        make_grade(code=None, files=files, main=main)
    assert caught.value.errors()[0]["loc"][0] == field
    assert "a compiler would take it for an option" in str(caught.value)
    assert make_grade(code=None, files={"a-b/c@d.py": "x"}).files == {"a-b/c@d.py": "x"}


def test_grader_pool_shape(make_grade: MakeGrade) -> None:
    request = make_grade(
        tests=None,
        testCases=[{"input": "1", "expectedOutput": "2"}, {"input": "3", "expectedOutput": "4", "points": 3}],
        challengeId=17,
    )
    assert request.tests is None
    assert [(t.name, t.input, t.expected_output, t.points) for t in request.cases or []] == [
        ("1", "1", "2", 1.0),
        ("2", "3", "4", 3.0),
    ]
    assert request.labels == {"challenge": "17"}


def test_challenge_id_must_agree_with_a_challenge_label(make_grade: MakeGrade) -> None:
    assert make_grade(challengeId="x", labels={"challenge": "x", "team": "a"}).labels == {"challenge": "x", "team": "a"}
    assert "differ" in refused(make_grade, challengeId="x", labels={"challenge": "y"})


@pytest.mark.parametrize(
    "fields",
    [
        {"testCases": [{"input": "1"}]},
        {"problem_url": "https://example.com/p.zip"},
        {"tests": None},
    ],
    ids=["tests-and-testCases", "tests-and-problem", "none"],
)
def test_exactly_one_source_of_tests(make_grade: MakeGrade, fields: dict[str, Any]) -> None:
    assert "exactly one of `tests`, `testCases` and `problem_url`" in refused(make_grade, **fields)


def test_a_problem_archive_instead_of_tests(make_grade: MakeGrade) -> None:
    request = make_grade(tests=None, problem_url="https://example.com/p.zip", problem_sha256="a" * 64)
    assert request.cases is None
    refused(make_grade, tests=None, problem_url="ftp://example.com/p.zip")
    refused(make_grade, tests=None, problem_url="https://example.com/p.zip", problem_sha256="A" * 64)
    assert "problem_sha256 needs problem_url" in refused(make_grade, problem_sha256="a" * 64)


def test_per_test_limits_of_a_problem_archive(make_grade: MakeGrade) -> None:
    url = "https://example.com/p.zip"
    request = make_grade(tests=None, problem_url=url, test_limits=[{"name": "3", "time_limit_s": 0.5, "stack_mb": 1}])
    assert [(t.name, t.time_limit_s, t.memory_mb, t.stack_mb) for t in request.test_limits] == [("3", 0.5, None, 1)]
    assert "an inline test carries its own limits" in refused(make_grade, test_limits=[{"name": "1"}])
    twice = [{"name": "1", "memory_mb": 64}, {"name": "1", "time_limit_s": 1}]
    assert "repeated: '1'" in refused(make_grade, tests=None, problem_url=url, test_limits=twice)
    refused(make_grade, tests=None, problem_url=url, test_limits=[{"name": "1", "stack_mb": 0}])
    too_long = [{"name": "1", "time_limit_s": 99}]
    with pytest.raises(GradeLimitTooHigh, match=r"test '1' time_limit_s = 99.0 is above the maximum 10.0"):
        resolve_limits(
            RequestedGradeLimits(),
            GradeLimits(),
            GradeLimits(time_limit_s=10),
            tests=[make_grade(tests=None, problem_url=url, test_limits=too_long).test_limits[0]],
        )


def test_checkers_are_chosen_by_type(make_grade: MakeGrade) -> None:
    assert make_grade(checker={"type": "float", "abs_tol": 0.01}).checker == FloatChecker(abs_tol=0.01, rel_tol=1e-6)
    custom = make_grade(checker={"type": "custom", "language": "cpp", "code": "int main(){}"}).checker
    assert isinstance(custom, CustomChecker)
    assert "does not match any of the expected tags" in refused(make_grade, checker={"type": "diff"})
    refused(make_grade, checker={"type": "float", "rel_tol": -1})
    refused(make_grade, checker={"type": "custom", "language": "cpp"})
    refused(make_grade, checker={"type": "exact", "abs_tol": 1})


def group(name: str, tests: list[str], points: float = 1, depends_on: list[str] | None = None) -> dict[str, Any]:
    return {"name": name, "tests": tests, "points": points, "depends_on": depends_on or []}


def test_groups_are_validated_against_inline_tests(make_grade: MakeGrade) -> None:
    tests: list[dict[str, Any]] = [{}, {}, {}]
    request = make_grade(tests=tests, groups=[group("a", ["1"]), group("b", ["2", "3"], depends_on=["a"])])
    assert [g.name for g in request.groups] == ["a", "b"]
    assert "group 'a' names unknown tests '4', '5'" in refused(make_grade, tests=tests, groups=[group("a", ["4", "5"])])
    assert "group 'b' depends on unknown group 'z'" in refused(
        make_grade, tests=tests, groups=[group("a", ["1"]), group("b", ["2"], depends_on=["z"])]
    )
    assert "group names must be unique; repeated: 'a'" in refused(
        make_grade, tests=tests, groups=[group("a", ["1"]), group("a", ["2"])]
    )
    assert "groups depend on each other in a cycle: a -> b -> c -> a" in refused(
        make_grade,
        tests=tests,
        groups=[
            group("a", ["1"], depends_on=["b"]),
            group("b", ["2"], depends_on=["c"]),
            group("c", ["3"], depends_on=["a"]),
        ],
    )
    assert "group 'a' has no tests" in refused(make_grade, tests=tests, groups=[group("a", [])])


def test_groups_with_a_problem_archive_are_checked_without_test_names(make_grade: MakeGrade) -> None:
    request = make_grade(tests=None, problem_url="https://example.com/p.zip", groups=[group("a", ["anything"])])
    assert request.groups[0].tests == ["anything"]
    assert "cycle: a -> a" in refused(
        make_grade, tests=None, problem_url="https://example.com/p.zip", groups=[group("a", ["1"], depends_on=["a"])]
    )


def test_ids_priorities_labels_and_runtimes_follow_job_requests(make_grade: MakeGrade) -> None:
    assert make_grade(id="grade-1", priority=5, runtime="gvisor").id == "grade-1"
    refused(make_grade, id="-bad")
    refused(make_grade, priority=1_000_001)
    refused(make_grade, runtime="kata")
    refused(make_grade, labels={"bad key": "x"})


def test_grade_limits_derive_the_wall_limit() -> None:
    assert GradeLimits().wall_limit_s == 7
    assert GradeLimits(time_limit_s=5).wall_limit_s == 16
    assert GradeLimits(time_limit_s=5, wall_limit_s=6).wall_limit_s == 6


def test_resolve_limits_takes_requested_values_else_defaults() -> None:
    limits = resolve_limits(RequestedGradeLimits(memory_mb=512, processes=8), GradeLimits(), MAXIMUMS)
    assert limits == GradeLimits(memory_mb=512, processes=8)


def test_a_requested_cpu_limit_derives_the_wall_limit_up_to_its_maximum() -> None:
    assert resolve_limits(RequestedGradeLimits(time_limit_s=3), GradeLimits(), MAXIMUMS).wall_limit_s == 10
    assert resolve_limits(RequestedGradeLimits(time_limit_s=10), GradeLimits(), MAXIMUMS).wall_limit_s == 31
    tight = MAXIMUMS.model_copy(update={"wall_limit_s": 12})
    assert resolve_limits(RequestedGradeLimits(time_limit_s=10), GradeLimits(), tight).wall_limit_s == 12
    explicit = resolve_limits(RequestedGradeLimits(time_limit_s=3, wall_limit_s=4), GradeLimits(), MAXIMUMS)
    assert explicit.wall_limit_s == 4


def test_limits_over_the_maximum_are_refused_naming_each_field() -> None:
    requested = RequestedGradeLimits(time_limit_s=11, memory_mb=2048, compile_timeout_s=100)
    with pytest.raises(GradeLimitTooHigh) as caught:
        resolve_limits(requested, GradeLimits(), MAXIMUMS)
    message = str(caught.value)
    assert "limits.time_limit_s = 11.0 is above the maximum 10.0" in message
    assert "limits.memory_mb = 2048 is above the maximum 1024" in message
    assert "compile_timeout_s" not in message
    assert isinstance(caught.value, ValueError)
    assert isinstance(caught.value, LimitTooHigh)
    assert caught.value.status == 422


def test_per_test_limits_are_bounded_too() -> None:
    tests = [TestSpec(name="1", time_limit_s=5), TestSpec(name="big", time_limit_s=20, memory_mb=4096)]
    with pytest.raises(GradeLimitTooHigh, match=r"test 'big' time_limit_s = 20.0 .*test 'big' memory_mb = 4096"):
        resolve_limits(RequestedGradeLimits(), GradeLimits(), MAXIMUMS, tests=tests)
    resolve_limits(RequestedGradeLimits(), GradeLimits(), MAXIMUMS, tests=tests[:1])


def test_limits_for_a_test_with_its_own_limits() -> None:
    limits = GradeLimits()  # 2 s CPU, 7 s wall
    assert limits_for_test(limits, MAXIMUMS, time_limit_s=None, memory_mb=None) == limits
    longer = limits_for_test(limits, MAXIMUMS, time_limit_s=5, memory_mb=512)
    assert (longer.time_limit_s, longer.wall_limit_s, longer.memory_mb) == (5, 16, 512)
    shorter = limits_for_test(limits, MAXIMUMS, time_limit_s=0.5, memory_mb=None)
    assert (shorter.time_limit_s, shorter.wall_limit_s) == (0.5, 7)  # never below the request-wide wall limit
    tight = MAXIMUMS.model_copy(update={"wall_limit_s": 20})
    assert limits_for_test(limits, tight, time_limit_s=10, memory_mb=None).wall_limit_s == 20


def test_a_grade_result_serialises_to_the_documented_keys() -> None:
    result = GradeResult(
        id="g1",
        state=JobState.SUCCEEDED,
        verdict=Verdict.WA,
        score=1.5,
        max_score=3,
        passed=1,
        total=2,
        tests=[TestResult(name="1", verdict=Verdict.AC, points=1.5), TestResult(name="2", verdict=Verdict.WA)],
        groups=[GroupResult(name="a", verdict=Verdict.AC, score=1.5)],
    )
    body = result.model_dump(mode="json")
    assert sorted(body) == sorted(
        [
            "id",
            "state",
            "verdict",
            "score",
            "max_score",
            "passed",
            "total",
            "compile",
            "tests",
            "groups",
            "message",
            "callback",
        ]
    )
    assert list(body["tests"][0]) == [
        "name",
        "verdict",
        "points",
        "time_s",
        "wall_s",
        "memory_bytes",
        "exit_code",
        "signal",
        "checker_message",
        "output",
        "stderr",
    ]
    assert (body["state"], body["verdict"], body["tests"][1]["verdict"]) == ("succeeded", "WA", "WA")
    assert body["groups"] == [{"name": "a", "verdict": "AC", "score": 1.5}]
    assert GradeResult(id="g2", state=JobState.QUEUED).verdict is None


def test_results_cap_what_the_program_printed() -> None:
    result = TestResult(name="1", verdict=Verdict.WA, output="x" * 100_000, stderr="short")
    assert len(result.output) == EXCERPT_CHARS
    assert result.output.endswith("(truncated)")
    assert result.stderr == "short"


def test_excerpt_decodes_only_what_it_keeps() -> None:
    assert excerpt(b"hello \xff") == "hello \ufffd"
    cut = excerpt(b"y" * 10_000_000, limit=100)
    assert len(cut) == 100
    assert cut.endswith("(truncated)")
    assert excerpt("é".encode() * 50, limit=100) == "é" * 50
