"""The Docker engine: fresh, locked-down containers through the Docker Engine API, either running one process
(a job) or hatchway's supervisor, which runs many (a grading's tests; see `docker_supervised`).

One class serves both runc (`docker`) and gVisor (`gvisor`, Docker's `runsc` runtime). The SDK blocks, so
every call runs in the host's thread pool; nothing above this package sees a docker or requests exception.
Output is read from a socket attached *before* the container starts (a `logs --follow` started later can
miss the last output of a short job), which also carries stdin. If the engine goes away mid-run (a restart with
live-restore keeps the container running), the next `wait` reads the rest of the output from the engine's log,
skipping the bytes the socket had delivered. How a container is configured is `docker_config`'s; copying its
attached stream, `docker_streams`'.
"""

from __future__ import annotations

import contextlib
import logging
import math
import socket
import threading
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import docker
import docker.errors

from hatchway.engines import build_disk, cgroups
from hatchway.engines import docker_streams as streams
from hatchway.engines import docker_supervised as supervised
from hatchway.engines.base import (
    ENGINE_LABEL,
    JOB_LABEL,
    ROLE_LABEL,
    WORKER_LABEL,
    CommandNotRunnable,
    ExitStatus,
    Found,
    Handle,
    OutputSink,
    Process,
    Role,
    SandboxSpec,
)
from hatchway.engines.cgroups import SandboxCgroup
from hatchway.engines.docker_channel import SupervisorChannel
from hatchway.engines.docker_config import container_config
from hatchway.engines.docker_host import FOREIGN_ERRORS, PROBE_COMMAND, DockerHost, explain
from hatchway.engines.offline_etc import OfflineEtc, temporary_offline_etc
from hatchway.errors import EngineError, ImageNotFound
from hatchway.models import PROGRAM_STREAMS, Resources, Stream
from hatchway.sandbox.binary import supervisor_path
from hatchway.sandbox.protocol import RunRequest, RunResult

log = logging.getLogger(__name__)

_PROBE_TIMEOUT_S = 60
# How the runtime says it could not exec the command: the job's fault, reported like a shell would.
_NOT_FOUND_HINTS = ("executable file not found", "no such file or directory")
_NOT_EXECUTABLE_HINTS = ("permission denied",)
_SAMPLE_INTERVAL_S = 0.25


@dataclass
class _Live:
    """What the engine keeps for a container this process is watching."""

    sock: Any = None
    pump: Future[None] | None = None
    channel: SupervisorChannel | None = None
    cgroup: SandboxCgroup | None = None
    environment: dict[str, str] = field(default_factory=dict)
    done: threading.Event = field(default_factory=threading.Event)
    memory_bytes: int | None = None
    peak_memory_bytes: int | None = None
    cpu_s: float | None = None
    pids: int | None = None
    delivered: dict[Stream, int] = field(default_factory=lambda: dict.fromkeys(PROGRAM_STREAMS, 0))
    """Bytes of each stream delivered to the sink so far: where reading the engine's log back resumes."""


