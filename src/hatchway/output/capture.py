"""A running job's output: written to capped files as it arrives, so the worker's memory stays flat, with the
time each line arrived (`output_times`), and announced to anyone following the job's logs.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from hatchway.models import PROGRAM_STREAMS, Stream
from hatchway.output.line_times import LineClock, LineTimes, recovered


class OutputCapture:
    """An `OutputSink` that keeps at most `cap_bytes` of each stream in a file `<prefix>.<stream>` (no directory
    of its own: making and removing one per job costs more than the rest of a pooled job's bookkeeping), and when
    each line arrived in `<prefix>.<stream>-times`.

    `recovered`: the job is taken up again after a worker restart, and its output is delivered again from the
    start; the lines the last worker had keep the times it recorded.

    `write` is called from engine threads; `on_limit` and follower wake-ups run on the event loop.
    """

    def __init__(
        self,
        prefix: Path,
        *,
        cap_bytes: int,
        loop: asyncio.AbstractEventLoop,
        on_limit: Callable[[], None],
        build: bool = True,
        recovered: bool = False,
    ) -> None:
        prefix.parent.mkdir(parents=True, exist_ok=True)
        self.prefix = prefix
        self._cap = cap_bytes
        self._loop = loop
        self._on_limit = on_limit
        self._lock = threading.Lock()
        # The build stream has a file only for a job that builds something (an image, a grading's program).
        streams = [stream for stream in Stream if build or stream is not Stream.BUILD]
        self._clocks = {stream: self._clock(stream, recovered) for stream in Stream}
        self._files: dict[Stream, BinaryIO] = {s: open(self.path(s), "wb") for s in streams}  # noqa: SIM115
        self._size = dict.fromkeys(Stream, 0)
        self.truncated = dict.fromkeys(Stream, False)
        self._changed = asyncio.Event()
        self.finished = False

    def next_change(self) -> asyncio.Event:
        """An event set when output next arrives or the job finishes; take it *before* reading."""
        return self._changed

    def path(self, stream: Stream) -> Path:
        return self.prefix.with_name(f"{self.prefix.name}.{stream.value}")

    def _clock(self, stream: Stream, recovering: bool) -> LineClock:
        times_path = self.prefix.with_name(f"{self.prefix.name}.{stream.value}-times")
        if not recovering:
            return LineClock(times_path)
        known, lines = recovered(times_path, self.path(stream))
        times_path.unlink(missing_ok=True)  # written again from `known`
        return LineClock(times_path, known, lines)

    def time_of(self, stream: Stream, line: int) -> int | None:
        """When line `line` of `stream` arrived (epoch ms), if known."""
        with self._lock:
            return self._clocks[stream].times.time_of(line)

    def times(self) -> dict[Stream, LineTimes]:
        """The time index of every stream, as it is now."""
        with self._lock:
            return {stream: LineTimes(clock.times) for stream, clock in self._clocks.items()}

    def write(self, stream: Stream, data: bytes) -> None:
        with self._lock:
            room = self._cap - self._size[stream]
            kept = data[: max(room, 0)]
            if kept:
                self._clocks[stream].wrote(kept)  # before the bytes can be read: a reader always finds their time
                if stream not in self._files:
                    self._files[stream] = open(self.path(stream), "wb")  # noqa: SIM115
                self._files[stream].write(kept)
                self._files[stream].flush()
                self._size[stream] += len(kept)
            overflow = len(data) > len(kept) and not self.truncated[stream]
            if overflow:
                self.truncated[stream] = True
        if overflow and stream in PROGRAM_STREAMS:  # a long build log is cut, but stops nothing
            self._loop.call_soon_threadsafe(self._on_limit)
        if kept:
            self._loop.call_soon_threadsafe(self._pulse)

    def text(self, stream: Stream) -> str:
        """Everything kept of `stream`, decoded; bytes that are not UTF-8 become U+FFFD."""
        with self._lock:
            if stream not in self._files:
                return ""
            self._files[stream].flush()
        return self.path(stream).read_bytes().decode(errors="replace")

    def _pulse(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def finish(self) -> None:
        """The job has ended and its output is stored: wake followers and delete the files.

        Followers that opened the files keep reading them to the end (an open file outlives unlink).
        """
        self.finished = True
        self._pulse()
        for stream, handle in self._files.items():
            handle.close()
            self.path(stream).unlink(missing_ok=True)
        with self._lock:
            for clock in self._clocks.values():
                clock.close()
