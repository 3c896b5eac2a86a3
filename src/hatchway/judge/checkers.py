"""Built-in output checkers, and reading what a custom checker answered.

Every built-in checker is a pure function of the expected output and the program's output, linear in their size
(outputs may be megabytes: nothing here diffs). A wrong answer comes with one short message locating the first
difference, e.g. "line 3: expected '5', got '6'", with long values cut to a window around it.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import assert_never

from hatchway.judge.request import (
    BuiltinChecker,
    CustomChecker,
    ExactChecker,
    FloatChecker,
    LinesChecker,
    TokensChecker,
    UnorderedChecker,
)
from hatchway.judge.verdicts import CheckOutcome

_WINDOW = 60  # bytes of a value shown in a message
_BEFORE = 20  # of which before the first difference, when the value is cut
_CHUNK = 4096
_MESSAGE_CHARS = 500
# Plain decimal numbers, infinities and NaN; not Python's extras (underscores, surrounding whitespace).
_NUMBER = re.compile(rb"[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|inf(?:inity)?|nan)", re.IGNORECASE)
_POINTS = re.compile(rb"^[ \t]*points[ \t]*=[ \t]*(\S*)[ \t]*\r?$", re.MULTILINE)


def check(checker: BuiltinChecker | CustomChecker, test_input: bytes, expected: bytes, output: bytes) -> CheckOutcome:
    """Whether `output` is right for a test whose expected output is `expected`, by a built-in checker.

    `test_input` is what the program read; no built-in checker needs it, but it belongs to the checker interface.
    A custom checker is a program the runner runs; read its answer with `parse_custom`.
    """
    if isinstance(checker, CustomChecker):
        raise ValueError("a custom checker runs in the sandbox; read its answer with parse_custom")
    if output == expected:
        return CheckOutcome.accepted()
    if isinstance(checker, ExactChecker):
        return _exact(expected, output)
    if isinstance(checker, LinesChecker):
        return _lines(expected, output)
    if isinstance(checker, TokensChecker):
        return _tokens(expected, output)
    if isinstance(checker, FloatChecker):
        return _floats(expected, output, abs_tol=checker.abs_tol, rel_tol=checker.rel_tol)
    if isinstance(checker, UnorderedChecker):
        return _unordered(expected, output)
    assert_never(checker)


def _exact(expected: bytes, output: bytes) -> CheckOutcome:
    at = _first_difference(expected, output)
    line = expected.count(b"\n", 0, at) + 1
    # Both agree up to `at`, so the line holding the difference starts at the same byte in each.
    start = expected.rfind(b"\n", 0, at) + 1
    want, got = (
        _show(expected[start : at + _WINDOW + 1], at - start),
        _show(output[start : at + _WINDOW + 1], at - start),
    )
    if at < min(len(expected), len(output)):
        return CheckOutcome.wrong(f"byte {at + 1} (line {line}): expected {want}, got {got}")
    if len(output) < len(expected):
        return CheckOutcome.wrong(
            f"expected {len(expected)} bytes, got {len(output)}; missing from line {line}: {want}"
        )
    return CheckOutcome.wrong(
        f"expected {len(expected)} bytes, got {len(output)}; extra output from line {line}: {got}"
    )


def normal_lines(data: bytes) -> list[bytes]:
    """The lines of `data` as the `lines` checker compares them: CRLF or LF, trailing whitespace and trailing empty
    lines dropped."""
    lines = [line.rstrip() for line in data.split(b"\n")]  # rstrip also drops the \r of a CRLF
    while lines and not lines[-1]:
        lines.pop()
    return lines


def _lines(expected: bytes, output: bytes) -> CheckOutcome:
    want, got = normal_lines(expected), normal_lines(output)
    if want == got:
        return CheckOutcome.accepted()
    for number, (line, printed) in enumerate(zip(want, got, strict=False), start=1):
        if line != printed:
            return CheckOutcome.wrong(_differs(f"line {number}", line, printed))
    return CheckOutcome.wrong(_counts(len(want), len(got), "line"))


def _tokens(expected: bytes, output: bytes) -> CheckOutcome:
    want, got = expected.split(), output.split()
    if want == got:
        return CheckOutcome.accepted()
    for number, (token, printed) in enumerate(zip(want, got, strict=False), start=1):
        if token != printed:
            return CheckOutcome.wrong(_differs(f"token {number}", token, printed))
    return CheckOutcome.wrong(_counts(len(want), len(got), "token"))


def _floats(expected: bytes, output: bytes, *, abs_tol: float, rel_tol: float) -> CheckOutcome:
    want, got = expected.split(), output.split()
    for number, (token, printed) in enumerate(zip(want, got, strict=False), start=1):
        if token == printed:
            continue
        value, answer = _number(token), _number(printed)
        if value is None or answer is None:
            return CheckOutcome.wrong(_differs(f"token {number}", token, printed))
        if not _close(value, answer, abs_tol=abs_tol, rel_tol=rel_tol):
            off = f" (off by {abs(answer - value):.3g})" if math.isfinite(answer - value) else ""
            return CheckOutcome.wrong(
                f"token {number}: expected {_cut(token)}, got {_cut(printed)}{off}; "
                f"tolerance {abs_tol:g} absolute or {rel_tol:g} relative"
            )
    if len(want) != len(got):
        return CheckOutcome.wrong(_counts(len(want), len(got), "token"))
    return CheckOutcome.accepted()


def _number(token: bytes) -> float | None:
    return float(token) if _NUMBER.fullmatch(token) else None


def _close(value: float, answer: float, *, abs_tol: float, rel_tol: float) -> bool:
    """Whether `answer` matches the expected `value`: NaN only NaN, an infinity only itself, else within a tolerance."""
    if math.isnan(value) or math.isnan(answer):
        return math.isnan(value) and math.isnan(answer)
    if math.isinf(value) or math.isinf(answer):
        return value == answer
    difference = abs(answer - value)
    return difference <= abs_tol or difference <= rel_tol * abs(value)


def _unordered(expected: bytes, output: bytes) -> CheckOutcome:
    want_lines, got_lines = normal_lines(expected), normal_lines(output)
    want, got = Counter(want_lines), Counter(got_lines)
    # dict's own comparison runs in C; Counter's is a Python loop. Counts built from lists hold no zeros.
    if dict.__eq__(want, got):
        return CheckOutcome.accepted()
    counts = "" if len(want_lines) == len(got_lines) else _counts(len(want_lines), len(got_lines), "line") + ": "
    missing = next((line for line in want_lines if got.get(line, 0) < want[line]), None)
    if missing is not None:
        if missing not in got:
            return CheckOutcome.wrong(f"{counts}missing line {_show(missing)}")
        return CheckOutcome.wrong(
            f"{counts}line {_show(missing)} appears {_times(got[missing])}, expected {want[missing]}"
        )
    extra = next(line for line in got_lines if want.get(line, 0) < got[line])
    if extra not in want:
        return CheckOutcome.wrong(f"{counts}unexpected line {_show(extra)}")
    return CheckOutcome.wrong(f"{counts}line {_show(extra)} appears {_times(got[extra])}, expected {want[extra]}")


def parse_custom(exit_code: int | None, signal: int | None, timed_out: bool, stdout: bytes) -> CheckOutcome:
    """What a custom checker answered.

    Exit 0 accepts, exit 1 refuses; a timeout, a signal or any other exit is an internal error (IE), not the
    program's fault. The first line printed is the message shown with the verdict (none if it is the points line).
    A line `points=F`, anywhere, with F a number in [0, 1], awards that fraction of the test's points: the verdict
    stays AC only for F = 1 and becomes WA below. Printing points twice, points outside [0, 1], or exiting 1 while
    awarding full points are checker bugs, hence IE.
    """
    if timed_out:
        return CheckOutcome.failed("checker timed out")
    if signal is not None:
        return CheckOutcome.failed(f"checker was killed by signal {signal}")
    if exit_code not in (0, 1):
        return CheckOutcome.failed(
            "checker reported no exit code" if exit_code is None else f"checker exited {exit_code} (expected 0 or 1)"
        )
    first = stdout.split(b"\n", 1)[0]
    message = None if _POINTS.fullmatch(first) else _cut(first.strip(), _MESSAGE_CHARS) or None
    printed = [match.group(1) for match in _POINTS.finditer(stdout)]
    if len(printed) > 1:
        return CheckOutcome.failed("checker printed points more than once")
    if not printed:
        return CheckOutcome.accepted(message) if exit_code == 0 else CheckOutcome.wrong(message)
    fraction = _number(printed[0])
    if fraction is None or math.isnan(fraction):
        return CheckOutcome.failed(f"checker printed points that are not a number: {_show(printed[0])}")
    if not 0.0 <= fraction <= 1.0:
        return CheckOutcome.failed(f"checker printed points outside [0, 1]: {_cut(printed[0])}")
    if fraction == 1.0:
        if exit_code == 1:
            return CheckOutcome.failed("checker exited 1 (wrong answer) but awarded full points")
        return CheckOutcome.accepted(message)
    return CheckOutcome.wrong(message, fraction)


def _first_difference(a: bytes, b: bytes) -> int:
    """The index of the first byte where `a` and `b` differ, or the length of the shorter if one starts the other."""
    end = min(len(a), len(b))
    start = 0
    while start < end and a[start : start + _CHUNK] == b[start : start + _CHUNK]:  # compared in C, chunk by chunk
        start += _CHUNK
    for index in range(start, min(start + _CHUNK, end)):
        if a[index] != b[index]:
            return index
    return end


def _differs(where: str, want: bytes, got: bytes) -> str:
    at = _first_difference(want, got)
    column = f", column {len(want[:at].decode('utf-8', 'replace')) + 1}" if _window_start(want, at) else ""
    return f"{where}{column}: expected {_show(want, at)}, got {_show(got, at)}"


def _window_start(data: bytes, at: int) -> int:
    if len(data) <= _WINDOW or at < _WINDOW - _BEFORE:
        return 0
    start = at - _BEFORE
    while start > 0 and data[start] & 0xC0 == 0x80:  # back to the start of a UTF-8 character
        start -= 1
    return start


def _show(data: bytes, at: int = 0) -> str:
    """`data` quoted, cut to a window around byte `at` with '…' where it was cut."""
    start = _window_start(data, at)
    end = start + _WINDOW
    while start < end < len(data) and data[end] & 0xC0 == 0x80:
        end -= 1
    text = data[start:end].decode("utf-8", "replace")
    return repr(("…" if start else "") + text + ("…" if end < len(data) else ""))


def _cut(data: bytes, limit: int = _WINDOW) -> str:
    """`data` as text, unquoted, cut to `limit` characters."""
    text = data[: limit * 4].decode("utf-8", "replace")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _counts(want: int, got: int, noun: str) -> str:
    return f"expected {want} {noun}{'' if want == 1 else 's'}, got {got if got else 'none'}"


def _times(count: int) -> str:
    return "once" if count == 1 else f"{count} times"
