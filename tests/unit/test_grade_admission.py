"""Admitting a grading: profiles, policy and limits decide what it runs with, or a clear error says why not."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from hatchway.errors import InputTooLarge, InvalidRequest, LimitTooHigh, NotAllowed
from hatchway.grading.admission import GradeAdmission
from hatchway.jobs.policy import Policy
from hatchway.judge.limits import GradeLimits
from hatchway.judge.profiles import DEFAULT_PROFILES, UnknownProfile
from hatchway.judge.request import GradeRequest
from hatchway.models import JobSpec
from hatchway.settings import GradeMaxLimits

MAXIMUMS = GradeLimits(time_limit_s=10, wall_limit_s=40, memory_mb=1024, processes=128)
TESTS = [{"input": "1 2\n", "expected_output": "3\n"}]


@pytest.fixture
def admit(make_policy: Callable[..., Policy]) -> Callable[..., Any]:
    def run(policy: dict[str, Any] | None = None, max_input_bytes: int = 10_000, **fields: Any) -> Any:
        admission = GradeAdmission(
            policy=make_policy(**(policy or {})),
            profiles=DEFAULT_PROFILES,
            default_limits=GradeLimits(),
            max_limits=MAXIMUMS,
            max_input_bytes=max_input_bytes,
        )
        body = {"language": "c", "code": "int main(){}", "tests": TESTS, **fields}
        return admission.admit(GradeRequest.model_validate(body))

    return run


def test_a_submission_becomes_a_grade_spec_with_its_profile_and_limits(admit: Callable[..., Any]) -> None:
    spec, warnings = admit(limits={"time_limit_s": 1})
    assert (spec.kind, spec.image, spec.runtime, warnings) == ("grade", "hatchway-profile/c:latest", "docker", [])
    grade = spec.grade
    assert grade.profile.name == "c" and grade.files == {"main.c": "int main(){}"} and grade.main == "main.c"
    assert (grade.limits.time_limit_s, grade.limits.wall_limit_s, grade.limits.memory_mb) == (1, 4, 256)
    assert grade.max_limits == MAXIMUMS


def test_a_build_tool_picks_its_profile_and_an_unknown_one_is_named(admit: Callable[..., Any]) -> None:
    spec, _ = admit(language=None, tool="cargo", code="fn main(){}")
    assert spec.grade.profile.name == "rust" and spec.grade.main == "main.rs"
    with pytest.raises(UnknownProfile, match="foundry"):
        admit(language=None, tool="foundry")
    with pytest.raises(UnknownProfile, match="cobol"):
        admit(language="cobol")


def test_files_need_a_main_unless_one_is_obvious(admit: Callable[..., Any]) -> None:
    one, _ = admit(code=None, files={"src/sum.c": "x"})
    assert one.grade.main == "src/sum.c"
    default, _ = admit(code=None, files={"main.c": "x", "util.h": "y"})
    assert default.grade.main == "main.c"
    chosen, _ = admit(code=None, files={"a.c": "x", "b.c": "y"}, main="b.c")
    assert chosen.grade.main == "b.c"
    with pytest.raises(InvalidRequest, match="main"):
        admit(code=None, files={"a.c": "x", "b.c": "y"})


def test_limits_over_the_maximums_are_refused_naming_them(admit: Callable[..., Any]) -> None:
    with pytest.raises(LimitTooHigh, match=r"limits\.memory_mb"):
        admit(limits={"memory_mb": 4096})
    with pytest.raises(LimitTooHigh, match="time_limit_s"):
        admit(tests=[{**TESTS[0], "time_limit_s": 60}])


def test_policy_applies_to_profile_images_and_problem_urls(admit: Callable[..., Any]) -> None:
    with pytest.raises(NotAllowed, match="hatchway-profile/c"):
        admit(policy={"allowed_images": ["python:*"]})
    with pytest.raises(NotAllowed, match="problem_url"):
        admit(tests=None, problem_url="file:///srv/problem.zip", policy={"bundle_allowed_urls": ["https://*"]})


def test_a_callback_url_passes_the_callback_policy(admit: Callable[..., Any]) -> None:
    spec, _ = admit(callback_url="http://127.0.0.1:8000/hook")
    assert spec.callback_url == "http://127.0.0.1:8000/hook"
    with pytest.raises(InvalidRequest, match="callback_url"):
        admit(callback_url="http://127.0.0.1:8000/hook", policy={"callback_allowed_urls": ["https://*"]})


def test_a_custom_checker_needs_a_known_language(admit: Callable[..., Any]) -> None:
    spec, _ = admit(checker={"type": "custom", "language": "python", "code": "print(1)"})
    assert spec.grade.checker_profile.name == "python"
    with pytest.raises(UnknownProfile, match="brainfuck"):
        admit(checker={"type": "custom", "language": "brainfuck", "code": "+"})


def test_submission_and_tests_are_bounded_in_size(admit: Callable[..., Any]) -> None:
    with pytest.raises(InputTooLarge, match="problem_url"):
        admit(tests=[{"input": "x" * 6000, "expected_output": "y" * 6000}])


def test_a_spec_survives_the_store_unchanged_so_a_resubmission_matches(make_policy: Callable[..., Policy]) -> None:
    admission = GradeAdmission(
        policy=make_policy(),
        profiles=DEFAULT_PROFILES,
        default_limits=GradeLimits(),
        max_limits=GradeMaxLimits(),  # the settings' subclass, as the worker passes it
        max_input_bytes=10_000,
    )
    spec, _ = admission.admit(GradeRequest.model_validate({"language": "c", "code": "x", "tests": TESTS}))
    assert JobSpec.model_validate_json(spec.model_dump_json()) == spec


def test_the_submission_must_leave_room_on_its_compile_disk(admit: Callable[..., Any]) -> None:
    code = "/*" + "x" * 5 * 2**20 + "*/ int main(){}"
    with pytest.raises(InputTooLarge, match=r"half its compile disk \(limits.compile_disk_mb = 8\)"):
        admit(code=code, max_input_bytes=2**30, limits={"compile_disk_mb": 8})
    spec, _ = admit(code=code, max_input_bytes=2**30, limits={"compile_disk_mb": 16})
    assert spec.grade.limits.compile_disk_mb == 16
