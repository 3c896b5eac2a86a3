"""The sandboxes of a grading: compiling in a fresh one, and the prepared ones its tests and checker run in."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from hatchway.engines.base import SCRATCH, Engine, Handle, Mount, Role, SandboxSpec
from hatchway.grading.workspace import CompileDisk, read_head
from hatchway.jobs.control import RunControl
from hatchway.judge.profiles import Profile
from hatchway.judge.report import COMPILE_OUTPUT_CHARS, CompileResult
from hatchway.sandbox.protocol import RunRequest, RunResult, RunStatus

MIB = 1024 * 1024
BOX = "/box"
IO = "/.hatchway/io"
"""Where the supervisor writes a run's stdout and stderr (root-only: runs see only their own descriptors)."""
TESTS = "/.hatchway/tests"
"""Where the tests' inputs are (root-only: the supervisor opens each run's input for it)."""
_COMPILE_OUTPUT = "compile"
_COMPILE_PROCESSES = 256
_COMPILE_FILE_BYTES = 1024 * MIB
"""The largest file a compiler may write (a static binary, the output file)."""
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

    def environment(self, handle: Handle, own: Mapping[str, str]) -> dict[str, str]:
        """A run's environment: the image's (PATH and the like), then `own` over it."""
        return {**self.engine.environment(handle), **own}

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
        disk: CompileDisk,
        main: str,
        uid: int,
        gid: int,
        timeout_s: float,
        memory_mb: int,
        processes: int,
    ) -> CompileResult | None:
        """Compile in a fresh sandbox of its own, with `disk.box` writable at /box, through the supervisor (so its
        CPU time and memory are measured like a test's); None for a profile that compiles nothing. A compile that
        fails, runs out of time, memory or disk, or cannot start has a non-zero `exit_code` and says why."""
        argv = profile.compile_argv(main)
        if argv is None:
            return None
        began = time.monotonic()
        processes = max(processes, _COMPILE_PROCESSES)
        handle = await self.open(
            role=role,
            image=profile.image,
            memory_mb=memory_mb,
            processes=processes,
            mounts=(Mount(disk.box, BOX, read_only=False), Mount(disk.io, IO, read_only=False)),
        )
        run = await self.run(
            handle,
            RunRequest(
                id="compile",
                argv=tuple(argv),
                env=self.environment(handle, profile.compile_environment),
                uid=uid,
                gid=gid,
                cpu_time_s=timeout_s,
                wall_time_s=timeout_s,
                memory_bytes=memory_mb * MIB,
                processes=processes,
                file_size_bytes=_COMPILE_FILE_BYTES,
                stdout_path=f"{IO}/{_COMPILE_OUTPUT}",
                stderr_path=f"{IO}/{_COMPILE_OUTPUT}",  # one file: the compiler's messages in the order written
                cwd=BOX,
            ),
        )
        self._discard(handle)
        output = await asyncio.to_thread(read_head, disk.io / _COMPILE_OUTPUT, COMPILE_OUTPUT_CHARS * 4)
        exit_code = _compile_exit_code(run)
        note = _compile_note(run, timeout_s=timeout_s, memory_mb=memory_mb)
        if exit_code != 0 and not note and await asyncio.to_thread(disk.full):
            note = f"\n[hatchway] the compile step filled its disk (limits.compile_disk_mb = {disk.disk_mb})\n"
        return CompileResult(
            exit_code=exit_code,
            output=output.decode(errors="replace") + note,
            time_s=round(run.cpu_s, 6),
            wall_s=round(time.monotonic() - began, 3),
        )

    def _discard(self, handle: Handle) -> None:
        """Remove a sandbox that is done with in the background; `close` waits for it."""
        self.handles.remove(handle)
        self._removals.append(asyncio.ensure_future(self.engine.remove(handle)))

    async def close(self) -> bool:
        """Remove every sandbox; one already gone is no error. Whether all of them are surely gone (a sandbox
        that could not be removed may still write to what it mounts)."""
        removed = True
        for handle in self.handles:
            try:
                await self.engine.remove(handle)
            except Exception:  # whatever the engine raised, the others are still removed
                removed = False
        self.handles.clear()
        outcomes = await asyncio.gather(*self._removals, return_exceptions=True)
        self._removals.clear()
        return removed and not any(isinstance(outcome, BaseException) for outcome in outcomes)


def _compile_exit_code(run: RunResult) -> int:
    if run.status is RunStatus.EXITED and run.exit_code is not None:
        return 124 if run.cpu_exceeded or run.wall_exceeded else run.exit_code
    if run.signal is not None:
        return 128 + run.signal
    return run.exit_code or 1


def _compile_note(run: RunResult, *, timeout_s: float, memory_mb: int) -> str:
    """What hatchway has to say about how the compiler ended, after what it printed."""
    if run.status in (RunStatus.EXEC_FAILED, RunStatus.SETUP_FAILED):
        return f"\n[hatchway] the compiler could not start: {run.error}\n"
    if run.cpu_exceeded or run.wall_exceeded:
        return f"\n[hatchway] compiling took longer than {timeout_s:g} s and was stopped\n"
    if run.oom_killed:
        return f"\n[hatchway] the compiler ran out of memory ({memory_mb} MB)\n"
    if run.output_exceeded:
        return "\n[hatchway] the compiler wrote more than the file size limit\n"
    return ""
