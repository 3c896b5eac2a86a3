"""The built-in checkers on bytes, and reading a custom checker's answer."""

from __future__ import annotations

import time

import pytest

from hatchway.judge.checkers import check, normal_lines, parse_custom
from hatchway.judge.request import (
    BuiltinChecker,
    CustomChecker,
    ExactChecker,
    FloatChecker,
    LinesChecker,
    TokensChecker,
    UnorderedChecker,
)
from hatchway.judge.verdicts import CheckOutcome, Verdict

EXACT, LINES, TOKENS, UNORDERED = ExactChecker(), LinesChecker(), TokensChecker(), UnorderedChecker()
FLOAT = FloatChecker()


def wrong(checker: BuiltinChecker, expected: bytes, output: bytes) -> str:
    """The message of a wrong answer, checking it is one."""
    outcome = check(checker, b"", expected, output)
    assert (outcome.verdict, outcome.fraction) == (Verdict.WA, 0.0), outcome
    assert outcome.message is not None
    return outcome.message


def accepted(checker: BuiltinChecker, expected: bytes, output: bytes) -> bool:
    outcome = check(checker, b"", expected, output)
    assert outcome.verdict in (Verdict.AC, Verdict.WA)
    return outcome == CheckOutcome.accepted()


# exact


def test_exact_accepts_only_identical_bytes() -> None:
    assert accepted(EXACT, b"1 2\n", b"1 2\n")
    assert accepted(EXACT, b"", b"")
    assert not accepted(EXACT, b"1 2\n", b"1 2")
    assert not accepted(EXACT, b"1 2\n", b"1 2\r\n")
    assert not accepted(EXACT, b"1 2\n", b"1  2\n")


def test_exact_names_the_first_difference() -> None:
    assert wrong(EXACT, b"a\nb\nc\n", b"a\nb\nx\n") == "byte 5 (line 3): expected 'c\\n', got 'x\\n'"
    assert wrong(EXACT, b"a\nb\n", b"a\n") == "expected 4 bytes, got 2; missing from line 2: 'b\\n'"
    assert wrong(EXACT, b"a\n", b"a\n\n") == "expected 2 bytes, got 3; extra output from line 2: '\\n'"
    assert wrong(EXACT, b"5\n", b"") == "expected 2 bytes, got 0; missing from line 1: '5\\n'"


# lines


@pytest.mark.parametrize(
    "output",
    [b"1\n2\n", b"1\n2", b"1  \n2\t\n", b"1\r\n2\r\n", b"1\n2\n\n\n", b"1\n2\n  \n\r\n"],
    ids=["same", "no-final-newline", "trailing-spaces", "crlf", "trailing-empty-lines", "trailing-blank-lines"],
)
def test_lines_ignores_trailing_whitespace_and_line_endings(output: bytes) -> None:
    assert accepted(LINES, b"1\n2\n", output)


@pytest.mark.parametrize(
    "output",
    [b" 1\n2\n", b"1\n\n2\n", b"1 2\n", b"12\n", b"1\n3\n"],
    ids=["leading-space", "blank-line-inside", "joined", "no-separator", "different"],
)
def test_lines_keeps_what_matters(output: bytes) -> None:
    assert not accepted(LINES, b"1\n2\n", output)


def test_lines_messages() -> None:
    assert wrong(LINES, b"1\n2\n5\n", b"1\n2\n6\n") == "line 3: expected '5', got '6'"
    assert wrong(LINES, b"1\n2\n3\n", b"1\n2\n") == "expected 3 lines, got 2"
    assert wrong(LINES, b"1\n", b"1\n2\n") == "expected 1 line, got 2"
    assert wrong(LINES, b"1\n2\n3\n", b"") == "expected 3 lines, got none"
    assert accepted(LINES, b"", b"\n\n")


def test_lines_cuts_long_values_around_the_difference() -> None:
    expected = b"x" * 5000 + b"A" + b"y" * 5000
    output = b"x" * 5000 + b"B" + b"y" * 5000
    message = wrong(LINES, expected, output)
    assert message.startswith("line 1, column 5001: expected '…")
    assert "A" in message
    assert "B" in message
    assert len(message) < 200


def test_lines_cuts_long_values_at_a_character_boundary() -> None:
    expected = "é".encode() * 100 + b"A"
    output = "é".encode() * 100 + b"B"
    message = wrong(LINES, expected, output)
    assert "\ufffd" not in message
    assert message.startswith("line 1, column 101")


def test_short_values_are_shown_whole() -> None:
    assert wrong(LINES, b"hello world\n", b"hello there\n") == "line 1: expected 'hello world', got 'hello there'"


def test_normal_lines() -> None:
    assert normal_lines(b"a \r\nb\t\n\n  \n") == [b"a", b"b"]
    assert normal_lines(b"") == []
    assert normal_lines(b"\n\na") == [b"", b"", b"a"]


