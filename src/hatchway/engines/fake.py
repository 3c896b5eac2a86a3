"""An in-memory engine: the second implementation of the engine seam, for unit tests (the image service's fake is
`fake_images.py`).

Processes are scripted, not run: a process's `argv[0]` names a `FakeProgram` registered on the engine, which
says what it prints, how it exits, or that it runs until stopped; a process without argv runs the image's own
command, the program registered under the image's name. Everything the engine is asked to do is
recorded in `events`, so tests can count starts per job. `go_down` and `come_back` simulate an outage of the
engine: while it is down every call raises EngineUnavailable (waits under way too), and sandboxes keep running.

Both fakes keep the contract the real ones keep (`tests/contracts`); where a fake cannot, a capability flag on
its class says so, and the contract tests check the flag.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import ClassVar

from hatchway.engines.base import (
    CommandNotRunnable,
    ExitStatus,
    Found,
    Handle,
    OutputSink,
    Process,
    Role,
    SandboxSpec,
    image_name,
)
from hatchway.errors import (
    EngineError,
    EngineUnavailable,
    ImageNotFound,
    RunNeverStarted,
)
from hatchway.models import Resources, Stream, utcnow
from hatchway.sandbox.protocol import RunRequest, RunResult, RunStatus

_SIGNALS = {"SIGHUP": 1, "SIGINT": 2, "SIGKILL": 9, "SIGUSR1": 10, "SIGTERM": 15}
_refs = itertools.count(1)  # one numbering for every fake engine, as sandboxes of one host share it


@dataclass(frozen=True)
class FakeProgram:
    """What a scripted process does."""

    stdout: bytes = b""
    stderr: bytes = b""
    exit_code: int = 0
    oom_killed: bool = False
    runs_until_stopped: bool = False
    result: RunResult | None = None
    """What `run` reports for it in a supervised sandbox (default: exited with `exit_code`), under the request's id."""


@dataclass
class _Sandbox:
    spec: SandboxSpec
    handle: Handle
    process: Process | None
    worker_id: str
    engine: str
    """The name of the engine that made it, as its label says."""
    started_at: datetime | None = None
    exited: asyncio.Event = field(default_factory=asyncio.Event)
    status: ExitStatus | None = None
    supervised: bool = False
    signalled: asyncio.Event = field(default_factory=asyncio.Event)
    signal: int = 9
    """The signal that ended the run in flight, once `signalled` is set."""
    output: list[tuple[Stream, bytes]] = field(default_factory=list)
    """Everything its process wrote, as the engine's own log keeps it: what a wait has not delivered yet."""
    answers: dict[str, asyncio.Future[RunResult]] = field(default_factory=dict)
    """Each supervised run by its id, as the supervisor's answers stay in the container's log."""
    in_flight: int = 0
    orphaned: bool = False
    """Its supervisor lost the worker's connection: it ends (exit code 0) once no run is in flight."""


