"""The `Engine` contract: what the runner, recovery, the pools and grading rely on, whichever engine runs them.

The tests script processes through the subject (`EngineSubject.script`): the real engine runs a shell command that
does what is asked, the fake registers a `FakeProgram` that says it did.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from hatchway.engines.base import (
    CommandNotRunnable,
    Engine,
    ExitStatus,
    Handle,
    Mount,
    Process,
    Role,
    SandboxSpec,
)
from hatchway.errors import EngineError, ImageNotFound, RunNeverStarted
from hatchway.models import Resources, Stream
from hatchway.sandbox.protocol import RunRequest, RunStatus
from tests.conftest import BUSYBOX

NOBODY = 65534
IO = "/.hatchway/io"
MISSING_IMAGE = "hatchway-test/not-on-this-host:1"


class EngineSubject(ABC):
    """An engine under contract, and how to script processes on it."""

    runs_code: bool
    """Whether processes really run (so stdin, env and files reach them and limits bite)."""

    def __init__(self, engine: Engine, worker_id: str) -> None:
        self.engine = engine
        self.worker_id = worker_id

    @abstractmethod
    def script(
        self, *, stdout: bytes = b"", stderr: bytes = b"", exit_code: int = 0, runs_until_stopped: bool = False
    ) -> Process:
        """A process that prints `stdout` and `stderr`, then exits with `exit_code` or runs until stopped."""

    @abstractmethod
    def memory_hog(self) -> tuple[str, Process]:
        """An image and a process in it that uses far more than 64 MiB of memory."""

    @abstractmethod
    def own_command(self, stdin: bytes) -> str:
        """An image with a command of its own, which prints its working directory (its WORKDIR, /app), then
        `stdin`."""

    @abstractmethod
    def engine_of(self, worker_id: str) -> Engine:
        """Another engine on the same host: a later process of the same worker, or another worker's."""


@dataclass
class Sink:
    """An `OutputSink` keeping what it got, per stream."""

    data: dict[Stream, bytes] = field(default_factory=dict)

    def write(self, stream: Stream, data: bytes) -> None:
        self.data[stream] = self.data.get(stream, b"") + data

    def text(self, stream: Stream) -> str:
        return self.data.get(stream, b"").decode()


def job_spec(owner: str, *, role: Role = Role.JOB, image: str = BUSYBOX, memory_mb: int = 64) -> SandboxSpec:
    return SandboxSpec(
        owner=owner,
        role=role,
        image=image,
        user=f"{NOBODY}:{NOBODY}",
        memory_mb=memory_mb,
        cpus=1.0,
        pids=32,
        log_bytes=64 * 1024,
    )


def open_spec(owner: str, io: Path) -> SandboxSpec:
    """A supervised sandbox's spec, its runs' output files in `io` on the host."""
    io.mkdir(exist_ok=True)
    os.chmod(io, 0o777)  # the supervisor creates the files there as root, which the host may not let it
    return replace(
        job_spec(owner, role=Role.RUN, memory_mb=128),
        pids=64,
        mounts=(Mount(io, IO, read_only=False),),
        tmpfs={"/tmp": 16, "/w": 16},
    )


def request(process: Process, run_id: str) -> RunRequest:
    return RunRequest(
        argv=process.argv,
        uid=NOBODY,
        gid=NOBODY,
        id=run_id,
        stdout_path=f"{IO}/out",
        stderr_path=f"{IO}/err",
        scratch=True,
        wall_time_s=30,
    )


async def started(engine: Engine, spec: SandboxSpec, process: Process, sink: Sink) -> Handle:
    handle = await engine.start(spec, process, sink)
    assert isinstance(handle, Handle), handle
    return handle


async def until(condition: Callable[[], bool], timeout_s: float = 10) -> None:
    """Return once `condition` holds. For what no event announces: a file a sandbox writes, a sampled figure."""
    async with asyncio.timeout(timeout_s):
        while not condition():  # noqa: ASYNC110 (nothing to await: the condition is outside this process)
            await asyncio.sleep(0.02)


def says(path: Path, text: bytes) -> Callable[[], bool]:
    return lambda: path.is_file() and path.read_bytes() == text


def owner() -> str:
    return f"job-{uuid.uuid4().hex[:8]}"


