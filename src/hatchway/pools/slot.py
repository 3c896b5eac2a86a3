"""One started container in a pool, with its disk: what it is, and the job it serves now."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from enum import StrEnum

from hatchway.engines.base import Engine, Handle
from hatchway.engines.volumes import Volume
from hatchway.models import Stream
from hatchway.sandbox.protocol import RunResult


@dataclass(frozen=True)
class PoolKey:
    """What a pooled container can serve: jobs on this image and runtime."""

    image: str
    runtime: str

    def __str__(self) -> str:
        return f"{self.image} ({self.runtime})"


class SlotState(StrEnum):
    IDLE = "idle"
    BUSY = "busy"
    RESETTING = "resetting"


@dataclass(eq=False)
class Slot:
    """A started, supervised container and its volume, mounted at the pool's working directory and /tmp.

    While it serves a job, `run` is the supervisor's run of the job's command; `stopped` records that the
    worker had to stop that run (a kill, a timeout, an output flood), after which the container is never reused:
    a late signal could otherwise reach the next job.
    """

    name: str
    key: PoolKey
    engine: Engine
    handle: Handle
    volume: Volume
    disk_mb: int
    """The disk the container's volume was made for: the most a job in it may have."""
    environment: dict[str, str]
    limit_mb: int = 0
    """What the volume lets a job write now (set for each job that needs another limit than the last)."""
    state: SlotState = SlotState.IDLE
    served: int = 0
    job_id: str | None = None
    run: asyncio.Task[RunResult] | None = None
    result: RunResult | None = None
    stopped: bool = False
    anomaly: str | None = None
    """Why the container must not serve again (a failed wipe, a supervisor error), if it must not."""
    tail: asyncio.Task[None] | None = field(default=None, repr=False)
    offsets: dict[Stream, int] = field(default_factory=dict)
    """How much of each of the job's output files has been passed on (so that a run found again goes on)."""
    keep_bytes: int = 0
    checked_at: float = field(default_factory=time.monotonic)
    """When its supervisor last answered (a ping, or a job)."""
