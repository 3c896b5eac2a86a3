"""When each line of a job's output was written: a compact index kept beside the output, so that logs can be cut
by time (`since`, `until`) while the job runs and after it has ended.

A line's time is when the worker received its first byte (lines that arrive in one chunk share that chunk's
time), in whole milliseconds. The index holds one entry `(line, ms)` where the time moves on: "from line `line`
on, lines were received at `ms` or later". Entries are made at most once per millisecond, and past
`_FINE_ENTRIES` at most once a second, so the index of even a long, chatty job stays small; a line between two
entries takes the earlier entry's time.

Lines are numbered by the newline bytes before them (line 0 is the first), which decoding never changes: an index
made from the bytes fits the stored text as well.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TextIO

_FINE_ENTRIES = 50_000
_COARSE_MS = 1000


class LineTimes:
    """The time index of one stream: `(first line, epoch ms)` entries, lines and times never decreasing."""

    def __init__(self, entries: Iterable[tuple[int, int]] = ()) -> None:
        self._lines: list[int] = []
        self._ms: list[int] = []
        for line, ms in entries:
            self.add(line, ms)

    def __len__(self) -> int:
        return len(self._lines)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return zip(self._lines, self._ms, strict=True)

    def __repr__(self) -> str:
        return f"LineTimes({list(self)!r})"

    def add(self, line: int, ms: int) -> bool:
        """Line `line` (and those after it) began at `ms`; False if that says nothing new enough to keep."""
        if self._lines:
            if line <= self._lines[-1]:
                return False
            step = ms - self._ms[-1]
            if step <= 0 or (len(self._lines) >= _FINE_ENTRIES and step < _COARSE_MS):
                return False
        self._lines.append(line)
        self._ms.append(ms)
        return True

    def time_of(self, line: int) -> int | None:
        """When line `line` was written (epoch ms), or None if the index does not say."""
        at = bisect.bisect_right(self._lines, line) - 1
        return self._ms[at] if at >= 0 else None

    def before(self, lines: int) -> LineTimes:
        """The entries of lines below `lines` only."""
        return LineTimes(entry for entry in self if entry[0] < lines)

    def encode(self) -> list[int]:
        """A flat list of deltas, `[line0, ms0, line1 - line0, ms1 - ms0, ...]`: small numbers, for storage."""
        flat: list[int] = []
        last_line = last_ms = 0
        for line, ms in self:
            flat += [line - last_line, ms - last_ms]
            last_line, last_ms = line, ms
        return flat

    @classmethod
    def decode(cls, flat: list[int]) -> LineTimes:
        """The index `encode` made `flat` from."""
        entries: list[tuple[int, int]] = []
        line = ms = 0
        for at in range(0, len(flat) - 1, 2):
            line, ms = line + flat[at], ms + flat[at + 1]
            entries.append((line, ms))
        return cls(entries)


class LineClock:
    """Indexes one stream as its bytes arrive, and appends each entry to a file `path` beside the output, so a
    worker that restarts knows when the lines it had were written. Not thread-safe: the caller holds a lock."""

    def __init__(self, path: Path, known: LineTimes | None = None, known_lines: int = 0) -> None:
        self.times = known or LineTimes()
        self._path = path
        self._next_line = 0  # the number of the next line to begin
        self._at_line_start = True
        self._known_lines = known_lines
        self._file: TextIO | None = None
        self._closed = False
        if len(self.times):
            self._append(self.times)

    def wrote(self, data: bytes, ms: int | None = None) -> None:
        """`data` was just received (call before it becomes visible in the output file)."""
        if not data:
            return
        newlines = data.count(b"\n")
        ends_line = data.endswith(b"\n")
        begun = newlines - ends_line + self._at_line_start
        first = self._next_line
        self._next_line += begun
        self._at_line_start = ends_line
        if begun == 0 or self._next_line <= self._known_lines:
            return  # no line begins here, or only lines a restart already knew the time of
        line, ms = max(first, self._known_lines), now_ms() if ms is None else ms
        if self.times.add(line, ms):
            self._append([(line, ms)])

    def _append(self, entries: Iterable[tuple[int, int]]) -> None:
        if self._closed:
            return
        if self._file is None:  # made afresh: what a file left here held is in `known` already
            self._file = open(self._path, "w")  # noqa: SIM115
        self._file.write("".join(f"{line} {ms}\n" for line, ms in entries))
        self._file.flush()

    def close(self) -> None:
        """The output is stored: remove the file (the index itself stays readable)."""
        self._closed = True
        if self._file is not None:
            self._file.close()
            self._path.unlink(missing_ok=True)


def recovered(times_path: Path, output_path: Path) -> tuple[LineTimes, int]:
    """What a worker that restarted knows of a stream it had been capturing: the index its file held, for the
    lines the output file holds, and how many lines that is (output written while the worker was down is read
    back by the new worker, and takes the time it is received)."""
    try:
        data = output_path.read_bytes()
    except FileNotFoundError:
        return LineTimes(), 0
    lines = data.count(b"\n") + (bool(data) and not data.endswith(b"\n"))
    entries: list[tuple[int, int]] = []
    try:
        for row in times_path.read_text().splitlines():
            line, _, ms = row.partition(" ")
            if line.isdigit() and ms.isdigit():
                entries.append((int(line), int(ms)))
    except FileNotFoundError:
        pass
    return LineTimes(entries).before(lines), lines


def now_ms() -> int:
    """The current time in epoch milliseconds."""
    return time.time_ns() // 1_000_000
