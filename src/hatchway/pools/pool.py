"""One pool's state (the containers it keeps for a key) and how it is shown."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from hatchway.pools.slot import PoolKey, Slot


@dataclass
class Pool:
    """The containers kept for one key."""

    key: PoolKey
    size: int
    reuse_jobs: int
    disk_mb: int
    configured: bool
    idle: deque[Slot] = field(default_factory=deque)
    busy: set[Slot] = field(default_factory=set)
    starting: int = 0
    waiting: int = 0
    """Jobs waiting for a container being started or reset."""
    served: int = 0
    hits: int = 0
    last_used: float = field(default_factory=time.monotonic)
    failures: int = 0
    retry_at: float = 0.0
    last_error: str | None = None

    def status(self) -> PoolStatus:
        return PoolStatus(
            image=self.key.image,
            runtime=self.key.runtime,
            origin="config" if self.configured else "warm",
            size=self.size,
            reuse_jobs=self.reuse_jobs,
            disk_mb=self.disk_mb,
            idle=len(self.idle),
            busy=len(self.busy),
            starting=self.starting,
            jobs_served=self.served,
            last_error=self.last_error,
        )


class PoolStatus(BaseModel):
    """One pool as `GET /pools` and `/health` show it."""

    model_config = ConfigDict(frozen=True)

    image: str
    runtime: str
    origin: Literal["config", "warm"] = Field(description="Configured, or kept for an image that ran recently.")
    size: int = Field(description="How many idle containers it keeps ready.")
    reuse_jobs: int
    disk_mb: int
    idle: int
    busy: int
    starting: int = Field(description="Containers being started or reset for it now.")
    jobs_served: int
    last_error: str | None = Field(description="Why its last container failed to start, if it did.")
