"""The engine interface: make sandboxes, run processes in them, stop and remove them, find them again."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

from hatchway.models import Resources, Stream

if TYPE_CHECKING:
    from hatchway.sandbox.protocol import RunRequest, RunResult

JOB_LABEL = "hatchway.job_id"
WORKER_LABEL = "hatchway.worker_id"
ENGINE_LABEL = "hatchway.engine"
ROLE_LABEL = "hatchway.role"


ImageSource = Literal["built", "pulled", "imported"]


@dataclass(frozen=True)
class ManagedImage:
    """An image hatchway pulled, built or imported, as `GET /images` lists it."""

    name: str
    source: ImageSource
    size_bytes: int
    last_used: float
    in_use: int


def image_name(image: str) -> str:
    """The name the engine stores for `image`: `busybox` and `busybox:latest` are one image, so a name with
    neither a tag nor a digest gets `:latest`."""
    last = image.rsplit("/", 1)[-1]
    if "@" in image or ":" in last:
        return image
    return f"{image}:latest"


class Role(StrEnum):
    """What a sandbox is for. One job may own several (a grade compiles, then runs its tests), so recovery
    tells them apart by this label rather than reaping the second as a leftover."""

    JOB = "job"
    """A plain job: its one process is the job's command."""
    COMPILE = "compile"
    RUN = "run"
    """A grade's prepared sandbox: the supervisor runs every test in it."""
    CHECKER = "checker"
    """A grade's custom checker, compiled and run in sandboxes of its own."""
    PROBE = "probe"
    POOL = "pool"
    """A started sandbox waiting in a pool for a plain job (its owner label is the pool slot, not a job)."""
    BUILD = "build"
    """A step of building a job's image (a RUN, or the target of a COPY), with the job's limits (`BuildSandbox`)."""


SCRATCH = "/w"
"""In a supervised sandbox whose spec has a tmpfs here, each run gets a fresh private directory below it as its
working directory (the supervisor's `--scratch`)."""


class OutputSink(Protocol):
    """Receives a process's output as the engine reads it; called from an engine thread."""

    def write(self, stream: Stream, data: bytes) -> None: ...


@dataclass(frozen=True)
class Mount:
    """A host path visible in the sandbox."""

    source: Path
    target: str
    read_only: bool = True


@dataclass(frozen=True)
class SandboxSpec:
    """Everything an engine needs to make a sandbox: plain values, no domain objects.

    The root filesystem is read-only; `mounts` and `tmpfs` (path -> size in MiB) are the writable or extra
    places. Limits apply to the sandbox as a whole; a supervised sandbox also limits each process it runs.
    """

    owner: str
    """The job the sandbox belongs to (its label); recovery matches sandboxes to jobs by it."""
    role: Role
    image: str
    user: str
    memory_mb: int
    cpus: float
    pids: int
    log_bytes: int
    """How much output the engine's own copy keeps (read back only after a worker restart)."""
    network: Literal["none", "host"] = "none"
    workdir: str | None = "/"
    """The process's working directory; None: the image's own (its WORKDIR)."""
    mounts: tuple[Mount, ...] = ()
    tmpfs: Mapping[str, int] = field(default_factory=dict)
    """In a supervised sandbox, emptied after every run (with /dev/shm, /dev/mqueue and the IPC namespace)."""


@dataclass(frozen=True)
class BuildSandbox:
    """What a job's image build runs under: each step of it is a sandbox with the job's runtime and limits, and the
    whole build gets `timeout_s` (less if the worker's `build_timeout_s` is shorter) and `disk_mb` of disk."""

    owner: str
    """The job the build is for (its steps' containers carry it as their label)."""
    runtime: str
    """The engine the job runs on: `docker` (runc) or `gvisor` (runsc)."""
    memory_mb: int
    cpus: float
    pids: int
    disk_mb: int
    timeout_s: float
    network: Literal["none", "host"] = "none"
    """Its steps' network: none, unless the job's source has the operator's leave to install packages from an
    index (Fluster's `fluster.build_network`)."""


@dataclass(frozen=True)
class Process:
    """A process to run as a sandbox's one command."""

    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    stdin: bytes | None = None


@dataclass(frozen=True)
class Handle:
    """What the engine hands back for a sandbox it made."""

    job_id: str
    ref: str
    role: Role = Role.JOB


@dataclass(frozen=True)
class ExitStatus:
    """How a sandbox's process ended, as the engine saw it."""

    exit_code: int | None
    oom_killed: bool
    message: str | None = None
    """Why it ended, when the exit code alone does not say (a command that could not be started)."""


@dataclass(frozen=True)
class Found:
    """A labelled sandbox the engine found again, e.g. after a worker restart."""

    handle: Handle
    engine: str
    started_at: datetime | None
    """When it started; None if it was created but never started."""


@dataclass(frozen=True)
class CommandNotRunnable:
    """The sandbox could not start the command (not found, not executable): the job's own fault."""

    exit_code: int
    message: str