class EngineContract:
    """Every engine does this. Subclasses provide the `subject` fixture."""

    async def test_it_answers_and_really_runs(self, subject: EngineSubject) -> None:
        assert await subject.engine.ping() is True
        assert await subject.engine.probe() is True

    async def test_a_process_output_reaches_the_sink_and_its_exit_the_wait(self, subject: EngineSubject) -> None:
        engine, sink, job = subject.engine, Sink(), owner()
        handle = await started(engine, job_spec(job), subject.script(stdout=b"out\n", stderr=b"err\n"), sink)
        assert (handle.job_id, handle.role) == (job, Role.JOB)
        assert await engine.wait(handle, sink) == ExitStatus(exit_code=0, oom_killed=False)
        assert (sink.text(Stream.STDOUT), sink.text(Stream.STDERR)) == ("out\n", "err\n")
        await engine.remove(handle)

    async def test_a_non_zero_exit_is_the_process_exit_code(self, subject: EngineSubject) -> None:
        engine, sink = subject.engine, Sink()
        handle = await started(engine, job_spec(owner()), subject.script(exit_code=3), sink)
        assert await engine.wait(handle, sink) == ExitStatus(exit_code=3, oom_killed=False)
        await engine.remove(handle)

    async def test_a_command_not_found_starts_and_exits_127_saying_why_on_stderr(self, subject: EngineSubject) -> None:
        """The sandbox's init execs the command, so the sandbox starts; never `CommandNotRunnable`."""
        engine, sink = subject.engine, Sink()
        handle = await engine.start(job_spec(owner()), Process(("no-such-program",)), sink)
        assert not isinstance(handle, CommandNotRunnable)
        assert await engine.wait(handle, sink) == ExitStatus(exit_code=127, oom_killed=False)
        assert "no-such-program failed: No such file or directory" in sink.text(Stream.STDERR)
        await engine.remove(handle)

    async def test_a_process_without_argv_runs_the_image_s_own_command_in_its_own_workdir(
        self, subject: EngineSubject
    ) -> None:
        """As `docker run IMAGE` does: the worker-agent protocol's jobs rely on it (a job's `image_defaults`)."""
        engine, sink = subject.engine, Sink()
        spec = replace(job_spec(owner(), image=subject.own_command(b"from stdin\n")), workdir=None)
        handle = await started(engine, spec, Process((), stdin=b"from stdin\n"), sink)
        assert await engine.wait(handle, sink) == ExitStatus(exit_code=0, oom_killed=False)
        assert sink.text(Stream.STDOUT) == "/app\nfrom stdin\n"
        await engine.remove(handle)

    async def test_a_process_without_argv_in_an_image_without_a_command_is_an_engine_error(
        self, subject: EngineSubject
    ) -> None:
        with pytest.raises(EngineError, match="No command specified"):
            await subject.engine.start(replace(job_spec(owner()), workdir=None), Process(()), Sink())
        assert await subject.engine.recover() == []

    async def test_a_process_over_its_memory_limit_is_reported_oom_killed(self, subject: EngineSubject) -> None:
        engine, sink = subject.engine, Sink()
        image, hog = subject.memory_hog()
        handle = await started(engine, job_spec(owner(), image=image, memory_mb=64), hog, sink)
        assert await engine.wait(handle, sink) == ExitStatus(exit_code=137, oom_killed=True)
        await engine.remove(handle)

    async def test_stop_with_grace_terminates_and_without_grace_kills(self, subject: EngineSubject) -> None:
        engine, sink = subject.engine, Sink()
        terminated = await started(engine, job_spec(owner()), subject.script(runs_until_stopped=True), sink)
        killed = await started(engine, job_spec(owner()), subject.script(runs_until_stopped=True), sink)
        await engine.stop(terminated, 10)
        await engine.stop(killed, 0)
        assert await engine.wait(terminated, sink) == ExitStatus(exit_code=143, oom_killed=False)
        assert await engine.wait(killed, sink) == ExitStatus(exit_code=137, oom_killed=False)
        await engine.stop(killed, 0)  # stopping one that has ended is not an error, and changes nothing
        assert await engine.wait(killed, sink) == ExitStatus(exit_code=137, oom_killed=False)
        for handle in (terminated, killed):
            await engine.remove(handle)

    async def test_a_signal_goes_to_a_job_sandbox_process(self, subject: EngineSubject) -> None:
        engine, sink = subject.engine, Sink()
        handle = await started(engine, job_spec(owner()), subject.script(runs_until_stopped=True), sink)
        await engine.signal(handle, "SIGTERM")
        assert await engine.wait(handle, sink) == ExitStatus(exit_code=143, oom_killed=False)
        await engine.signal(handle, "SIGTERM")  # to one that has ended: nothing happens
        await engine.remove(handle)
        await engine.signal(handle, "SIGTERM")  # to one that is gone: nothing either

    async def test_resources_are_sampled_while_it_runs_and_empty_once_removed(self, subject: EngineSubject) -> None:
        engine, sink = subject.engine, Sink()
        handle = await started(engine, job_spec(owner()), subject.script(runs_until_stopped=True), sink)
        await until(lambda: engine.resources(handle).memory_bytes is not None)
        figures = engine.resources(handle)
        assert figures.memory_bytes is not None and figures.memory_bytes > 0
        assert figures.peak_memory_bytes is not None and figures.peak_memory_bytes >= figures.memory_bytes
        assert figures.pids is not None and figures.pids >= 1
        await engine.stop(handle, 0)
        await engine.wait(handle, sink)
        await engine.remove(handle)
        assert engine.resources(handle) == Resources()

    async def test_remove_is_idempotent_and_a_removed_sandbox_is_gone(self, subject: EngineSubject) -> None:
        engine, sink, job = subject.engine, Sink(), owner()
        handle = await started(engine, job_spec(job), subject.script(), sink)
        await engine.wait(handle, sink)
        await engine.remove(handle)
        await engine.remove(handle)
        assert [found for found in await engine.recover() if found.handle.job_id == job] == []
        with pytest.raises(EngineError):
            await engine.wait(handle, sink)
        await engine.stop(handle, 0)  # stopping one that is gone is not an error

    async def test_removing_a_running_sandbox_ends_it(self, subject: EngineSubject) -> None:
        engine, sink, job = subject.engine, Sink(), owner()
        handle = await started(engine, job_spec(job), subject.script(runs_until_stopped=True), sink)
        await engine.remove(handle)
        assert [found for found in await engine.recover() if found.handle.job_id == job] == []

    async def test_a_missing_image_is_image_not_found(self, subject: EngineSubject, tmp_path: Path) -> None:
        engine = subject.engine
        with pytest.raises(ImageNotFound, match="not-on-this-host"):
            await engine.start(replace(job_spec(owner()), image=MISSING_IMAGE), subject.script(), Sink())
        with pytest.raises(ImageNotFound, match="not-on-this-host"):
            await engine.open(replace(open_spec(owner(), tmp_path), image=MISSING_IMAGE))
        assert await engine.recover() == []

    async def test_recover_finds_what_an_earlier_process_of_the_worker_left_and_no_other_worker_s(
        self, subject: EngineSubject
    ) -> None:
        before, sink = subject.engine, Sink()
        running, ended = owner(), owner()
        alive = await started(
            before, job_spec(running), subject.script(stdout=b"before\n", runs_until_stopped=True), sink
        )
        done = await started(before, job_spec(ended, role=Role.COMPILE), subject.script(stdout=b"done\n"), sink)
        await before.wait(done, sink)
        other = subject.engine_of(f"other-{subject.worker_id}")
        theirs = await started(other, job_spec(owner()), subject.script(runs_until_stopped=True), Sink())
        await before.close()  # the worker goes; its sandboxes stay

        after = subject.engine_of(subject.worker_id)
        found = {item.handle.ref: item for item in await after.recover()}
        assert set(found) == {alive.ref, done.ref}, "this worker's, whether running or ended, and no other's"
        assert (found[alive.ref].handle, found[alive.ref].engine) == (alive, before.name)
        assert (found[done.ref].handle, found[done.ref].engine) == (done, before.name)
        assert all(item.started_at is not None for item in found.values())

        await after.stop(alive, 0)
        again = Sink()
        assert await after.wait(alive, again) == ExitStatus(exit_code=137, oom_killed=False)
        assert again.text(Stream.STDOUT) == "before\n", "a found sandbox's output is read from its start"
        for handle in (alive, done):
            await after.remove(handle)
        assert await after.recover() == []
        await other.stop(theirs, 0)
        await other.remove(theirs)
        await after.close()
        await other.close()

    async def test_an_open_sandbox_runs_process_after_process(self, subject: EngineSubject, tmp_path: Path) -> None:
        engine = subject.engine
        handle = await engine.open(open_spec(owner(), tmp_path))
        assert handle.role is Role.RUN
        assert await engine.check(handle) is True
        assert "PATH" in engine.environment(handle)
        assert engine.resources(handle) == Resources(), "each run measures itself; the sandbox has no figures"

        first = await engine.run(handle, request(subject.script(stdout=b"one\n", stderr=b"e\n"), "first"))
        assert (first.id, first.status, first.exit_code, first.signal) == ("first", RunStatus.EXITED, 0, None)
        assert ((tmp_path / "out").read_bytes(), (tmp_path / "err").read_bytes()) == (b"one\n", b"e\n")
        second = await engine.run(handle, request(subject.script(stdout=b"two\n", exit_code=4), "second"))
        assert (second.id, second.status, second.exit_code) == ("second", RunStatus.EXITED, 4)
        assert (tmp_path / "out").read_bytes() == b"two\n", "each run's files hold its own output"
        missing = await engine.run(handle, request(Process(("no-such-program",)), "missing"))
        assert (missing.status, missing.exit_code) == (RunStatus.EXEC_FAILED, 127)
        assert missing.error is not None and "no-such-program" in missing.error
        for result in (first, second, missing):
            assert result.cpu_s >= 0 and result.wall_s >= 0 and result.memory_bytes > 0
        await engine.remove(handle)
        assert await engine.check(handle) is False
        assert engine.environment(handle) == {}

    async def test_signals_reach_the_run_in_flight(self, subject: EngineSubject, tmp_path: Path) -> None:
        """SIGTERM is passed on to the run; SIGUSR1 has the supervisor kill it. The sandbox serves on."""
        engine = subject.engine
        handle = await engine.open(open_spec(owner(), tmp_path))
        for signal, number in (("SIGTERM", 15), ("SIGUSR1", 9)):
            (tmp_path / "out").unlink(missing_ok=True)
            process = subject.script(stdout=b"ready", runs_until_stopped=True)
            run = asyncio.ensure_future(engine.run(handle, request(process, signal)))
            await until(says(tmp_path / "out", b"ready"))
            await engine.signal(handle, signal)
            result = await asyncio.wait_for(run, 10)
            assert (result.id, result.status, result.exit_code, result.signal) == (
                signal,
                RunStatus.SIGNALED,
                None,
                number,
            )
        assert await engine.check(handle) is True
        await engine.remove(handle)

    async def test_a_run_in_a_stopped_sandbox_fails_as_an_engine_error(
        self, subject: EngineSubject, tmp_path: Path
    ) -> None:
        engine = subject.engine
        handle = await engine.open(open_spec(owner(), tmp_path))
        run = asyncio.ensure_future(
            engine.run(handle, request(subject.script(stdout=b"ready", runs_until_stopped=True), "r"))
        )
        await until(says(tmp_path / "out", b"ready"))
        await engine.stop(handle, 0)
        with pytest.raises(EngineError, match="sandbox ended"):
            await asyncio.wait_for(run, 10)
        assert await engine.check(handle) is False
        with pytest.raises(EngineError):
            await engine.run(handle, request(subject.script(), "after"))
        await engine.remove(handle)

    async def test_a_plain_sandbox_is_not_a_supervised_one(self, subject: EngineSubject) -> None:
        engine, sink = subject.engine, Sink()
        handle = await started(engine, job_spec(owner()), subject.script(runs_until_stopped=True), sink)
        assert await engine.check(handle) is False
        assert engine.environment(handle) == {}
        with pytest.raises(EngineError):
            await engine.run(handle, request(subject.script(), "r"))
        await engine.stop(handle, 0)
        await engine.remove(handle)

    async def test_a_later_process_of_the_worker_reattaches_to_a_run_and_learns_one_never_started(
        self, subject: EngineSubject, tmp_path: Path
    ) -> None:
        before = subject.engine
        handle = await before.open(open_spec(owner(), tmp_path))
        answered = await before.run(handle, request(subject.script(stdout=b"hi\n", exit_code=2), "answered"))
        await before.close()  # the worker goes

        after = subject.engine_of(subject.worker_id)
        (found,) = await after.recover()
        assert found.handle == handle
        assert await after.check(handle) is False, "not attached: only reattach connects a later process"
        with pytest.raises(EngineError):
            await after.run(handle, request(subject.script(), "too-soon"))
        # Its supervisor, its connection gone, ends cleanly. (Docker's reattach learns that a run never started
        # only from a sandbox that has ended; one still ending as it attaches is an EngineError.)
        ended = await asyncio.wait_for(after.wait(handle, Sink()), 10)
        assert ended == ExitStatus(exit_code=0, oom_killed=False)
        assert await asyncio.wait_for(after.reattach(handle, "answered"), 10) == answered
        with pytest.raises(RunNeverStarted):
            await asyncio.wait_for(after.reattach(handle, "never-sent"), 10)
        await after.remove(handle)
        await after.close()


class CodeRunningEngineContract:
    """What only an engine whose processes really run can show (`runs_code`): the fake's are scripted, so its test
    class does not take these."""

    async def test_stdin_env_and_workdir_files_reach_the_process(self, subject: EngineSubject, tmp_path: Path) -> None:
        engine, sink = subject.engine, Sink()
        (tmp_path / "data.txt").write_text("from a file\n")
        os.chmod(tmp_path, 0o755)  # the process runs as nobody
        spec = replace(job_spec(owner()), workdir="/work", mounts=(Mount(tmp_path, "/work"),))
        command = 'cat; printf "%s\\n" "$GREETING"; cat data.txt'
        process = Process(("sh", "-c", command), env={"GREETING": "from env"}, stdin=b"from stdin\n")
        handle = await started(engine, spec, process, sink)
        assert await engine.wait(handle, sink) == ExitStatus(exit_code=0, oom_killed=False)
        assert sink.text(Stream.STDOUT) == "from stdin\nfrom env\nfrom a file\n"
        await engine.remove(handle)
