"""A plain job run in a pooled container: its command handed to the container's supervisor, its output followed
from the files the supervisor writes, and stopping it with the supervisor's signals.

The runner drives it exactly like an engine's own sandbox (`wait`, `stop`, `resources`, `remove`), so a pooled
job's outcome is decided by the same code as a cold one's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from hatchway.engines.base import ExitStatus, Handle, OutputSink, Process
from hatchway.errors import EngineError, HatchwayError, RunNeverStarted
from hatchway.models import PROGRAM_STREAMS, ResolvedLimits, Resources, Stream
from hatchway.pools.containers import IO_DIR, WORKDIR
from hatchway.pools.manager import Pools
from hatchway.pools.slot import Slot
from hatchway.sandbox.protocol import RunRequest, RunResult, RunStatus

log = logging.getLogger(__name__)

MIB = 1024 * 1024
_TAIL_INTERVAL_S = 0.02
_READ_BYTES = 256 * 1024
_KILL_WAIT_S = 5.0
# A safety net only: the runner stops a job at its timeout; this ends the run should the worker be gone.
_WALL_MARGIN_S = 5.0


class PooledRuns:
    """Runs jobs in pooled containers; the runner's stand-in for an engine while one runs."""

    def __init__(self, pools: Pools) -> None:
        self._pools = pools
        self._slots: dict[str, Slot] = {}

    async def start(
        self, slot: Slot, process: Process, limits: ResolvedLimits, sink: OutputSink, *, uid: int, gid: int
    ) -> Handle:
        """Hand the job's command to the container's supervisor; its files are in place already."""
        stdin_path = None
        if process.stdin is not None:
            stdin_path = f"{IO_DIR}/stdin"
            await asyncio.to_thread(_write_private, slot.volume.io / "stdin", process.stdin)
        request = RunRequest(
            argv=tuple(process.argv),
            uid=uid,
            gid=gid,
            id=slot.job_id or "",
            env={**slot.environment, **process.env},
            wall_time_s=limits.timeout_s + _WALL_MARGIN_S,
            memory_bytes=limits.memory_mb * MIB,
            processes=limits.pids,
            stdin_path=stdin_path,
            stdout_path=f"{IO_DIR}/stdout",
            stderr_path=f"{IO_DIR}/stderr",
            cwd=WORKDIR,
        )
        slot.keep_bytes = limits.output_bytes + 1
        self._follow(slot, slot.engine.run(slot.handle, request), sink)
        self._slots[slot.handle.ref] = slot
        return slot.handle

    def adopt(self, slot: Slot, sink: OutputSink, output_bytes: int) -> Handle:
        """Take up a job whose pooled container outlived a worker restart: its run is found again, and its output
        read from the start of its files."""
        slot.keep_bytes = output_bytes + 1
        self._follow(slot, slot.engine.reattach(slot.handle, slot.job_id or ""), sink)
        self._slots[slot.handle.ref] = slot
        return slot.handle

    def _follow(self, slot: Slot, run: Coroutine[Any, Any, RunResult], sink: OutputSink) -> None:
        slot.run = asyncio.ensure_future(run)
        slot.tail = asyncio.ensure_future(_follow(slot.volume.io, sink, slot.run, slot.keep_bytes, slot.offsets))

    async def wait(self, handle: Handle, sink: OutputSink) -> ExitStatus:
        slot = self._slots[handle.ref]
        assert slot.run is not None and slot.tail is not None
        if slot.run.done() and slot.run.exception() is not None and not slot.stopped:
            # Waited for again after the connection broke (the engine restarted): find the run again; its
            # output goes on from where it was.
            self._follow(slot, slot.engine.reattach(handle, slot.job_id or ""), sink)
        try:
            result = await asyncio.shield(slot.run)
        except HatchwayError as exc:
            await slot.tail
            self._pools.lost(slot, f"the supervisor failed: {exc}")
            if isinstance(exc, RunNeverStarted):
                raise
            if slot.stopped:  # we killed the container to stop the job
                return ExitStatus(exit_code=137, oom_killed=False)
            raise EngineError(f"the pooled container failed while it ran the job: {exc}") from exc
        await slot.tail
        slot.result = result
        if result.status == RunStatus.SETUP_FAILED:
            self._pools.lost(slot, f"the supervisor could not set up the run: {result.error}")
            raise EngineError(f"the pooled container could not start the job: {result.error}")
        return _exit_status(result)

    async def stop(self, handle: Handle, grace_s: float) -> None:
        """SIGTERM to the job's processes, SIGKILL after `grace_s`; the container itself only if the supervisor
        does not answer."""
        slot = self._slots[handle.ref]
        assert slot.run is not None
        slot.stopped = True
        if grace_s > 0:
            await slot.engine.signal(handle, "SIGTERM")
            if await _ended(slot.run, grace_s):
                return
        await slot.engine.signal(handle, "SIGUSR1")
        if not await _ended(slot.run, _KILL_WAIT_S):
            log.warning("a pooled container did not stop its run; killing it", extra={"event": "pool_kill"})
            await slot.engine.stop(handle, 0)

    def resources(self, handle: Handle) -> Resources:
        slot = self._slots.get(handle.ref)
        if slot is None or slot.result is None:
            return Resources()
        return Resources(peak_memory_bytes=slot.result.memory_bytes, cpu_s=round(slot.result.cpu_s, 3))

    async def remove(self, handle: Handle) -> None:
        """Give the container back to its pool, which resets or replaces it in the background."""
        slot = self._slots.pop(handle.ref, None)
        if slot is not None:
            await self._pools.release(slot)


