"""When each output line was written: the index as bytes arrive, its storage form, what a restart keeps, and the
log filter that reads it."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from hatchway.output.line_times import LineClock, LineTimes, recovered
from hatchway.output.log_filter import compile_pattern, log_filter, parse_time

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
NOW_MS = 1_714_564_800_000


def test_lines_take_the_time_their_first_byte_arrived(tmp_path: Path) -> None:
    clock = LineClock(tmp_path / "out-times")
    clock.wrote(b"one\ntw", ms=100)  # lines 0 and 1 begin
    clock.wrote(b"o\n", ms=200)  # line 1 goes on; none begins
    clock.wrote(b"three\nfour\n", ms=300)  # lines 2 and 3
    clock.wrote(b"five", ms=300)  # same millisecond: nothing new to say
    clock.wrote(b"\nsix\n", ms=400)
    times = clock.times
    assert list(times) == [(0, 100), (2, 300), (5, 400)]
    assert [times.time_of(line) for line in range(6)] == [100, 100, 300, 300, 300, 400]
    assert LineTimes.decode(times.encode()).time_of(4) == 300
    assert (tmp_path / "out-times").read_text() == "0 100\n2 300\n5 400\n"
    clock.close()
    assert not (tmp_path / "out-times").exists()


def test_an_index_without_entries_knows_no_time() -> None:
    assert LineTimes().time_of(0) is None
    assert LineTimes.decode([]).encode() == []


def test_a_restart_keeps_the_times_of_the_lines_it_had(tmp_path: Path) -> None:
    output, times_file = tmp_path / "job.stdout", tmp_path / "job.stdout-times"
    before = LineClock(times_file)
    for ms, chunk in ((100, b"a\n"), (200, b"b\n"), (300, b"c\n")):
        before.wrote(chunk, ms=ms)
        with output.open("ab") as file:
            file.write(chunk)
    before.wrote(b"d\n", ms=400)  # indexed, but the worker died before the bytes reached the file
    known, lines = recovered(times_file, output)
    before.close()  # the dead worker's file, as far as the test goes
    assert lines == 3 and list(known) == [(0, 100), (1, 200), (2, 300)]
    # The new worker is sent everything again: the lines it knew keep their times, the rest take the new one.
    after = LineClock(times_file, known, lines)
    after.wrote(b"a\nb\nc\nd\ne\n", ms=900)
    assert [after.times.time_of(line) for line in range(5)] == [100, 200, 300, 900, 900]
    assert times_file.read_text() == "0 100\n1 200\n2 300\n3 900\n"
    after.close()


@pytest.mark.timeout(10)
def test_a_catastrophic_pattern_runs_in_linear_time() -> None:
    pattern = compile_pattern("(a+)+$")
    assert pattern.search("a" * 200_000 + "b") is None
    assert pattern.search("xaaa") is not None


@pytest.mark.parametrize(
    ("pattern", "says"),
    [("(a", "missing )"), (r"(a)\1", "invalid escape"), ("x" * 1001, "at most 1000"), ("(?<=a)b", "not a regular")],
)
def test_a_bad_pattern_is_refused_with_a_reason(pattern: str, says: str) -> None:
    with pytest.raises(ValueError, match="grep") as refused:
        compile_pattern(pattern)
    assert says in str(refused.value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-05-01T12:00:00Z", NOW_MS),
        ("2024-05-01T14:00:00.250+02:00", NOW_MS + 250),
        ("1714564800", NOW_MS),
        ("1714564800.5", NOW_MS + 500),
        ("10m", NOW_MS - 600_000),
        ("1h30m", NOW_MS - 5_400_000),
        ("250ms", NOW_MS - 250),
    ],
)
def test_times_are_rfc3339_unix_seconds_or_durations_ago(value: str, expected: int) -> None:
    assert parse_time(value, "since", NOW) == expected


@pytest.mark.parametrize("value", ["yesterday", "2024-05-01", "2024-05-01T12:00:00", "10 minutes", "nan", ""])
def test_a_bad_time_is_refused_naming_the_parameter(value: str) -> None:
    with pytest.raises(ValueError, match=r"^until "):
        parse_time(value, "until", NOW)


def test_the_filter_keeps_matching_lines_in_the_range() -> None:
    assert log_filter(None, None, None) is None
    only = log_filter("err", "2024-05-01T12:00:00Z", "2024-05-01T12:00:01Z", NOW)
    assert only is not None
    assert only.keeps("an error", NOW_MS) and only.keeps("error", NOW_MS + 1000)
    assert not only.keeps("fine", NOW_MS)
    assert not only.keeps("error", NOW_MS - 1) and not only.keeps("error", NOW_MS + 1001)
    assert not only.keeps("error", None), "a line of unknown time is outside any range"
    grep_only = log_filter("err", None, None, NOW)
    assert grep_only is not None and grep_only.keeps("error", None)
