"""The grader pool's dialect, translated: which bodies are the pool's, how its test cases and limits map, and that
a hidden test's input and expected output leave only through the job store's dump."""

from __future__ import annotations

import json

import pytest

from hatchway.errors import InvalidRequest
from hatchway.grading import grader_pool
from hatchway.judge.limits import GradeLimits
from hatchway.judge.request import WITH_HIDDEN_TESTS, TestSpec

MAXIMUMS = GradeLimits(time_limit_s=5, wall_limit_s=20)


def test_only_bodies_with_the_pools_own_fields_are_the_pools() -> None:
    assert grader_pool.is_pool_body({"language": "c", "code": "x", "testCases": []})
    assert grader_pool.is_pool_body({"code": "x", "userId": "u"})
    assert not grader_pool.is_pool_body({"language": "c", "code": "x", "tests": [], "challengeId": "c1"})
    assert not grader_pool.is_pool_body(["testCases"])


def test_fixtures_become_tests_with_their_limits_capped_and_json_given_as_text() -> None:
    body = {
        "code": "x",
        "language": "python",
        "userId": 7,
        "metadata": {"timeLimit": 30, "gasLimit": 5},
        "unknown": True,
        "testCases": [
            {"id": "a", "input": {"method": "store", "args": [42]}, "expected_output": {"storedValue": 42}},
            {"input": "1\n", "expectedOutput": "2\n", "hidden": True, "timeout": 2, "gas_limit": 9},
        ],
    }
    request = grader_pool.to_grade_request(grader_pool.parse_submission(body), MAXIMUMS)
    first, second = request.cases or []
    assert (first.name, json.loads(first.input), json.loads(first.expected_output)) == (
        "a",
        {"method": "store", "args": [42]},
        {"storedValue": 42},
    )
    assert (second.name, second.hidden, second.time_limit_s) == ("2", True, 2)
    assert (request.limits.time_limit_s, request.limits.wall_limit_s) == (5, 20)
    assert request.labels == {"user": "7"}


def test_a_submission_without_test_cases_is_refused_saying_so() -> None:
    with pytest.raises(InvalidRequest, match="testCases"):
        grader_pool.to_grade_request(grader_pool.parse_submission({"code": "x", "language": "c"}), MAXIMUMS)


def test_a_hidden_tests_data_is_dumped_only_for_the_store() -> None:
    test = TestSpec(name="s", input="secret in", expected_output="secret out", hidden=True)
    assert "secret" not in test.model_dump_json() and "secret" not in str(test.model_dump())
    kept = TestSpec.model_validate_json(test.model_dump_json(context={WITH_HIDDEN_TESTS: True}))
    assert kept == test
    shown = TestSpec(name="p", input="public in", expected_output="out")
    assert "public in" in shown.model_dump_json()
