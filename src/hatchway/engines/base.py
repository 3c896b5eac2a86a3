"""The engine interface: start a job's container, wait for it, stop it, remove it, find it again."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

from hatchway.engines.images import ManagedImage
from hatchway.models import Job, Resources, Stream

JOB_LABEL = "hatchway.job_id"
WORKER_LABEL = "hatchway.worker_id"
ENGINE_LABEL = "hatchway.engine"


class OutputSink(Protocol):
    """Receives a job's output as the engine reads it; called from an engine thread."""

    def write(self, stream: Stream, data: bytes) -> None: ...


@dataclass(frozen=True)
class Launch:
    """Everything the runner prepared for a job's container."""

    image: str
    env: dict[str, str]
    workspace: Path


@dataclass(frozen=True)
class Handle:
    """What the engine hands back for a started container."""

    job_id: str
    ref: str


@dataclass(frozen=True)
class ExitStatus:
    """How a container ended, as the engine saw it."""

    exit_code: int | None
    oom_killed: bool


@dataclass(frozen=True)
class Found:
    """A labelled container the engine found again, e.g. after a worker restart."""

    handle: Handle
    engine: str
    started_at: datetime | None
    """When it started; None if it was created but never started."""


@dataclass(frozen=True)
class CommandNotRunnable:
    """The container could not start the command (not found, not executable): the job's own fault."""

    exit_code: int
    message: str


class Engine(Protocol):
    """Runs jobs in containers. Everything it creates carries the job and worker labels."""

    name: str

    async def ping(self) -> bool:
        """Whether the engine answers."""
        ...

    async def probe(self) -> bool:
        """Whether the engine really runs containers: starts a tiny one and checks it exits cleanly."""
        ...

    async def start(self, job: Job, launch: Launch, sink: OutputSink) -> Handle | CommandNotRunnable:
        """Create and start the job's container; its output flows to `sink` until it exits.

        Raises ImageNotFound or EngineError.
        """
        ...

    async def wait(self, handle: Handle, sink: OutputSink) -> ExitStatus:
        """Wait until the container exits and all its output has reached the sink.

        For a container found by `recover`, the output it wrote so far is delivered to `sink` too.
        """
        ...

    def resources(self, handle: Handle) -> Resources:
        """The latest resource figures sampled for the container (live while it runs)."""
        ...

    async def stop(self, handle: Handle, grace_s: float) -> None:
        """Send SIGTERM, then SIGKILL after `grace_s`; returns once the container has stopped."""
        ...

    async def remove(self, handle: Handle) -> None:
        """Remove the container; removing one that is gone is not an error."""
        ...

    async def recover(self) -> list[Found]:
        """Every container carrying this worker's label (engines on one host see each other's)."""
        ...

    async def close(self) -> None:
        """Release the engine's connections and threads."""
        ...


class ImageService(Protocol):
    """Makes a job's image available: pull it, or build it from a Dockerfile, with a cache."""

    async def ensure(self, image: str) -> bool:
        """Pull `image` if missing; True if it was there already. Raises ImageNotFound or ImagePullFailed."""
        ...

    async def build(
        self, dockerfile: str, files: dict[str, bytes], on_output: Callable[[str], None], extra_inputs: str
    ) -> tuple[str, bool]:
        """Build (or reuse) the image for these inputs; its tag, and whether it came from cache.

        Raises BuildFailed, NotAllowed, ImageNotFound or ImagePullFailed.
        """
        ...

    def build_name(self, dockerfile: str, files: dict[str, bytes], extra_inputs: str) -> str:
        """The name `build` gives the image of these inputs (known before building, to acquire it first)."""
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
