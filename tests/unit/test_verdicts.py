"""Deciding a test's verdict, the overall verdict, group checks, and scoring with and without groups."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from hatchway.judge.request import Group
from hatchway.judge.verdicts import (
    CheckOutcome,
    Decision,
    GroupResult,
    Measured,
    TestScore,
    Verdict,
    check_groups,
    decide,
    overall_verdict,
    score,
    skipped_result,
    worst,
)

AC, WA, TLE, MLE, OLE, RE, CE, IE, SK = (
    Verdict.AC,
    Verdict.WA,
    Verdict.TLE,
    Verdict.MLE,
    Verdict.OLE,
    Verdict.RE,
    Verdict.CE,
    Verdict.IE,
    Verdict.SK,
)
CLEAN = Measured(exit_code=0, cpu_s=0.5, wall_s=0.6, memory_bytes=10 * 2**20)
RIGHT = CheckOutcome.accepted()


def run(**changes: Any) -> Measured:
    """A clean run with `changes` applied."""
    return replace(CLEAN, **changes)


# priority


def test_verdicts_are_json_strings() -> None:
    assert [str(verdict) for verdict in Verdict] == ["AC", "WA", "TLE", "MLE", "OLE", "RE", "CE", "IE", "SK"]


@pytest.mark.parametrize(
    ("verdicts", "expected"),
    [
        ([AC, WA, RE, OLE, MLE, TLE, IE], IE),
        ([AC, WA, RE, OLE, MLE, TLE], TLE),
        ([AC, WA, RE, OLE, MLE], MLE),
        ([AC, WA, RE, OLE], OLE),
        ([AC, WA, RE], RE),
        ([AC, WA], WA),
        ([AC, AC], AC),
        ([WA, AC], WA),
        ([SK, AC], AC),
        ([SK, SK], None),
        ([], None),
    ],
)
def test_worst_follows_the_priority(verdicts: list[Verdict], expected: Verdict | None) -> None:
    assert worst(verdicts) == expected
    assert worst(reversed(verdicts)) == expected


def test_overall_verdict() -> None:
    assert overall_verdict([AC, AC, AC]) is AC
    assert overall_verdict([AC, WA, SK, SK]) is WA  # stop_on_first_failure skipped the rest
    assert overall_verdict([AC, TLE, WA]) is TLE
    assert overall_verdict([SK, SK], compile_failed=True) is CE
    assert overall_verdict([], compile_failed=True) is CE
    assert overall_verdict([SK]) is SK
    assert overall_verdict([]) is SK


# decide


@pytest.mark.parametrize(
    ("measured", "verdict", "message"),
    [
        (run(internal_error="sandbox vanished", cpu_exceeded=True), IE, "sandbox vanished"),
        (run(cpu_exceeded=True, oom_killed=True, signal=9, exit_code=None), TLE, "CPU time went past the limit of 2 s"),
        (run(cpu_s=2.01), TLE, "CPU time"),
        (run(wall_exceeded=True, oom_killed=True), TLE, "wall time went past the limit of 7 s"),
        (run(wall_s=7.5), TLE, "wall time"),
        (run(oom_killed=True, signal=9, exit_code=None, output_exceeded=True), MLE, "peak 10.0 MiB"),
        (run(output_exceeded=True, signal=9, exit_code=None), OLE, "output limit"),
        (run(signal=11, exit_code=None), RE, "killed by signal 11 (SIGSEGV)"),
        (run(signal=200, exit_code=None), RE, "killed by signal 200"),
        (run(exit_code=3), RE, "exited with code 3"),
        (run(exit_code=None), IE, "neither an exit code nor a signal"),
    ],
)
def test_decide_a_run_that_went_wrong(measured: Measured, verdict: Verdict, message: str) -> None:
    decided = decide(measured, 2, 7, RIGHT)  # the checker's opinion does not matter
    assert decided.verdict is verdict
    assert decided.fraction == 0.0
    assert decided.message is not None
    assert message in decided.message


def test_decide_memory_without_a_peak() -> None:
    assert decide(run(oom_killed=True, memory_bytes=None), 2, 7, None).message == (
        "killed for using more memory than the limit"
    )


def test_decide_a_clean_run_by_its_checker() -> None:
    assert decide(CLEAN, 2, 7, RIGHT) == Decision(AC, 1.0, None)
    assert decide(CLEAN, 2, 7, CheckOutcome.wrong("line 1: expected '5', got '6'")) == Decision(
        WA, 0.0, "line 1: expected '5', got '6'"
    )
    assert decide(CLEAN, 2, 7, CheckOutcome.wrong("close", 0.5)) == Decision(WA, 0.5, "close")
    assert decide(CLEAN, 2, 7, CheckOutcome.failed("checker exited 3")) == Decision(IE, 0.0, "checker exited 3")
    assert decide(CLEAN, 2, 7, None).verdict is IE


def test_the_limits_themselves_are_allowed() -> None:
    assert decide(run(cpu_s=2.0, wall_s=7.0), 2, 7, RIGHT).verdict is AC


def test_decide_unpacks_as_a_tuple() -> None:
    verdict, fraction, message = decide(CLEAN, 2, 7, RIGHT)
    assert (verdict, fraction, message) == (AC, 1.0, None)


def test_check_outcomes_keep_verdict_and_fraction_consistent() -> None:
    with pytest.raises(ValueError, match="AC exactly when"):
        CheckOutcome(AC, 0.5)
    with pytest.raises(ValueError, match="AC exactly when"):
        CheckOutcome(WA, 1.0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        CheckOutcome(WA, 1.5)
    with pytest.raises(ValueError, match="AC, WA or IE"):
        CheckOutcome(TLE, 0.0)
    with pytest.raises(ValueError, match="fraction 0"):
        CheckOutcome(IE, 1.0)


# groups


def group(name: str, tests: list[str], points: float = 10, depends_on: list[str] | None = None) -> Group:
    return Group(name=name, tests=tests, points=points, depends_on=depends_on or [])


def test_check_groups_orders_dependencies_first() -> None:
    groups = [group("c", ["3"], depends_on=["a", "b"]), group("b", ["2"], depends_on=["a"]), group("a", ["1"])]
    assert check_groups({"1", "2", "3"}, groups) == ["a", "b", "c"]
    independent = [group("x", ["1"]), group("y", ["2"])]
    assert check_groups(None, independent) == ["x", "y"]


@pytest.mark.parametrize(
    ("groups", "message"),
    [
        ([group("a", ["1"]), group("a", ["2"])], "group names must be unique; repeated: 'a'"),
        ([group("a", ["1", "9"])], "group 'a' names unknown test '9'"),
        ([group("a", ["8", "9"])], "group 'a' names unknown tests '8', '9'"),
        ([group("a", ["1"], depends_on=["zz"])], "group 'a' depends on unknown group 'zz'"),
        ([group("a", [])], "group 'a' has no tests"),
        ([group("a", ["1"], depends_on=["a"])], "cycle: a -> a"),
        (
            [
                group("root", ["1"]),
                group("a", ["1"], depends_on=["root", "c"]),
                group("b", ["2"], depends_on=["a"]),
                group("c", ["3"], depends_on=["b"]),
            ],
            "cycle: a -> c -> b -> a",
        ),
    ],
)
def test_check_groups_refuses(groups: list[Group], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        check_groups({"1", "2", "3"}, groups)


# scoring


def scored(name: str, verdict: Verdict, points: float = 1.0, fraction: float | None = None) -> TestScore:
    return TestScore(name, verdict, points, (1.0 if verdict is AC else 0.0) if fraction is None else fraction)


def test_score_without_groups_sums_the_tests_points() -> None:
    tests = [scored("1", AC, 2), scored("2", WA, 3), scored("3", WA, 4, 0.25), scored("4", TLE, 5), scored("5", AC)]
    result = score(tests)
    assert (result.score, result.max_score, result.groups) == (4.0, 15.0, [])


def test_partial_fractions_add_up_cleanly() -> None:
    assert score([scored(str(n), WA, 1, 0.1) for n in range(3)]).score == 0.3


def test_a_failed_run_earns_nothing_even_with_a_fraction() -> None:
    assert TestScore("1", RE, 5, 1.0).earned == 0.0
    assert score([TestScore("1", RE, 5, 1.0)]).score == 0.0


def test_skipped_tests_earn_nothing_but_count_towards_the_maximum() -> None:
    result = score([scored("1", WA), skipped_result("2", 3), skipped_result("3", 4)])
    assert (result.score, result.max_score) == (0.0, 8.0)
    assert skipped_result("2", 3) == TestScore("2", SK, 3, 0.0)


def test_score_with_groups_ignores_the_tests_points() -> None:
    tests = [scored("1", AC, 100), scored("2", AC), scored("3", WA), scored("4", AC)]
    groups = [group("a", ["1", "2"], 30), group("b", ["3", "4"], 70)]
    result = score(tests, groups)
    assert (result.score, result.max_score) == (30.0, 100.0)
    assert result.groups == [GroupResult(name="a", verdict=AC, score=30), GroupResult(name="b", verdict=WA, score=0)]


def test_a_group_takes_the_worst_verdict_of_its_tests() -> None:
    tests = [scored("1", AC), scored("2", WA), scored("3", TLE), scored("4", SK)]
    assert score(tests, [group("g", ["1", "2", "3", "4"])]).groups[0].verdict is TLE


def test_a_partially_accepted_test_fails_its_group() -> None:
    result = score([scored("1", WA, 1, 0.9)], [group("g", ["1"], 10)])
    assert (result.score, result.groups[0].verdict) == (0.0, WA)


def test_a_group_whose_dependency_failed_is_skipped() -> None:
    tests = [scored("1", WA), scored("2", AC), scored("3", AC), scored("4", AC)]
    groups = [
        group("chain-end", ["4"], 5, depends_on=["middle"]),
        group("base", ["1"], 10),
        group("middle", ["2"], 20, depends_on=["base"]),
        group("free", ["3"], 40),
    ]
    result = score(tests, groups)
    assert [(g.name, g.verdict, g.score) for g in result.groups] == [
        ("chain-end", SK, 0),
        ("base", WA, 0),
        ("middle", SK, 0),
        ("free", AC, 40),
    ]
    assert (result.score, result.max_score) == (40.0, 75.0)


def test_a_group_with_passed_dependencies_scores() -> None:
    tests = [scored("1", AC), scored("2", AC)]
    result = score(tests, [group("a", ["1"], 10), group("b", ["1", "2"], 20, depends_on=["a"])])
    assert (result.score, [g.verdict for g in result.groups]) == (30.0, [AC, AC])


def test_a_group_whose_tests_were_skipped_is_skipped() -> None:
    tests = [scored("1", WA), skipped_result("2", 1), scored("3", AC), skipped_result("4", 1)]
    result = score(tests, [group("a", ["1"]), group("b", ["3", "4"]), group("c", ["2"])])
    assert [g.verdict for g in result.groups] == [WA, SK, SK]
    assert result.score == 0.0


def test_tests_in_no_group_earn_nothing_with_groups() -> None:
    result = score([scored("sample", AC, 5), scored("1", AC)], [group("a", ["1"], 10)])
    assert (result.score, result.max_score) == (10.0, 10.0)


def test_score_refuses_inconsistent_input() -> None:
    with pytest.raises(ValueError, match="repeated: '1'"):
        score([scored("1", AC), scored("1", WA)])
    with pytest.raises(ValueError, match="unknown test '2'"):
        score([scored("1", AC)], [group("a", ["1", "2"])])