# tokens


def test_tokens_ignores_spacing() -> None:
    assert accepted(TOKENS, b"1 2 3\n", b"1\n2\t 3")
    assert accepted(TOKENS, b"", b"  \n")
    assert not accepted(TOKENS, b"1 2 3", b"1 2 3 4")
    assert not accepted(TOKENS, b"12", b"1 2")


def test_tokens_messages() -> None:
    assert wrong(TOKENS, b"1 2 3 4 5 6 7", b"1 2 3 4 5 6 8") == "token 7: expected '7', got '8'"
    assert wrong(TOKENS, b"1 2 3", b"1 2") == "expected 3 tokens, got 2"
    assert wrong(TOKENS, b"1", b"") == "expected 1 token, got none"


# float


def test_float_within_absolute_tolerance() -> None:
    checker = FloatChecker(abs_tol=0.01, rel_tol=0)
    assert accepted(checker, b"1.5", b"1.509")
    assert accepted(checker, b"0", b"-0.01")
    assert not accepted(checker, b"1.5", b"1.52")


def test_float_within_relative_tolerance_of_the_expected_value() -> None:
    checker = FloatChecker(abs_tol=0, rel_tol=0.01)
    assert accepted(checker, b"1000", b"1009.9")
    assert not accepted(checker, b"1000", b"1011")
    # Relative to the expected value, not to the answer: 0.01 * 100 = 1 allows 101 but not 99.
    assert accepted(checker, b"100", b"99")
    assert not accepted(checker, b"0", b"0.000001")


def test_float_either_tolerance_suffices() -> None:
    checker = FloatChecker(abs_tol=0.5, rel_tol=0.01)
    assert accepted(checker, b"1", b"1.4")  # absolute
    assert accepted(checker, b"1000", b"1009")  # relative
    assert not accepted(checker, b"10", b"10.6")  # neither


def test_float_default_tolerance_and_formats() -> None:
    assert accepted(FLOAT, b"0.333333", b"0.3333333333")
    assert accepted(FLOAT, b"1.5 2", b"1.5000000 2.0")
    assert accepted(FLOAT, b"1e3", b"1000")
    assert accepted(FLOAT, b"-.5", b"-0.5")
    assert not accepted(FLOAT, b"0.333", b"0.334")


def test_float_compares_words_exactly_and_counts_tokens() -> None:
    assert accepted(FLOAT, b"YES 1.0", b"YES 1")
    assert wrong(FLOAT, b"YES 1.0", b"NO 1") == "token 1: expected 'YES', got 'NO'"
    assert wrong(FLOAT, b"1.0", b"one") == "token 1: expected '1.0', got 'one'"
    assert wrong(FLOAT, b"1 2", b"1") == "expected 2 tokens, got 1"
    # Python would read these as numbers; a judge should not.
    assert not accepted(FLOAT, b"10", b"1_0")
    assert not accepted(FLOAT, b"1", b"0x1")


def test_float_message_names_the_token_and_the_difference() -> None:
    message = wrong(FLOAT, b"1 2 3 4 5 6 1.5", b"1 2 3 4 5 6 1.6")
    assert message.startswith("token 7: expected 1.5, got 1.6 (off by 0.1)")


def test_float_nan_and_infinity() -> None:
    assert accepted(FLOAT, b"nan", b"NaN")
    assert accepted(FLOAT, b"inf -inf", b"Infinity -INF")
    assert not accepted(FLOAT, b"nan", b"0")
    assert not accepted(FLOAT, b"0", b"nan")
    assert not accepted(FLOAT, b"inf", b"-inf")
    assert not accepted(FLOAT, b"inf", b"1e308")
    assert not accepted(FloatChecker(abs_tol=1e300, rel_tol=1), b"1", b"inf")
    assert "got inf" in wrong(FLOAT, b"1", b"inf")


# unordered


def test_unordered_accepts_any_order_of_the_same_lines() -> None:
    assert accepted(UNORDERED, b"a\nb\nc\n", b"c\na\nb")
    assert accepted(UNORDERED, b"a\nb\n", b"b  \r\na\r\n\n")
    assert accepted(UNORDERED, b"a\na\nb\n", b"a\nb\na\n")


def test_unordered_counts_duplicates() -> None:
    assert wrong(UNORDERED, b"a\na\nb\n", b"a\nb\nb\n") == "line 'a' appears once, expected 2"
    assert wrong(UNORDERED, b"a\nb\n", b"a\n") == "expected 2 lines, got 1: missing line 'b'"
    assert wrong(UNORDERED, b"a\n", b"a\nz\n") == "expected 1 line, got 2: unexpected line 'z'"
    assert wrong(UNORDERED, b"a\n", b"a\na\n") == "expected 1 line, got 2: line 'a' appears 2 times, expected 1"


