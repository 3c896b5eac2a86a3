"""Supervised sandboxes on the real Docker engine: open, run, stop, remove, and their host cgroups."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path

import docker
import pytest

from hatchway.engines import cgroups
from hatchway.engines.base import Mount, Role, SandboxSpec
from hatchway.engines.docker import DockerEngine
from hatchway.engines.docker_channel import SupervisorChannel
from hatchway.engines.docker_host import DockerHost
from hatchway.errors import EngineError, RunNeverStarted
from hatchway.sandbox.protocol import RunRequest, RunStatus
from tests.conftest import PYTHON, containers_of, until

pytestmark = pytest.mark.docker

NOBODY = 65534


@pytest.fixture
async def host() -> AsyncIterator[DockerHost]:
    made = DockerHost(docker_url=None, max_concurrent_jobs=2)
    yield made
    made.close()


def engine(host: DockerHost, worker_id: str, runtime: str | None) -> DockerEngine:
    return DockerEngine(host, name="docker" if runtime is None else "gvisor", worker_id=worker_id, runtime=runtime)


def spec(worker_id: str, io: Path) -> SandboxSpec:
    return SandboxSpec(
        owner=f"job-{worker_id}",
        role=Role.RUN,
        image=PYTHON,
        user=f"{NOBODY}:{NOBODY}",
        memory_mb=256,
        cpus=1.0,
        pids=64,
        log_bytes=65536,
        mounts=(Mount(io, "/.hatchway/io", read_only=False),),
        tmpfs={"/tmp": 64, "/w": 64},
    )


def request(*argv: str, **limits: float | int) -> RunRequest:
    return RunRequest(
        argv=argv,
        uid=NOBODY,
        gid=NOBODY,
        stdout_path="/.hatchway/io/out",
        stderr_path="/.hatchway/io/err",
        scratch=True,
        cpu_time_s=float(limits.get("cpu_s", 5)),
        wall_time_s=float(limits.get("wall_s", 10)),
        memory_bytes=int(limits.get("memory_mb", 128)) * 2**20,
        processes=32,
        file_size_bytes=2**20,
    )


def says(path: Path, text: str) -> Callable[[], bool]:
    """Whether the file at `path` (a run's output) holds exactly `text` yet."""
    return lambda: path.is_file() and path.read_text() == text


# A run that says it has started, then waits (polling inside the sandbox) until the test lets it end.
WAIT_FOR_GO = "echo started; while [ ! -e /.hatchway/io/go ]; do sleep 0.01; done"


def sandbox_cgroups(worker_id: str) -> list[str]:
    """The worker's sandbox cgroups in every hierarchy, as `hierarchy/sandbox` (runc makes a sandbox's path in
    the hierarchies hatchway does not use too)."""
    found = []
    for hierarchy in cgroups.hierarchies():
        base = hierarchy / cgroups.worker_parent(worker_id).lstrip("/")
        if base.is_dir():
            found += [f"{hierarchy.name}/{entry.name}" for entry in os.scandir(base) if entry.is_dir()]
    return sorted(found)


@pytest.mark.parametrize("runtime", [None, "runsc"], ids=["runc", "gvisor"])
async def test_a_sandbox_runs_many_processes_each_measured_alone(
    host: DockerHost, worker_id: str, runtime: str | None, tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    sandboxes = engine(host, worker_id, runtime)
    os.chmod(tmp_path, 0o700)
    handle = await sandboxes.open(spec(worker_id, tmp_path))
    try:
        hello = await sandboxes.run(handle, request("sh", "-c", "echo hi; id -u"))
        assert (hello.status, hello.exit_code) == (RunStatus.EXITED, 0)
        assert (tmp_path / "out").read_text() == f"hi\n{NOBODY}\n"
        hog = await sandboxes.run(handle, request("python3", "-c", "b = bytearray(300 << 20)", memory_mb=64))
        assert hog.oom_killed and hog.memory_bytes >= 32 * 2**20
        after = await sandboxes.run(handle, request("true"))
        assert (after.status, after.exit_code, after.oom_killed) == (RunStatus.EXITED, 0, False)
        assert after.memory_bytes < 32 * 2**20, "the next run's peak is its own"
        if runtime is None:
            assert sandbox_cgroups(worker_id), "a runc sandbox has a host cgroup of its own"
    finally:
        await sandboxes.remove(handle)
        await sandboxes.close()
    assert containers_of(docker_client, worker_id) == []
    assert sandbox_cgroups(worker_id) == [], "removing the sandbox removes its cgroups"
    assert not any(
        (hierarchy / cgroups.worker_parent(worker_id).lstrip("/")).exists() for hierarchy in cgroups.hierarchies()
    ), "closing the engine removes the worker's own cgroup directory"


async def test_a_stopped_sandbox_fails_its_run_as_an_engine_error(
    host: DockerHost, worker_id: str, tmp_path: Path
) -> None:
    sandboxes = engine(host, worker_id, None)
    handle = await sandboxes.open(spec(worker_id, tmp_path))
    try:
        running = asyncio.ensure_future(
            sandboxes.run(handle, request("sh", "-c", "echo started; exec sleep 30", wall_s=60))
        )
        # The run is under way inside the sandbox (the supervisor read the request and the program wrote): the
        # stop cuts off a run, not a request still on its way.
        await until(says(tmp_path / "out", "started\n"), "the run never started in its sandbox")
        assert not running.done()
        await sandboxes.stop(handle, 0)
        with pytest.raises(EngineError, match="sandbox ended"):
            await running
    finally:
        await sandboxes.remove(handle)
        await sandboxes.close()


async def test_a_sandbox_left_by_an_earlier_run_is_removed_with_its_cgroups(
    host: DockerHost, worker_id: str, tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    before = engine(host, worker_id, None)
    await before.open(spec(worker_id, tmp_path))
    await before.close()  # the worker goes; its sandbox stays
    after = engine(host, worker_id, None)  # a new worker process: it knows nothing of the sandbox
    found = await after.recover()
    assert [item.handle.role for item in found] == [Role.RUN]
    await after.remove(found[0].handle)
    await after.close()
    assert containers_of(docker_client, worker_id) == []
    assert sandbox_cgroups(worker_id) == []


async def test_reattach_finds_a_run_s_answer_before_and_after_it_and_a_run_that_never_started(
    host: DockerHost,
    worker_id: str,
    tmp_path: Path,
    docker_client: docker.DockerClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The worker dies (its channel closes) with one sandbox running a request, one that answered meanwhile and one
    whose request never reached it: a new worker gets the first answer over a new attach, the second from the log,
    and learns at once, instead of waiting for ever, that the third never ran."""
    io = [tmp_path / str(n) for n in range(3)]
    for path in io:
        path.mkdir()
        path.chmod(0o777)
    before = engine(host, worker_id, None)
    handles = [await before.open(spec(worker_id, path)) for path in io]
    sent = [
        asyncio.ensure_future(before.run(handle, replace(request("sh", "-c", WAIT_FOR_GO), id=f"run-{n}")))
        for n, handle in enumerate(handles[:2])
    ]
    # Wait for the new worker's read of a new attach: the one place reattach waits without a time limit.
    waiting_on_attach = threading.Event()
    read_line = SupervisorChannel.read_line

    def spied(channel: SupervisorChannel, timeout_s: float | None) -> bytes:
        if timeout_s is None:
            waiting_on_attach.set()
        return read_line(channel, timeout_s)

    monkeypatch.setattr(SupervisorChannel, "read_line", spied)
    # When a worker process dies, the kernel closes its sockets even where a thread is blocked reading one; a
    # close() in-process would leave those open (and the reading threads blocked), so the old worker's end shuts
    # its sockets down first.
    close = SupervisorChannel.close

    def dies(channel: SupervisorChannel) -> None:
        with contextlib.suppress(OSError):
            channel._raw.shutdown(socket.SHUT_RDWR)
        close(channel)

    monkeypatch.setattr(SupervisorChannel, "close", dies)
    after = engine(host, worker_id, None)
    try:
        for n in (0, 1):
            await until(says(io[n] / "out", "started\n"), f"run-{n} never started in its sandbox")
        await before.close()  # the old worker's channels close: each supervisor reads the end of its stdin
        monkeypatch.setattr(SupervisorChannel, "close", close)
        (io[1] / "go").touch()  # run-1 answers now, with nobody attached: its answer is only in the log
        for n in (1, 2):  # it answered and read the end of its input, or read only that: either way it ended
            ended = await asyncio.to_thread(docker_client.api.wait, handles[n].ref, timeout=20)
            assert ended["StatusCode"] == 0, f"sandbox {n}'s supervisor did not end cleanly at the end of its input"
        assert not sent[0].done() or sent[0].exception() is not None, "run-0 cannot have answered the old worker"
        early = await after.reattach(handles[1], "run-1")
        assert (early.id, early.status, early.exit_code) == ("run-1", RunStatus.EXITED, 0)
        with pytest.raises(RunNeverStarted):
            await asyncio.wait_for(after.reattach(handles[2], "run-2"), 10)
        # run-0 still waits, so its answer is in no log: the reattach must wait for it on its new attach.
        reattached = asyncio.ensure_future(after.reattach(handles[0], "run-0"))
        assert await asyncio.to_thread(waiting_on_attach.wait, 20), "the reattach never waited on a new attach"
        assert not reattached.done()
        (io[0] / "go").touch()
        late = await asyncio.wait_for(reattached, 20)
        assert (late.id, late.status, late.exit_code) == ("run-0", RunStatus.EXITED, 0)
    finally:
        for path in io:
            (path / "go").touch()  # whatever failed, no run waits for ever
        await asyncio.gather(*sent, return_exceptions=True)  # the old worker's side of the runs: cut off
        for handle in handles:
            await after.remove(handle)
        await after.close()
