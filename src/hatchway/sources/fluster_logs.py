"""A Fluster job's logs as FetchLogs gives them (docs/fluster-plan.md, "FetchLogs"): every line of its build,
stdout and stderr as an entry (timestamp_ms, source, data), in time order, then the request's filter applied the
way the real worker's service applies it: `start_line` as a Python slice (negative: the last N), `start_ms`
exclusive, `end_ms` inclusive, `regex`, and `max_lines` ending the scan. Zero means "not given", as there.

One thing differs on purpose: the pattern runs on RE2 (hatchway's log filter), not Python's `re`, so a caller
cannot make the worker spin on a catastrophic pattern; one RE2 cannot read is an `invalid_argument`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from hatchway.fluster.proto import cluster_pb2 as pb
from hatchway.models import Stream
from hatchway.output.line_times import LineTimes
from hatchway.output.log_filter import compile_pattern

_SOURCES = (Stream.BUILD, Stream.STDOUT, Stream.STDERR)


@dataclass(frozen=True)
class Entry:
    """One line of a job's output."""

    timestamp_ms: int
    source: str
    data: str


def entries(texts: Mapping[Stream, str], times: Mapping[Stream, LineTimes], unknown_ms: int) -> list[Entry]:
    """Every line of `texts` (without its newline), with its time from `times` (`unknown_ms` where none is
    known), sorted by time; lines of one time keep their order, build before stdout before stderr."""
    found: list[Entry] = []
    for stream in _SOURCES:
        index = times.get(stream, LineTimes())
        last = unknown_ms
        for number, line in enumerate(_lines(texts.get(stream, ""))):
            ms = index.time_of(number)
            last = ms if ms is not None else last  # an untimed line follows the one before it
            found.append(Entry(last, stream.value, line))
    return sorted(found, key=lambda entry: entry.timestamp_ms)


def _lines(text: str) -> list[str]:
    lines = text.split("\n")
    return lines[:-1] if lines and lines[-1] == "" else lines


def filtered(found: list[Entry], request: pb.Worker.FetchLogsFilter) -> list[Entry]:
    """The entries `request` keeps, in order. Raises ValueError for a pattern RE2 cannot run."""
    pattern = compile_pattern(request.regex) if request.regex else None
    chosen: Iterable[Entry] = found[request.start_line :] if request.start_line else found
    kept: list[Entry] = []
    for entry in chosen:
        if request.max_lines and len(kept) >= request.max_lines:
            break
        if request.start_ms and entry.timestamp_ms <= request.start_ms:
            continue
        if request.end_ms and entry.timestamp_ms > request.end_ms:
            continue
        if pattern is not None and pattern.search(entry.data) is None:
            continue
        kept.append(entry)
    return kept


def log_entries(kept: list[Entry]) -> list[pb.Worker.LogEntry]:
    return [pb.Worker.LogEntry(timestamp_ms=e.timestamp_ms, source=e.source, data=e.data) for e in kept]