class DockerEngine:
    """An `Engine` on the Docker Engine API, with runc or another registered runtime (runsc for gVisor)."""

    def __init__(
        self,
        host: DockerHost,
        *,
        name: str,
        worker_id: str,
        runtime: str | None = None,
        supervisor: Callable[[], Path] = supervisor_path,
        offline_etc: Callable[[], OfflineEtc] = temporary_offline_etc,
    ) -> None:
        self.name = name
        self._host = host
        self._worker_id = worker_id
        self._runtime = runtime
        self._supervisor = supervisor
        self._offline_etc = offline_etc
        # Host cgroups exist for runc only: gVisor's sandboxes see an emulated kernel of their own.
        self._cgroups = runtime is None and cgroups.available()
        self._live: dict[str, _Live] = {}
        self._homes: dict[str, str] = {}

    async def ping(self) -> bool:
        return await self._host.ping()

    async def probe(self) -> bool:
        try:
            return await self._host.call(self._probe)
        except EngineError as exc:
            log.warning("engine %s does not work: %s", self.name, exc, extra={"event": "engine_probe_failed"})
            return False

    async def start(self, spec: SandboxSpec, process: Process, sink: OutputSink) -> Handle | CommandNotRunnable:
        return await self._host.call(self._start, spec, process, sink)

    async def wait(self, handle: Handle, sink: OutputSink) -> ExitStatus:
        return await self._host.call(self._wait, handle, sink)

    async def open(self, spec: SandboxSpec) -> Handle:
        return await self._host.call(self._open, spec)

    def environment(self, handle: Handle) -> dict[str, str]:
        live = self._live.get(handle.ref)
        return {} if live is None else dict(live.environment)

    async def run(self, handle: Handle, request: RunRequest) -> RunResult:
        live = self._live.get(handle.ref)
        if live is None or live.channel is None:
            raise EngineError(f"sandbox {handle.ref[:12]} is not an open supervised sandbox")
        return await self._host.call(supervised.run, live.channel, request)

    async def reattach(self, handle: Handle, run_id: str) -> RunResult:
        return await self._host.call(self._reattach, handle, run_id)

    async def check(self, handle: Handle) -> bool:
        live = self._live.get(handle.ref)
        if live is None or live.channel is None:
            return False
        try:
            return await self._host.call(supervised.ping, live.channel)
        except EngineError:
            return False

    def resources(self, handle: Handle) -> Resources:
        live = self._live.get(handle.ref)
        if live is None:
            return Resources()
        return Resources(
            memory_bytes=live.memory_bytes, peak_memory_bytes=live.peak_memory_bytes, cpu_s=live.cpu_s, pids=live.pids
        )

    async def stop(self, handle: Handle, grace_s: float) -> None:
        await self._host.call(self._stop, handle.ref, grace_s)

    async def signal(self, handle: Handle, signal: str) -> None:
        await self._host.call(self._signal, handle.ref, signal)

    async def remove(self, handle: Handle) -> None:
        await self._host.call(self._remove, handle.ref, handle.role)

    async def recover(self) -> list[Found]:
        return await self._host.call(self._recover)

    async def close(self) -> None:
        for live in self._live.values():
            live.done.set()
            if live.channel is not None:
                live.channel.close()  # the sandbox itself outlives the worker, for recovery to deal with
        if self._cgroups:
            cgroups.release(self._worker_id)

    # Everything below runs in the host's threads.

    def _api(self) -> docker.APIClient:
        return self._host.api()

    def _probe(self) -> bool:
        api = self._api()
        image = self._host.probe_image()
        host_config = api.create_host_config(network_mode="none", runtime=self._runtime)
        # Labelled like a job's container, so the reaper removes it should the worker die mid-probe.
        labels = self._labels(f"probe-{self.name}", Role.PROBE)
        container_id: str = api.create_container(image, PROBE_COMMAND, host_config=host_config, labels=labels)["Id"]
        try:
            api.start(container_id)
            result = api.wait(container_id, timeout=_PROBE_TIMEOUT_S)
            return int(result["StatusCode"]) == 0
        finally:
            api.remove_container(container_id, force=True)

    def _start(self, spec: SandboxSpec, process: Process, sink: OutputSink) -> Handle | CommandNotRunnable:
        api = self._api()
        config = self._config(api, spec, list(process.argv), process.env, stdin=process.stdin is not None)
        container_id = self._create(api, spec, config)
        with_stdin = process.stdin is not None
        sock: Any = None
        try:
            sock = api.attach_socket(
                container_id, params={"stdin": int(with_stdin), "stdout": 1, "stderr": 1, "stream": 1}
            )
            streams.raw(sock).settimeout(None)  # a job may stay silent for longer than any request timeout
            api.start(container_id)
        except docker.errors.APIError as exc:
            if sock is not None:
                streams.close(sock)
            api.remove_container(container_id, force=True)
            not_runnable = _not_runnable(exc)
            if not_runnable is not None:
                return not_runnable
            raise
        live = _Live(sock=sock)
        live.pump = self._host.pool.submit(streams.pump, sock, streams.Counted(sink, live.delivered))
        if process.stdin is not None:
            self._host.pool.submit(streams.feed_stdin, sock, process.stdin)
        self._track(container_id, live)
        return Handle(job_id=spec.owner, ref=container_id, role=spec.role)

    def _create(self, api: docker.APIClient, spec: SandboxSpec, config: dict[str, Any]) -> str:
        try:
            container_id: str = api.create_container(**config)["Id"]
        except docker.errors.ImageNotFound as exc:
            raise ImageNotFound(f"image {spec.image!r} is not on this worker") from exc
        return container_id

    def _config(
        self, api: docker.APIClient, spec: SandboxSpec, command: list[str], env: Mapping[str, str], **options: Any
    ) -> dict[str, Any]:
        labels = self._labels(spec.owner, spec.role)
        return container_config(
            api, spec, command, env, labels=labels, runtime=self._runtime, offline_etc=self._offline_etc, **options
        )

    def _labels(self, owner: str, role: Role) -> dict[str, str]:
        return {JOB_LABEL: owner, WORKER_LABEL: self._worker_id, ENGINE_LABEL: self.name, ROLE_LABEL: role.value}

    def _open(self, spec: SandboxSpec) -> Handle:
        api = self._api()
        binary = self._supervisor()
        cgroup = None
        if self._cgroups:
            cgroup = SandboxCgroup.for_sandbox(self._worker_id, uuid.uuid4().hex[:16])
            cgroup.create(memory_mb=spec.memory_mb, pids=spec.pids)
        laid_out = supervised.layout(spec, binary=binary, cgroup=cgroup, gvisor=self._runtime is not None)
        config = self._config(api, laid_out.spec, laid_out.command, {}, stdin=True, **laid_out.host_options)
        try:
            container_id = self._create(api, spec, config)
        except BaseException:
            if cgroup is not None:
                cgroup.remove()
            raise
        live = self._live[container_id] = _Live(cgroup=cgroup)
        try:
            live.channel, image_env, image_id = supervised.connect(api, container_id)
            live.environment = image_env
            if spec.role is Role.POOL:
                # A pooled job sees what a fresh container's process would. Graded programs keep the image's
                # environment alone: with HOME set, a Python test was measured 4 ms slower.
                live.environment = supervised.process_environment(
                    api, container_id, (image_id, image_env), spec.user, self._homes
                )
        except BaseException:
            self._remove(container_id)
            raise
        return Handle(job_id=spec.owner, ref=container_id, role=spec.role)

    def _track(self, container_id: str, live: _Live) -> None:
        self._live[container_id] = live
        self._host.pool.submit(self._sample, container_id, live)

    def _sample(self, container_id: str, live: _Live) -> None:
        """Sample the container's memory and CPU until it is done; cgroup v1 also reports the true peak."""
        api = self._api()
        # The first sample waits too: a job that is over that fast is not worth a stats call to the engine.
        while not live.done.wait(_SAMPLE_INTERVAL_S):
            with contextlib.suppress(*FOREIGN_ERRORS):
                _record(live, api.stats(container_id, stream=False, one_shot=True))

    def _wait(self, handle: Handle, sink: OutputSink) -> ExitStatus:
        api = self._api()
        live = self._live.get(handle.ref)
        if live is None:
            live = _Live()
            self._track(handle.ref, live)
        try:
            result = api.wait(handle.ref, timeout=None)
        except FOREIGN_ERRORS:
            self._detach(live)
            raise
        if live.pump is not None:
            live.pump.result(timeout=60)
        else:
            # Found again after a worker restart or an engine outage: what it wrote (and was not delivered yet)
            # is in the engine's log, complete now it has exited.
            streams.collect_logs(api, handle.ref, streams.Counted(sink, live.delivered), skip=dict(live.delivered))
        live.done.set()
        code = int(result["StatusCode"])
        oom_killed = code != 0 and bool(api.inspect_container(handle.ref)["State"].get("OOMKilled"))
        return ExitStatus(exit_code=code, oom_killed=oom_killed)

    def _detach(self, live: _Live) -> None:
        """The engine went away during a wait: end the attached stream (what it had not delivered is in the
        engine's log, read back by the next wait) and wait for its pump, so nothing is delivered twice."""
        if live.sock is not None:
            with contextlib.suppress(OSError):
                streams.raw(live.sock).shutdown(socket.SHUT_RDWR)  # wakes a pump blocked in recv, where close() may not
        if live.pump is not None:
            with contextlib.suppress(Exception):
                live.pump.result(timeout=10)
        if live.sock is not None:
            streams.close(live.sock)
        live.sock, live.pump = None, None

    def _stop(self, container_id: str, grace_s: float) -> None:
        api = self._api()
        try:
            if grace_s <= 0:
                api.kill(container_id)
            else:
                api.stop(container_id, timeout=math.ceil(grace_s))
        except docker.errors.NotFound:
            return
        except docker.errors.APIError as exc:
            if "is not running" not in explain(exc):
                raise

    def _reattach(self, handle: Handle, run_id: str) -> RunResult:
        live = self._live.setdefault(handle.ref, _Live())
        if live.channel is not None:
            live.channel.close()
            live.channel = None
        live.channel, result = supervised.reattach(self._api(), handle.ref, run_id)
        return result

    def _signal(self, container_id: str, signal: str) -> None:
        try:
            self._api().kill(container_id, signal=signal)
        except docker.errors.NotFound:
            return
        except docker.errors.APIError as exc:
            if "is not running" not in explain(exc):
                raise

    def _remove(self, container_id: str, role: Role = Role.JOB) -> None:
        live = self._live.pop(container_id, None)
        cgroup = None
        if live is not None:
            live.done.set()
            if live.sock is not None:
                with contextlib.suppress(OSError):
                    # A job removed while it runs: its pump may be blocked in recv, which close() alone may not wake.
                    streams.raw(live.sock).shutdown(socket.SHUT_RDWR)
                streams.close(live.sock)
            if live.channel is not None:
                live.channel.close()
            cgroup = live.cgroup
        elif self._cgroups:
            cgroup = self._cgroup_of(container_id)  # a sandbox an earlier run of the worker made
        if role is Role.BUILD:
            # A build step a crashed worker left: its layer is bound onto the build's disk, and the engine cannot
            # remove a directory that is a mount point.
            with contextlib.suppress(docker.errors.APIError):  # gone, or not running
                self._api().kill(container_id)
            build_disk.release(self._api(), container_id)
        with contextlib.suppress(docker.errors.NotFound):
            self._api().remove_container(container_id, force=True)
        if cgroup is not None:
            cgroup.remove()

    def _cgroup_of(self, container_id: str) -> SandboxCgroup | None:
        try:
            parent = self._api().inspect_container(container_id)["HostConfig"].get("CgroupParent") or ""
        except docker.errors.NotFound:
            return None
        return SandboxCgroup.of_worker(self._worker_id, parent)

    def _recover(self) -> list[Found]:
        api = self._api()
        found = []
        # Every container of this worker, whichever engine made it: the reaper must see them all.
        for summary in api.containers(all=True, filters={"label": f"{WORKER_LABEL}={self._worker_id}"}):
            container_id = summary["Id"]
            started_at = None
            if summary.get("State") != "created":
                started = api.inspect_container(container_id)["State"].get("StartedAt", "")
                started_at = _parse_docker_time(started)
            labels = summary["Labels"]
            found.append(
                Found(
                    handle=Handle(
                        job_id=labels.get(JOB_LABEL, ""), ref=container_id, role=_role(labels.get(ROLE_LABEL))
                    ),
                    engine=labels.get(ENGINE_LABEL, self.name),
                    started_at=started_at,
                )
            )
        if self._cgroups:
            # Cgroups of sandboxes that never got a container (a crash in between); the others go with their
            # containers, and one still in use cannot be removed.
            cgroups.sweep(self._worker_id)
        return found


