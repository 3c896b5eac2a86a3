"""The sandboxes of a grading: compiling in a fresh one, and the prepared ones its tests and checker run in."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from hatchway.engines.base import CommandNotRunnable, Engine, Handle, Mount, Process, Role, SandboxSpec
from hatchway.grading.models import COMPILE_OUTPUT_CHARS, CompileResult
from hatchway.grading.profiles import Profile
from hatchway.models import Stream
from hatchway.runner import RunControl
from hatchway.sandbox.protocol import RunRequest, RunResult

MIB = 1024 * 1024
BOX = "/box"
IO = "/.hatchway/io"
"""Where the supervisor writes a run's stdout and stderr (root-only: runs see only their own descriptors)."""
TESTS = "/.hatchway/tests"
"""Where the tests' inputs are (root-only: the supervisor opens each run's input for it)."""
SCRATCH = "/w"
_SUPERVISOR_SLACK_MB = 64
"""The sandbox's memory above the largest run's: the supervisor and its tmpfs bookkeeping."""


class GradingKilled(Exception):
    """A client (or shutdown) killed the grading while a sandbox ran; the sandbox is stopped."""


@dataclass
class Sandboxes:
    """Every sandbox a grading made, so that all of them go whatever happens."""

    engine: Engine
    control: RunControl
    owner: str
    user: str
    handles: list[Handle] = field(default_factory=list)
    _removals: list[asyncio.Future[None]] = field(default_factory=list)

    async def open(
        self, *, role: Role, image: str, memory_mb: int, processes: int, mounts: tuple[Mount, ...]
    ) -> Handle:
        """A prepared sandbox whose supervisor runs each process; its scratch and /tmp hold at most its memory."""
        handle = await self.engine.open(
            SandboxSpec(
                owner=self.owner,
                role=role,
                image=image,
                user=self.user,
                memory_mb=memory_mb + _SUPERVISOR_SLACK_MB,
                cpus=1.0,
                pids=processes + 16,
                log_bytes=64 * 1024,
                mounts=mounts,
                tmpfs={"/tmp": memory_mb, SCRATCH: memory_mb},
            )
        )
        self.handles.append(handle)
        return handle

    async def run(self, handle: Handle, request: RunRequest) -> RunResult:
        """Run one process; a kill meanwhile stops the sandbox and raises GradingKilled."""
        if self.control.kill_requested.is_set():
            raise GradingKilled
        running = asyncio.ensure_future(self.engine.run(handle, request))
        killed = asyncio.ensure_future(self.control.kill_requested.wait())
        try:
            await asyncio.wait({running, killed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            killed.cancel()
        if not running.done():
            await self.engine.stop(handle, 0)
            with contextlib.suppress(Exception):
                await running
            raise GradingKilled
        return running.result()

    async def compile(
        self,
        *,
        role: Role,
        profile: Profile,
        box: Path,
        main: str,
        timeout_s: float,
        memory_mb: int,
        processes: int,
        on_output: Callable[[bytes], None],
    ) -> CompileResult | None:
        """Compile in a fresh sandbox with `box` writable at /box; None for a profile that compiles nothing.
        A compile that fails, runs out of time or memory, or cannot start has a non-zero `exit_code`."""
        argv = profile.compile_argv(main)
        if argv is None:
            return None
        sink = _CompileOutput(on_output)
        began = time.monotonic()
        started = await self.engine.start(
            SandboxSpec(
                owner=self.owner,
                role=role,
                image=profile.image,
                user=self.user,
                memory_mb=memory_mb,
                cpus=1.0,
                pids=max(processes, 256),
                log_bytes=COMPILE_OUTPUT_CHARS,
                workdir=BOX,
                mounts=(Mount(box, BOX, read_only=False),),
                tmpfs={"/tmp": memory_mb},
            ),
            Process(argv=tuple(argv), env=profile.compile_environment),
            sink,
        )
        if isinstance(started, CommandNotRunnable):
            return CompileResult(exit_code=started.exit_code, output=started.message, wall_s=0.0)
        self.handles.append(started)
        waiting = asyncio.ensure_future(self.engine.wait(started, sink))
        killed = asyncio.ensure_future(self.control.kill_requested.wait())
        try:
            done, _ = await asyncio.wait({waiting, killed}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            killed.cancel()
        if waiting not in done:
            await self.engine.stop(started, 0)
            status = await waiting
            if killed in done:
                raise GradingKilled
            sink.note(f"\n[hatchway] compiling took longer than {timeout_s:g} s and was stopped\n")
            return sink.result(exit_code=status.exit_code or 124, began=began, cpu_s=None)
        status = waiting.result()
        if status.oom_killed:
            sink.note(f"\n[hatchway] the compiler ran out of memory ({memory_mb} MB)\n")
        cpu_s = self.engine.resources(started).cpu_s
        self._discard(started)
        return sink.result(exit_code=status.exit_code, began=began, cpu_s=cpu_s)

    def _discard(self, handle: Handle) -> None:
        """Remove a sandbox that is done with in the background; `close` waits for it."""
        self.handles.remove(handle)
        self._removals.append(asyncio.ensure_future(self.engine.remove(handle)))

    async def close(self) -> None:
        """Remove every sandbox; one already gone is no error."""
        for handle in self.handles:
            with contextlib.suppress(Exception):
                await self.engine.remove(handle)
        self.handles.clear()
        await asyncio.gather(*self._removals, return_exceptions=True)
        self._removals.clear()


class _CompileOutput:
    """The compiler's stdout and stderr, interleaved as they came, capped, and passed on as the build log."""

    def __init__(self, on_output: Callable[[bytes], None]) -> None:
        self._on_output = on_output
        self._kept = bytearray()

    def write(self, stream: Stream, data: bytes) -> None:
        room = COMPILE_OUTPUT_CHARS * 4 - len(self._kept)
        if room > 0:
            self._kept += data[:room]
        self._on_output(data)

    def note(self, text: str) -> None:
        self.write(Stream.STDERR, text.encode())

    def result(self, *, exit_code: int | None, began: float, cpu_s: float | None) -> CompileResult:
        return CompileResult(
            exit_code=exit_code,
            output=self._kept.decode(errors="replace"),
            time_s=cpu_s,
            wall_s=round(time.monotonic() - began, 3),
        )
