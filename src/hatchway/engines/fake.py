"""An in-memory engine and image service: the second implementation of the seams, for unit tests.

Processes are scripted, not run: a process's `argv[0]` names a `FakeProgram` registered on the engine, which
says what it prints, how it exits, or that it runs until stopped. Everything the engine is asked to do is
recorded in `events`, so tests can count starts per job. `go_down` and `come_back` simulate an outage of the
engine: while it is down every call raises EngineUnavailable (waits under way too), and sandboxes keep running.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from hatchway.engines.base import (
    CommandNotRunnable,
    ExitStatus,
    Found,
    Handle,
    ManagedImage,
    OutputSink,
    Process,
    Role,
    SandboxSpec,
)
from hatchway.errors import EngineError, EngineUnavailable, ImageNotFound
from hatchway.models import Resources, Stream, utcnow
from hatchway.sandbox.protocol import RunRequest, RunResult, RunStatus


@dataclass(frozen=True)
class FakeProgram:
    """What a scripted process does."""

    stdout: bytes = b""
    stderr: bytes = b""
    exit_code: int = 0
    oom_killed: bool = False
    runs_until_stopped: bool = False
    result: RunResult | None = None
    """What `run` reports for it in a supervised sandbox (default: exited with `exit_code`)."""


@dataclass
class _Sandbox:
    spec: SandboxSpec
    handle: Handle
    process: Process | None
    started_at: datetime | None = None
    exited: asyncio.Event = field(default_factory=asyncio.Event)
    status: ExitStatus | None = None
    supervised: bool = False
    signalled: asyncio.Event = field(default_factory=asyncio.Event)
    pending: dict[Stream, bytes] = field(default_factory=dict)
    """Output written after the start, delivered by the next wait once the process has exited."""


class FakeEngine:
    """An `Engine` in memory. `fail_next` makes the next start or open raise; `programs` scripts processes."""

    def __init__(self, name: str = "docker", *, images: set[str] | None = None) -> None:
        self.name = name
        self.programs: dict[str, FakeProgram] = {}
        self.images = images
        """Images the engine has; None means every image."""
        self.sandboxes: dict[str, _Sandbox] = {}
        self.events: list[tuple[str, str, str]] = []
        """(what, owner, role) for every create, start, run, stop and remove."""
        self._started: dict[str, asyncio.Event] = {}
        self.fail_next: Exception | None = None
        self.opening: asyncio.Event | None = None
        """When set to an event, `open` waits for it before the sandbox exists (a slow container start)."""
        self.works = True
        self.pings = 0
        self.wait_cut = asyncio.Event()
        """Set once a wait under way met an outage."""
        self._down = asyncio.Event()
        self._ids = itertools.count(1)

    async def ping(self) -> bool:
        self.pings += 1
        return self.works

    async def probe(self) -> bool:
        return self.works

    def go_down(self) -> None:
        """The engine stops answering: waits under way and every call until `come_back` raise EngineUnavailable."""
        self.works = False
        self._down.set()

    def come_back(self) -> None:
        """The engine answers again; its sandboxes are as they were (as after a restart with live-restore)."""
        self.works = True
        self._down = asyncio.Event()

    def exit(self, owner: str, *, exit_code: int = 0, stdout: bytes = b"") -> None:
        """The running process of `owner` writes `stdout` and exits on its own."""
        for sandbox in self.sandboxes.values():
            if sandbox.spec.owner == owner and not sandbox.exited.is_set():
                sandbox.pending[Stream.STDOUT] = sandbox.pending.get(Stream.STDOUT, b"") + stdout
                self._exit(sandbox, ExitStatus(exit_code=exit_code, oom_killed=False))

    async def start(self, spec: SandboxSpec, process: Process, sink: OutputSink) -> Handle | CommandNotRunnable:
        self._answer()
        sandbox = self._create(spec, process)
        program = self.programs.get(process.argv[0])
        if program is None:
            del self.sandboxes[sandbox.handle.ref]
            return CommandNotRunnable(exit_code=127, message=f"{process.argv[0]}: executable file not found")
        self._event("start", sandbox)
        sandbox.started_at = utcnow()
        sink.write(Stream.STDOUT, program.stdout)
        sink.write(Stream.STDERR, program.stderr)
        if not program.runs_until_stopped:
            self._exit(sandbox, ExitStatus(exit_code=program.exit_code, oom_killed=program.oom_killed))
        return sandbox.handle

    async def wait(self, handle: Handle, sink: OutputSink) -> ExitStatus:
        self._answer()
        sandbox = self._get(handle)
        exited = asyncio.ensure_future(sandbox.exited.wait())
        down = asyncio.ensure_future(self._down.wait())
        try:
            await asyncio.wait({exited, down}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            exited.cancel()
            down.cancel()
        if not self.works:
            self.wait_cut.set()
        self._answer()
        for stream, data in sandbox.pending.items():
            sink.write(stream, data)
        sandbox.pending.clear()
        assert sandbox.status is not None
        return sandbox.status

    async def open(self, spec: SandboxSpec) -> Handle:
        self._answer()
        if self.opening is not None:
            await self.opening.wait()
        sandbox = self._create(spec, None)
        sandbox.supervised = True
        sandbox.started_at = utcnow()
        self._event("open", sandbox)
        return sandbox.handle

    def environment(self, handle: Handle) -> dict[str, str]:
        return {"PATH": "/usr/bin:/bin"}

    async def run(self, handle: Handle, request: RunRequest) -> RunResult:
        self._answer()
        sandbox = self._get(handle)
        if not sandbox.supervised or sandbox.exited.is_set():
            raise EngineError(f"sandbox {handle.ref} is not a running supervised sandbox")
        self._event("run", sandbox)
        program = self.programs.get(request.argv[0])
        if program is None:
            return run_result(request.id, RunStatus.EXEC_FAILED, 127, error=f"{request.argv[0]}: not found")
        if program.runs_until_stopped:
            sandbox.signalled.clear()
            ended = asyncio.ensure_future(sandbox.exited.wait())
            signalled = asyncio.ensure_future(sandbox.signalled.wait())
            await asyncio.wait({ended, signalled}, return_when=asyncio.FIRST_COMPLETED)
            ended.cancel()
            signalled.cancel()
            if sandbox.exited.is_set():
                raise EngineError("the sandbox ended (its supervisor's stream closed)")
            return run_result(request.id, RunStatus.SIGNALED, 0, signal=9)
        # What it prints goes where the supervisor would put it: the request's files, through the mounts.
        for path, data in ((request.stdout_path, program.stdout), (request.stderr_path, program.stderr)):
            target = _on_host(sandbox.spec, path)
            if data and target is not None:
                with target.open("ab") as file:
                    file.write(data)
        if program.result is not None:
            return program.result
        return run_result(request.id, RunStatus.EXITED, program.exit_code)

    def resources(self, handle: Handle) -> Resources:
        return Resources(memory_bytes=1024, peak_memory_bytes=2048, cpu_s=0.01, pids=1)

    async def reattach(self, handle: Handle, run_id: str) -> RunResult:
        sandbox = self._get(handle)
        if sandbox.exited.is_set():
            raise EngineError(f"sandbox {handle.ref} has ended")
        return run_result(run_id, RunStatus.EXITED, 0)

    async def check(self, handle: Handle) -> bool:
        sandbox = self.sandboxes.get(handle.ref)
        return sandbox is not None and sandbox.supervised and not sandbox.exited.is_set()

    async def signal(self, handle: Handle, signal: str) -> None:
        sandbox = self.sandboxes.get(handle.ref)
        if sandbox is not None:
            self._event(f"signal {signal}", sandbox)
            sandbox.signalled.set()

    async def stop(self, handle: Handle, grace_s: float) -> None:
        self._answer()
        sandbox = self.sandboxes.get(handle.ref)
        if sandbox is None or sandbox.exited.is_set():
            return
        self._event("stop", sandbox)
        self._exit(sandbox, ExitStatus(exit_code=143 if grace_s > 0 else 137, oom_killed=False))

    async def remove(self, handle: Handle) -> None:
        self._answer()
        sandbox = self.sandboxes.pop(handle.ref, None)
        if sandbox is not None:
            self._event("remove", sandbox)
            if not sandbox.exited.is_set():
                self._exit(sandbox, ExitStatus(exit_code=137, oom_killed=False))

    async def recover(self) -> list[Found]:
        self._answer()
        return [
            Found(handle=sandbox.handle, engine=self.name, started_at=sandbox.started_at)
            for sandbox in self.sandboxes.values()
        ]

    async def close(self) -> None:
        return None

    def plant(self, owner: str, role: Role, *, started: bool = True) -> Handle:
        """A sandbox as an earlier run of the worker left it (for recovery tests); it runs until stopped."""
        spec = SandboxSpec(owner=owner, role=role, image="img", user="1:1", memory_mb=64, cpus=1, pids=8, log_bytes=0)
        sandbox = self._create(spec, None)
        sandbox.started_at = utcnow() if started else None
        return sandbox.handle

    async def started(self, owner: str) -> None:
        """Returns once a process of `owner` has been started."""
        await self._started.setdefault(owner, asyncio.Event()).wait()

    def starts(self, owner: str) -> int:
        """How many processes were started for `owner` (sandbox starts and supervised runs)."""
        return sum(1 for what, who, _ in self.events if who == owner and what in ("start", "run"))

    def _create(self, spec: SandboxSpec, process: Process | None) -> _Sandbox:
        if self.fail_next is not None:
            error, self.fail_next = self.fail_next, None
            raise error
        if self.images is not None and spec.image not in self.images:
            raise ImageNotFound(f"image {spec.image!r} is not on this worker")
        ref = f"fake-{next(self._ids)}"
        sandbox = _Sandbox(spec=spec, handle=Handle(job_id=spec.owner, ref=ref, role=spec.role), process=process)
        self.sandboxes[ref] = sandbox
        self._event("create", sandbox)
        return sandbox

    def _answer(self) -> None:
        if not self.works:
            raise EngineUnavailable(f"the fake engine {self.name} stopped answering")

    def _get(self, handle: Handle) -> _Sandbox:
        sandbox = self.sandboxes.get(handle.ref)
        if sandbox is None:
            raise EngineError(f"no such container: {handle.ref}")
        return sandbox

    def _exit(self, sandbox: _Sandbox, status: ExitStatus) -> None:
        sandbox.status = status
        sandbox.exited.set()

    def _event(self, what: str, sandbox: _Sandbox) -> None:
        self.events.append((what, sandbox.spec.owner, sandbox.spec.role.value))
        if what in ("start", "run"):
            self._started.setdefault(sandbox.spec.owner, asyncio.Event()).set()


def _on_host(spec: SandboxSpec, path: str | None) -> Path | None:
    """Where a path in the sandbox is on the host, if a mount holds it."""
    for mount in spec.mounts:
        if path is not None and path.startswith(mount.target.rstrip("/") + "/"):
            return mount.source / path[len(mount.target.rstrip("/")) + 1 :]
    return None


def run_result(
    run_id: str, status: RunStatus, exit_code: int, *, error: str | None = None, signal: int | None = None
) -> RunResult:
    """A supervisor's answer as the fake engine gives it (a millisecond, a kilobyte)."""
    return RunResult(
        id=run_id,
        status=status,
        exit_code=None if signal is not None else exit_code,
        signal=signal,
        cpu_s=0.001,
        wall_s=0.001,
        memory_bytes=1024,
        oom_killed=False,
        cpu_exceeded=False,
        wall_exceeded=False,
        output_exceeded=False,
        error=error,
    )