# everything


def test_a_custom_checker_is_not_run_here() -> None:
    with pytest.raises(ValueError, match="parse_custom"):
        check(CustomChecker(language="python", code="x"), b"", b"1", b"1")


@pytest.mark.parametrize("checker", [EXACT, LINES, TOKENS, FLOAT, UNORDERED], ids=lambda c: c.type)
def test_every_checker_handles_empty_output(checker: BuiltinChecker) -> None:
    assert accepted(checker, b"", b"")
    assert not accepted(checker, b"42\n", b"")


@pytest.mark.parametrize("checker", [EXACT, LINES, TOKENS, FLOAT, UNORDERED], ids=lambda c: c.type)
def test_multi_megabyte_outputs_are_checked_in_linear_time(checker: BuiltinChecker) -> None:
    lines = 400_000
    expected = b"".join(b"%d 0.5\n" % n for n in range(lines))
    output = expected[:-4] + b"0.7\n"  # the very last value differs
    started = time.perf_counter()
    outcome = check(checker, b"", expected, output)
    elapsed = time.perf_counter() - started
    assert outcome.verdict is Verdict.WA
    assert outcome.message is not None
    assert len(outcome.message) < 200
    assert elapsed < 3, f"{checker.type} took {elapsed:.1f} s on {len(expected)} bytes"


def test_a_difference_deep_in_one_huge_line_is_found_quickly() -> None:
    expected = b"a" * 20_000_000
    output = expected[:-1] + b"b"
    started = time.perf_counter()
    message = wrong(EXACT, expected, output)
    assert time.perf_counter() - started < 2
    assert message.startswith("byte 20000000 (line 1)")


# custom


def test_custom_exit_codes() -> None:
    assert parse_custom(0, None, False, b"") == CheckOutcome(Verdict.AC, 1.0, None)
    assert parse_custom(1, None, False, b"") == CheckOutcome(Verdict.WA, 0.0, None)
    assert parse_custom(3, None, False, b"oops") == CheckOutcome.failed("checker exited 3 (expected 0 or 1)")
    assert parse_custom(None, 9, False, b"") == CheckOutcome.failed("checker was killed by signal 9")
    assert parse_custom(None, 9, True, b"") == CheckOutcome.failed("checker timed out")
    assert parse_custom(0, None, True, b"") == CheckOutcome.failed("checker timed out")
    assert parse_custom(None, None, False, b"").verdict is Verdict.IE


def test_custom_first_line_is_the_message() -> None:
    assert parse_custom(1, None, False, b"  wrong sum: 5 != 6  \ndetails\n").message == "wrong sum: 5 != 6"
    assert parse_custom(0, None, False, b"ok\r\n").message == "ok"
    assert parse_custom(0, None, False, b"\nsecond").message is None
    long = parse_custom(1, None, False, b"z" * 10_000).message
    assert long is not None
    assert len(long) == 500


def test_custom_partial_points() -> None:
    assert parse_custom(0, None, False, b"close\npoints=0.5\n") == CheckOutcome(Verdict.WA, 0.5, "close")
    assert parse_custom(1, None, False, b"points = 0.25") == CheckOutcome(Verdict.WA, 0.25, None)
    assert parse_custom(0, None, False, b"perfect\npoints=1\n") == CheckOutcome(Verdict.AC, 1.0, "perfect")
    assert parse_custom(0, None, False, b"points=0") == CheckOutcome(Verdict.WA, 0.0, None)
    assert parse_custom(0, None, False, b"points=1e-1\r\n").fraction == 0.1
    # Only a line of its own counts as points.
    assert parse_custom(0, None, False, b"my points=0.5 are\n") == CheckOutcome(Verdict.AC, 1.0, "my points=0.5 are")


@pytest.mark.parametrize(
    ("stdout", "exit_code", "message"),
    [
        (b"points=1.5", 0, "checker printed points outside [0, 1]: 1.5"),
        (b"points=-0.1", 0, "checker printed points outside [0, 1]: -0.1"),
        (b"points=inf", 0, "checker printed points outside [0, 1]: inf"),
        (b"points=nan", 0, "checker printed points that are not a number: 'nan'"),
        (b"points=half", 0, "checker printed points that are not a number: 'half'"),
        (b"points=", 0, "checker printed points that are not a number: ''"),
        (b"points=0.5\npoints=0.6", 0, "checker printed points more than once"),
        (b"points=1", 1, "checker exited 1 (wrong answer) but awarded full points"),
    ],
)
def test_custom_points_a_checker_should_not_print_are_internal_errors(
    stdout: bytes, exit_code: int, message: str
) -> None:
    assert parse_custom(exit_code, None, False, stdout) == CheckOutcome.failed(message)
