"""Reading a job's output: what it wrote so far, or everything live until it ends (`follow`); with a `LogFilter`,
only the lines it keeps (matching `grep`, written between `since` and `until`), whole lines at a time."""

from __future__ import annotations

import asyncio
import codecs
import contextlib
from collections.abc import AsyncIterator
from typing import BinaryIO

from hatchway.jobs.service import JobService
from hatchway.models import Job, Stream
from hatchway.output.capture import OutputCapture
from hatchway.output.line_times import LineTimes, now_ms
from hatchway.output.log_filter import LogFilter

_IDLE_CHECK_S = 1.0
_READ_BYTES = 64 * 1024


async def job_logs(
    jobs: JobService,
    job_id: str,
    streams: list[Stream],
    *,
    tail: int | None,
    follow: bool,
    only: LogFilter | None = None,
) -> AsyncIterator[str]:
    """Yield the job's output as text. With `follow`, keep yielding new output until the job ends. With `only`,
    just the lines it keeps (`tail` then counts those), and with `follow` each line once it is complete.

    Raises JobNotFound before yielding anything if there is no such job.
    """
    while True:
        with jobs.signals.watching(job_id) as changed:
            job = await jobs.get(job_id)
            capture = jobs.capture(job_id)
            files = _open(capture, streams) if capture is not None and not job.state.is_final else None
            if files is not None:
                break
            if job.state.is_final or not follow:
                if only is None:
                    yield _stored(job, streams, tail)
                else:
                    times = await jobs.output_times(job_id) if job.state.is_final else {}
                    yield _stored_lines(job, times, streams, tail, only)
                return
            await jobs.signals.wait(changed, _IDLE_CHECK_S)  # queued: wait for it to start
    assert capture is not None
    try:
        live = (
            _live(capture, files, tail=tail, follow=follow)
            if only is None
            else _Lines(capture, files, only).follow(tail=tail, follow=follow)
        )
        async for text in live:
            yield text
    finally:
        for handle in files.values():
            handle.close()


def _open(capture: OutputCapture, streams: list[Stream]) -> dict[Stream, BinaryIO] | None:
    opened: dict[Stream, BinaryIO] = {}
    try:
        for stream in streams:
            opened[stream] = open(capture.path(stream), "rb")  # noqa: SIM115
    except FileNotFoundError:  # it finished this instant; its stored result is complete
        for handle in opened.values():
            handle.close()
        return None
    return opened


async def _live(
    capture: OutputCapture, files: dict[Stream, BinaryIO], *, tail: int | None, follow: bool
) -> AsyncIterator[str]:
    decoders = {stream: codecs.getincrementaldecoder("utf-8")(errors="replace") for stream in files}
    first = "".join(_tail(decoders[s].decode(f.read()), tail) for s, f in files.items())
    if first:
        yield first
    while follow:
        changed = capture.next_change()
        finished = capture.finished
        text = "".join(decoders[s].decode(f.read(_READ_BYTES)) for s, f in files.items())
        if text:
            yield text
            continue
        if finished:
            rest = "".join(decoder.decode(b"", final=True) for decoder in decoders.values())
            if rest:
                yield rest
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), _IDLE_CHECK_S)


def _stored(job: Job, streams: list[Stream], tail: int | None) -> str:
    texts = {Stream.STDOUT: job.stdout, Stream.STDERR: job.stderr, Stream.BUILD: job.build_output}
    return "".join(_tail(texts[stream], tail) for stream in streams)


def _stored_lines(
    job: Job, times: dict[Stream, LineTimes], streams: list[Stream], tail: int | None, only: LogFilter
) -> str:
    texts = {Stream.STDOUT: job.stdout, Stream.STDERR: job.stderr, Stream.BUILD: job.build_output}
    chosen: list[str] = []
    for stream in streams:
        index = times.get(stream, LineTimes())
        kept = [
            line for number, line in enumerate(_split(texts[stream])) if only.keeps(_bare(line), index.time_of(number))
        ]
        chosen += _last(kept, tail)
    return "".join(chosen)


class _Lines:
    """The lines of a live job's output that a filter keeps, read from its files as they grow. A line is judged
    once it is complete (or the job has ended, or, without `follow`, as far as it goes now)."""

    def __init__(self, capture: OutputCapture, files: dict[Stream, BinaryIO], only: LogFilter) -> None:
        self._capture = capture
        self._files = files
        self._only = only
        self._partial = dict.fromkeys(files, b"")
        self._number = dict.fromkeys(files, 0)  # of the next line to read
        self._past_until: set[Stream] = set()
        self._read_bytes = 0

    async def follow(self, *, tail: int | None, follow: bool) -> AsyncIterator[str]:
        first = [line for stream in self._files for line in _last(self._read(stream, -1, to_end=not follow), tail)]
        if first:
            yield "".join(first)
        while follow:
            changed = self._capture.next_change()
            finished = self._capture.finished
            before = self._read_bytes
            text = "".join(line for stream in self._files for line in self._read(stream, _READ_BYTES, to_end=False))
            if text:
                yield text
            if self._read_bytes > before:
                continue
            # Once the clock is past `until`, nothing written from now on is wanted.
            over = len(self._past_until) == len(self._files) or self._only.past_until(now_ms())
            if finished or over:
                rest = "".join(line for stream in self._files for line in self._read(stream, -1, to_end=True))
                if rest:
                    yield rest
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), _IDLE_CHECK_S)

    def _read(self, stream: Stream, size: int, *, to_end: bool) -> list[str]:
        """The kept lines among those completed by reading up to `size` more bytes (-1: all there is); with
        `to_end`, the last, unfinished line too."""
        more = self._files[stream].read(size)
        self._read_bytes += len(more)
        *complete, rest = (self._partial[stream] + more).split(b"\n")
        self._partial[stream] = b"" if to_end else rest
        raw_lines = [line + b"\n" for line in complete] + ([rest] if to_end and rest else [])
        kept: list[str] = []
        for raw in raw_lines:
            line = raw.decode(errors="replace")
            ms = self._capture.time_of(stream, self._number[stream])
            self._number[stream] += 1
            if ms is not None and self._only.past_until(ms):
                self._past_until.add(stream)
            if self._only.keeps(_bare(line), ms):
                kept.append(line)
        return kept


def _split(text: str) -> list[str]:
    """`text` in lines, each with its newline: lines end at "\\n" only, as the time index counts them."""
    parts = text.split("\n")
    return [part + "\n" for part in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


def _bare(line: str) -> str:
    return line[:-1] if line.endswith("\n") else line


def _last(lines: list[str], count: int | None) -> list[str]:
    if count is None:
        return lines
    return lines[-count:] if count else []


def _tail(text: str, lines: int | None) -> str:
    if lines is None or not text:
        return text
    if lines == 0:
        return ""
    kept = text.splitlines(keepends=True)[-lines:]
    return "".join(kept)