class FakeImages:
    """An `ImageService` that has every image (or those in `present`) and builds nothing."""

    def __init__(self, present: set[str] | None = None) -> None:
        self.present_images = present
        self.held: dict[str, int] = {}

    async def present(self, image: str) -> bool:
        return self.present_images is None or image in self.present_images

    async def ensure(self, image: str) -> bool:
        if self.present_images is not None and image not in self.present_images:
            raise ImageNotFound(f"image {image!r} does not exist")
        return True

    async def build(
        self, dockerfile: str, files: dict[str, bytes], on_output: Callable[[str], None], extra_inputs: str
    ) -> tuple[str, bool]:
        on_output("built\n")
        return self.build_name(dockerfile, files, extra_inputs), False

    def build_name(self, dockerfile: str, files: dict[str, bytes], extra_inputs: str) -> str:
        return f"hatchway-build:{abs(hash((dockerfile, extra_inputs))):x}"

    def acquire(self, image: str) -> None:
        self.held[image] = self.held.get(image, 0) + 1

    def release(self, image: str) -> None:
        self.held[image] -= 1
        if not self.held[image]:
            del self.held[image]

    async def import_rootfs(self, name: str, tarball: Path) -> ManagedImage:
        raise EngineError("the fake image service imports nothing")

    async def managed(self) -> list[ManagedImage]:
        return []

    async def evict(self) -> list[str]:
        return []