async def _ended(run: asyncio.Task[RunResult], within_s: float) -> bool:
    with contextlib.suppress(TimeoutError, HatchwayError):
        await asyncio.wait_for(asyncio.shield(run), within_s)
    return run.done()


def _exit_status(result: RunResult) -> ExitStatus:
    if result.status == RunStatus.SIGNALED and result.signal is not None:
        code = 128 + result.signal
    else:
        code = result.exit_code if result.exit_code is not None else 1
    message = None
    if result.status == RunStatus.EXEC_FAILED:
        message = f"the command could not be started: {result.error}"
    return ExitStatus(exit_code=code, oom_killed=result.oom_killed, message=message)


async def _follow(
    io_dir: Path, sink: OutputSink, run: asyncio.Task[RunResult], keep_bytes: int, offsets: dict[Stream, int]
) -> None:
    """Copy what the supervisor writes to the job's stdout and stderr files into the sink, as it comes, until
    the run has ended and everything is read; past `keep_bytes` of a stream (the sink's cap, and one byte to tell
    it was passed) the rest is not read."""
    files: dict[Stream, int] = {}
    try:
        while True:
            finished = run.done()
            for stream in PROGRAM_STREAMS:
                if stream not in files:
                    with contextlib.suppress(FileNotFoundError):
                        files[stream] = os.open(io_dir / stream.value, os.O_RDONLY | os.O_CLOEXEC)
                if stream in files:
                    wanted = keep_bytes - offsets.setdefault(stream, 0)
                    if wanted > 0:
                        offsets[stream] += _copy(files[stream], offsets[stream], wanted, stream, sink, to_end=finished)
            if finished:
                return
            with contextlib.suppress(TimeoutError, HatchwayError):
                await asyncio.wait_for(asyncio.shield(run), _TAIL_INTERVAL_S)
    finally:
        for fd in files.values():
            os.close(fd)


def _copy(fd: int, offset: int, wanted: int, stream: Stream, sink: OutputSink, *, to_end: bool) -> int:
    """Pass on up to `wanted` bytes the file holds past `offset` (one read's worth unless `to_end`)."""
    copied = 0
    while copied < wanted:
        data = os.pread(fd, min(_READ_BYTES, wanted - copied), offset + copied)
        if not data:
            break
        sink.write(stream, data)
        copied += len(data)
        if not to_end:
            break
    return copied


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    with open(fd, "wb") as file:
        file.write(data)