def _record(live: _Live, stats: dict[str, Any]) -> None:
    """Keep what a stats sample says; a sample taken as the container exits is mostly empty."""
    memory = stats.get("memory_stats") or {}
    if memory.get("usage"):
        live.memory_bytes = int(memory["usage"])
    peak = memory.get("max_usage") or memory.get("usage")  # cgroup v1 reports the true peak
    if peak:
        live.peak_memory_bytes = max(live.peak_memory_bytes or 0, int(peak))
    cpu_ns = ((stats.get("cpu_stats") or {}).get("cpu_usage") or {}).get("total_usage")
    if cpu_ns:
        live.cpu_s = round(int(cpu_ns) / 1e9, 3)
    pids = (stats.get("pids_stats") or {}).get("current")
    if pids:
        live.pids = int(pids)


def _not_runnable(exc: docker.errors.APIError) -> CommandNotRunnable | None:
    text = explain(exc)
    lowered = text.lower()
    if any(hint in lowered for hint in _NOT_FOUND_HINTS):
        return CommandNotRunnable(exit_code=127, message=f"the command could not be started: {text}")
    if any(hint in lowered for hint in _NOT_EXECUTABLE_HINTS):
        return CommandNotRunnable(exit_code=126, message=f"the command could not be started: {text}")
    return None


def _role(value: str | None) -> Role:
    try:
        return Role(value or Role.JOB)
    except ValueError:  # made by a newer hatchway: a leftover to this one
        return Role.PROBE


def _parse_docker_time(value: str) -> datetime | None:
    if not value or value.startswith("0001-"):
        return None
    # Docker gives nanoseconds; Python parses at most microseconds.
    head, _, rest = value.partition(".")
    fraction = "".join(ch for ch in rest if ch.isdigit())[:6]
    return datetime.fromisoformat(f"{head}.{fraction or '0'}+00:00")