class Engine(Protocol):
    """Makes sandboxes and runs processes in them. Everything it creates carries the owner, role and worker
    labels, so `recover` finds it again after a restart.

    Two ways to use a sandbox:
    - `start` + `wait`: a fresh sandbox whose one process is the command (a plain job, a compile);
    - `open` + `run` (many times): a sandbox whose first process is hatchway's supervisor, which runs each
      process with limits of its own and measures it alone (a grade's tests).
    """

    name: str

    async def ping(self) -> bool:
        """Whether the engine answers."""
        ...

    async def probe(self) -> bool:
        """Whether the engine really runs containers: starts a tiny one and checks it exits cleanly."""
        ...

    async def start(self, spec: SandboxSpec, process: Process, sink: OutputSink) -> Handle | CommandNotRunnable:
        """Create a sandbox and start `process` as its one command; its output flows to `sink` until it exits.

        Raises ImageNotFound or EngineError.
        """
        ...

    async def wait(self, handle: Handle, sink: OutputSink) -> ExitStatus:
        """Wait until the sandbox's process exits and all its output has reached the sink.

        For a sandbox found by `recover`, the output it wrote so far is delivered to `sink` too.
        """
        ...

    async def open(self, spec: SandboxSpec) -> Handle:
        """Create and start a supervised sandbox, ready for `run`. Raises ImageNotFound, SandboxUnavailable
        or EngineError."""
        ...

    def environment(self, handle: Handle) -> dict[str, str]:
        """The environment an open sandbox's image defines (PATH and the like): what a run's own env goes over,
        since the supervisor gives a run exactly the env its request names."""
        ...

    async def run(self, handle: Handle, request: RunRequest) -> RunResult:
        """Run one process in a supervised sandbox and return its measurements; the supervisor kills whatever
        it left before answering. Raises EngineError if the sandbox is gone or the supervisor misbehaves."""
        ...

    async def reattach(self, handle: Handle, run_id: str) -> RunResult:
        """Connect again to the supervisor of a sandbox whose connection was lost (a worker restart, an engine
        restart) and return the result of run `run_id`: at once if it has ended meanwhile, else when it ends.
        Raises EngineError if the sandbox is gone or the run's answer cannot be found."""
        ...

    def resources(self, handle: Handle) -> Resources:
        """The latest resource figures sampled for the sandbox (live while it runs)."""
        ...

    async def check(self, handle: Handle) -> bool:
        """Whether an open supervised sandbox still answers (its supervisor pings back); never raises."""
        ...

    async def stop(self, handle: Handle, grace_s: float) -> None:
        """Send SIGTERM, then SIGKILL after `grace_s`; returns once the sandbox has stopped."""
        ...

    async def signal(self, handle: Handle, signal: str) -> None:
        """Send `signal` (e.g. "SIGTERM") to the sandbox's first process: to a supervised sandbox's supervisor,
        SIGTERM asks it to pass SIGTERM on to the run in flight and SIGUSR1 to kill that run."""
        ...

    async def remove(self, handle: Handle) -> None:
        """Remove the sandbox; removing one that is gone is not an error."""
        ...

    async def recover(self) -> list[Found]:
        """Every sandbox carrying this worker's label (engines on one host see each other's)."""
        ...

    async def close(self) -> None:
        """Release the engine's connections and threads."""
        ...


class ImageService(Protocol):
    """Makes a job's image available: pull it, or build it from a Dockerfile, with a cache."""

    async def present(self, image: str) -> bool:
        """Whether `image` is on the engine now; nothing is pulled."""
        ...

    async def ensure(self, image: str) -> bool:
        """Pull `image` if missing; True if it was there already. Raises ImageNotFound or ImagePullFailed."""
        ...

    async def build(
        self,
        dockerfile: str,
        files: dict[str, bytes],
        on_output: Callable[[str], None],
        extra_inputs: str,
        sandbox: BuildSandbox,
    ) -> tuple[str, bool]:
        """Build (or reuse) the image for these inputs, its steps run under `sandbox`; its tag, and whether it
        came from cache. Cancelling the call stops the build. Raises BuildFailed, NotAllowed, ImageNotFound or
        ImagePullFailed.
        """
        ...

    def build_name(self, dockerfile: str, files: dict[str, bytes], extra_inputs: str, runtime: str) -> str:
        """The name `build` gives the image of these inputs built on `runtime` (known before building, to acquire
        it first)."""
        ...

    def acquire(self, image: str) -> None:
        """A job uses `image`: it must not be evicted until released (it need not exist yet)."""
        ...

    def release(self, image: str) -> None:
        """A job no longer uses `image`."""
        ...

    async def import_rootfs(self, name: str, tarball: Path) -> ManagedImage:
        """Make image `name` from a root filesystem tar, for hosts without a registry."""
        ...

    async def managed(self) -> list[ManagedImage]:
        """The images hatchway built, pulled or imported, with their sizes and use."""
        ...

    async def evict(self) -> list[str]:
        """Remove least-recently-used built and pulled images not in use until under the cache budget."""
        ...

    async def sweep(self) -> list[str]:
        """Remove the intermediate images this worker's builds left and no build of its now runs (a worker killed
        mid-build leaves some); their ids."""
        ...
