"""The engine interface: start a job's container, wait for it, stop it, remove it, find it again."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

from hatchway.models import Job, Resources, Stream

JOB_LABEL = "hatchway.job_id"
WORKER_LABEL = "hatchway.worker_id"


class OutputSink(Protocol):
    """Receives a job's output as the engine reads it; called from an engine thread."""

    def write(self, stream: Stream, data: bytes) -> None: ...


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
    worker_id: str
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

    async def start(self, job: Job, workspace: Path, sink: OutputSink) -> Handle | CommandNotRunnable:
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
        """The latest resource figures sampled for the container."""
        ...

    async def stop(self, handle: Handle, grace_s: float) -> None:
        """Send SIGTERM, then SIGKILL after `grace_s`; returns once the container has stopped."""
        ...

    async def remove(self, handle: Handle) -> None:
        """Remove the container; removing one that is gone is not an error."""
        ...

    async def recover(self) -> list[Found]:
        """Every container carrying this worker's label."""
        ...

    async def close(self) -> None:
        """Release the engine's connections and threads."""
        ...