class FakeEngine:
    """An `Engine` in memory. `fail_next` makes the next start or open raise; `programs` scripts processes.

    Engines given the same `sandboxes` share a host, as Docker engines of one daemon do: `recover` finds the
    sandboxes of its own `worker_id` whichever engine made them, and an engine made afresh for that worker (after a
    restart) finds what an earlier one left, reads a found sandbox's output from the start, and cannot run in an
    open sandbox until it has reattached.
    """

    runs_code: ClassVar[bool] = False
    """No code runs: a process's stdin, environment and files reach nothing, and what it prints and how it ends
    (an OOM kill included) are what its `FakeProgram` says, whatever the spec's limits."""

    def __init__(
        self,
        name: str = "docker",
        *,
        images: set[str] | None = None,
        worker_id: str = "unit",
        sandboxes: dict[str, _Sandbox] | None = None,
    ) -> None:
        self.name = name
        self.worker_id = worker_id
        self.programs: dict[str, FakeProgram] = {}
        self.images = None if images is None else {image_name(image) for image in images}
        """Images the engine has; None means every image."""
        self.sandboxes: dict[str, _Sandbox] = {} if sandboxes is None else sandboxes
        self.events: list[tuple[str, str, str]] = []
        """(what, owner, role) for every create, start, run, stop and remove."""
        self._started: dict[str, asyncio.Event] = {}
        self._attached: dict[str, int] = {}
        """The sandboxes this engine follows (started, opened, waited for or reattached), with how many of their
        output chunks it has delivered."""
        self.fail_next: Exception | None = None
        self.opening: asyncio.Event | None = None
        """When set to an event, `open` waits for it before the sandbox exists (a slow container start)."""
        self.works = True
        self.pings = 0
        self.wait_cut = asyncio.Event()
        """Set once a wait under way met an outage."""
        self._down = asyncio.Event()

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
                if stdout:
                    sandbox.output.append((Stream.STDOUT, stdout))
                self._exit(sandbox, ExitStatus(exit_code=exit_code, oom_killed=False))

    async def start(self, spec: SandboxSpec, process: Process, sink: OutputSink) -> Handle | CommandNotRunnable:
        self._answer()
        sandbox = self._create(spec, process)
        self._event("start", sandbox)
        sandbox.started_at = utcnow()
        program = self.programs.get(process.argv[0] if process.argv else image_name(spec.image))
        if program is None:
            # As on Docker, where the container's init execs the command: the sandbox starts, and its init
            # reports the failed exec and exits as a shell would.
            failed = f"exec {process.argv[0]} failed: No such file or directory\n"
            program = FakeProgram(stderr=failed.encode(), exit_code=127)
        for stream, data in ((Stream.STDOUT, program.stdout), (Stream.STDERR, program.stderr)):
            if data:
                sandbox.output.append((stream, data))
        self._attached[sandbox.handle.ref] = 0
        self._deliver(sandbox, sink)
        if not program.runs_until_stopped:
            oom_killed = program.oom_killed and program.exit_code != 0
            self._exit(sandbox, ExitStatus(exit_code=program.exit_code, oom_killed=oom_killed))
        return sandbox.handle

    async def wait(self, handle: Handle, sink: OutputSink) -> ExitStatus:
        self._answer()
        sandbox = self._get(handle)
        self._attached.setdefault(handle.ref, 0)  # found again: its output is read from the engine's log
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
        self._deliver(sandbox, sink)
        assert sandbox.status is not None
        return sandbox.status

    async def open(self, spec: SandboxSpec) -> Handle:
        self._answer()
        if self.opening is not None:
            await self.opening.wait()
        sandbox = self._create(spec, None)
        sandbox.supervised = True
        sandbox.started_at = utcnow()
        self._attached[sandbox.handle.ref] = 0
        self._event("open", sandbox)
        return sandbox.handle

    def environment(self, handle: Handle) -> dict[str, str]:
        sandbox = self.sandboxes.get(handle.ref)
        if sandbox is None or not sandbox.supervised or handle.ref not in self._attached:
            return {}
        return {"PATH": "/usr/bin:/bin"}

    async def run(self, handle: Handle, request: RunRequest) -> RunResult:
        self._answer()
        sandbox = self._get(handle)
        if not sandbox.supervised or sandbox.exited.is_set() or handle.ref not in self._attached:
            raise EngineError(f"sandbox {handle.ref} is not an open supervised sandbox")
        self._event("run", sandbox)
        answer = sandbox.answers[request.id] = asyncio.get_running_loop().create_future()
        sandbox.in_flight += 1
        try:
            result = await self._run(sandbox, request)
        except BaseException as exc:
            if not isinstance(exc, asyncio.CancelledError):
                answer.set_exception(exc)
                answer.exception()  # retrieved: a reattach may never ask
            raise
        finally:
            sandbox.in_flight -= 1
            if sandbox.orphaned and not sandbox.in_flight and not sandbox.exited.is_set():
                self._exit(sandbox, ExitStatus(exit_code=0, oom_killed=False))
        answer.set_result(result)
        return result

    async def _run(self, sandbox: _Sandbox, request: RunRequest) -> RunResult:
        program = self.programs.get(request.argv[0])
        if program is None:
            return run_result(request.id, RunStatus.EXEC_FAILED, 127, error=f"{request.argv[0]}: not found")
        # What it prints goes where the supervisor would put it: the request's files, through the mounts. (A
        # program scripted to print nothing leaves them as they are, so a test may write them itself.)
        for path, data in ((request.stdout_path, program.stdout), (request.stderr_path, program.stderr)):
            target = _on_host(sandbox.spec, path)
            if data and target is not None:
                target.write_bytes(data)
        if program.runs_until_stopped:
            sandbox.signalled.clear()
            ended = asyncio.ensure_future(sandbox.exited.wait())
            signalled = asyncio.ensure_future(sandbox.signalled.wait())
            await asyncio.wait({ended, signalled}, return_when=asyncio.FIRST_COMPLETED)
            ended.cancel()
            signalled.cancel()
            if sandbox.exited.is_set():
                raise EngineError("the sandbox ended (its supervisor's stream closed)")
            return run_result(request.id, RunStatus.SIGNALED, 0, signal=sandbox.signal)
        if program.result is not None:
            return dataclasses.replace(program.result, id=request.id)
        return run_result(request.id, RunStatus.EXITED, program.exit_code)

    def resources(self, handle: Handle) -> Resources:
        sandbox = self.sandboxes.get(handle.ref)
        if sandbox is None or sandbox.supervised or handle.ref not in self._attached:
            return Resources()  # as Docker's engine: figures only for a sandbox it follows; each run measures itself
        return Resources(memory_bytes=1024, peak_memory_bytes=2048, cpu_s=0.01, pids=1)

    async def reattach(self, handle: Handle, run_id: str) -> RunResult:
        self._answer()
        sandbox = self._get(handle)
        if not sandbox.supervised:
            raise EngineError(f"sandbox {handle.ref} is not a supervised sandbox")
        self._attached.setdefault(handle.ref, 0)
        answer = sandbox.answers.get(run_id)
        if answer is None:
            await sandbox.exited.wait()  # the answer can only come from a run still to be sent, or never
            assert sandbox.status is not None
            if sandbox.status.exit_code == 0:
                raise RunNeverStarted(
                    "the worker stopped before the job's command reached its sandbox, which then ended; "
                    "the command never ran"
                )
            raise EngineError(
                f"the job's sandbox ended (exit code {sandbox.status.exit_code}) without answering for its run"
            )
        return await asyncio.shield(answer)

    async def check(self, handle: Handle) -> bool:
        sandbox = self.sandboxes.get(handle.ref)
        return (
            sandbox is not None
            and sandbox.supervised
            and not sandbox.exited.is_set()
            and handle.ref in self._attached
            and self.works
        )

    async def signal(self, handle: Handle, signal: str) -> None:
        self._answer()
        sandbox = self.sandboxes.get(handle.ref)
        if sandbox is None or sandbox.exited.is_set():
            return
        self._event(f"signal {signal}", sandbox)
        number = _SIGNALS.get(signal, 15)
        if not sandbox.supervised or number == 9:
            # The sandbox's first process gets it: a job's command (through its init), or the supervisor itself.
            self._exit(sandbox, ExitStatus(exit_code=128 + number, oom_killed=False))
        else:
            # The supervisor passes SIGTERM on to the run in flight, and kills it for SIGUSR1.
            sandbox.signal = 9 if signal == "SIGUSR1" else number
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
        self._attached.pop(handle.ref, None)
        if sandbox is not None:
            self._event("remove", sandbox)
            if not sandbox.exited.is_set():
                self._exit(sandbox, ExitStatus(exit_code=137, oom_killed=False))

    async def recover(self) -> list[Found]:
        self._answer()
        return [
            Found(handle=sandbox.handle, engine=sandbox.engine, started_at=sandbox.started_at)
            for sandbox in self.sandboxes.values()
            if sandbox.worker_id == self.worker_id
        ]

    async def close(self) -> None:
        """Let go of every sandbox: an open one's supervisor, its connection closed, ends once its run is done
        (as Docker's does); a job's sandbox runs on, for a later engine to find."""
        for ref in list(self._attached):
            sandbox = self.sandboxes.get(ref)
            if sandbox is not None and sandbox.supervised and not sandbox.exited.is_set():
                sandbox.orphaned = True
                if not sandbox.in_flight:
                    self._exit(sandbox, ExitStatus(exit_code=0, oom_killed=False))
        self._attached.clear()

    def plant(self, owner: str, role: Role, *, started: bool = True) -> Handle:
        """A sandbox as an earlier run of the worker left it (for recovery tests); it runs until stopped."""
        spec = SandboxSpec(owner=owner, role=role, image="img", user="1:1", memory_mb=64, cpus=1, pids=8, log_bytes=0)
        sandbox = self._create(spec, None, check_image=False)
        sandbox.started_at = utcnow() if started else None
        return sandbox.handle

    async def started(self, owner: str) -> None:
        """Returns once a process of `owner` has been started."""
        await self._started.setdefault(owner, asyncio.Event()).wait()

    def starts(self, owner: str) -> int:
        """How many processes were started for `owner` (sandbox starts and supervised runs)."""
        return sum(1 for what, who, _ in self.events if who == owner and what in ("start", "run"))

    def _create(self, spec: SandboxSpec, process: Process | None, *, check_image: bool = True) -> _Sandbox:
        if self.fail_next is not None:
            error, self.fail_next = self.fail_next, None
            raise error
        if check_image and self.images is not None and image_name(spec.image) not in self.images:
            raise ImageNotFound(f"image {spec.image!r} is not on this worker")
        if process is not None and not process.argv and image_name(spec.image) not in self.programs:
            raise EngineError("the Docker engine failed: No command specified")  # as Docker refuses to create it
        ref = f"fake-{next(_refs)}"
        handle = Handle(job_id=spec.owner, ref=ref, role=spec.role)
        sandbox = _Sandbox(spec=spec, handle=handle, process=process, worker_id=self.worker_id, engine=self.name)
        self.sandboxes[ref] = sandbox
        self._event("create", sandbox)
        return sandbox

    def _deliver(self, sandbox: _Sandbox, sink: OutputSink) -> None:
        """Pass on the output this engine has not delivered yet."""
        delivered = self._attached.get(sandbox.handle.ref, 0)
        for stream, data in sandbox.output[delivered:]:
            sink.write(stream, data)
        self._attached[sandbox.handle.ref] = len(sandbox.output)

    def _answer(self) -> None:
        if not self.works:
            raise EngineUnavailable(f"the fake engine {self.name} stopped answering")

    def _get(self, handle: Handle) -> _Sandbox:
        sandbox = self.sandboxes.get(handle.ref)
        if sandbox is None:
            raise EngineError(f"the container or image is gone (no such container: {handle.ref})")
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
