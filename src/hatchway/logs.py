"""Reading a job's output: what it wrote so far, or everything live until it ends (`follow`)."""

from __future__ import annotations

import asyncio
import codecs
import contextlib
from collections.abc import AsyncIterator
from typing import BinaryIO

from hatchway.models import Job, Stream
from hatchway.output import OutputCapture
from hatchway.worker import Worker

_IDLE_CHECK_S = 1.0
_READ_BYTES = 64 * 1024


async def job_logs(
    worker: Worker, job_id: str, streams: list[Stream], *, tail: int | None, follow: bool
) -> AsyncIterator[str]:
    """Yield the job's output as text. With `follow`, keep yielding new output until the job ends.

    Raises JobNotFound before yielding anything if there is no such job.
    """
    while True:
        with worker.jobs.signals.watching(job_id) as changed:
            job = await worker.jobs.get(job_id)
            capture = worker.jobs.capture(job_id)
            files = _open(capture, streams) if capture is not None and not job.state.is_final else None
            if files is not None:
                break
            if job.state.is_final or not follow:
                yield _stored(job, streams, tail)
                return
            await worker.jobs.signals.wait(changed, _IDLE_CHECK_S)  # queued: wait for it to start
    assert capture is not None
    try:
        async for text in _live(capture, files, tail=tail, follow=follow):
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


def _tail(text: str, lines: int | None) -> str:
    if lines is None or not text:
        return text
    if lines == 0:
        return ""
    kept = text.splitlines(keepends=True)[-lines:]
    return "".join(kept)
