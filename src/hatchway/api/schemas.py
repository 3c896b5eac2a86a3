"""Response shapes of the HTTP API that are not domain models themselves."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from hatchway.models import JobSummary, ResolvedLimits
from hatchway.observability.host import HostFacts, HostMetrics
from hatchway.pools.pool import PoolStatus
from hatchway.sources.base import SourceStatus
from hatchway.store.fleet import WorkerStatus
from hatchway.worker.fluster_registration import FlusterStatus
from hatchway.worker.registration import ControllerStatus

Scope = Literal["worker", "fleet"]
"""What a status answers for: this worker, or every worker of the fleet sharing its store."""


class JobList(BaseModel):
    """A page of jobs, newest first, without their output (`GET /jobs/{id}` has it); pass `next_cursor` as
    `cursor` for the next page."""

    jobs: list[JobSummary]
    next_cursor: str | None


class EngineStatus(BaseModel):
    """An engine and whether a probe container last ran on it."""

    name: str
    available: bool


class ArtifactInfo(BaseModel):
    """A file the job left under out/."""

    path: str
    size: int


class ImageInfo(BaseModel):
    """An image hatchway manages."""

    name: str
    source: str
    size_bytes: int
    last_used: float
    in_use: int


class Health(BaseModel):
    """Whether the worker is fit to take jobs, and how loaded it is."""

    status: str
    worker_id: str
    accepting: bool
    scope: Scope = Field(default="worker", description="What `running` and `max_concurrent_jobs` count.")
    running: int = Field(description="Jobs building or running on this worker (with `scope=fleet`: on any).")
    queued: int = Field(description="Jobs waiting in the queue, which the workers of a fleet share.")
    max_concurrent_jobs: int = Field(description="This worker's slots (with `scope=fleet`: every live worker's).")
    fleet: list[WorkerStatus] | None = Field(
        default=None, description="With `scope=fleet`: every worker of the fleet, as GET /workers lists them."
    )
    engine_ok: bool
    engines: list[EngineStatus]
    pools: list[PoolStatus]
    sources: list[SourceStatus]
    queue_url: str | None = Field(
        default=None,
        description="The queue service a tasks source pulls from (the first, if several), as the queue-pull "
        "worker's own /health says it; null without one.",
    )
    controller: ControllerStatus | None
    fluster: FlusterStatus | None = Field(
        default=None, description="The link to Fluster's controller (registration, state reports), when configured."
    )
    host: HostMetrics
    problems: list[str] = Field(
        default_factory=list,
        description="What the worker lacks though it takes jobs (the sandbox supervisor, say): `status` is then "
        "`degraded`, with 200 while it accepts jobs and the engine answers.",
    )
    # As the worker-agent system's workers say them, for its dashboard (docs/compatibility.md).
    uptime_seconds: int = Field(description="Seconds since the worker's process started.")
    load_average: list[float] = Field(description="The host's load over 1, 5 and 15 minutes.")
    running_jobs: int = Field(description="The same as `running`.")
    temperature_c: float | None = Field(description="The host's hottest sensor; null without one.")
    memory_total_mb: int
    memory_available_mb: int
    cpu_threads: int


class PoolStats(BaseModel):
    """The grader pool's worker counts: `total`, and by type and status (`ready`, `busy`)."""

    total: int
    by_type: dict[str, int] = Field(alias="byType")
    by_status: dict[str, int] = Field(alias="byStatus")


class PoolWorker(BaseModel):
    """One slot of a worker, as the grader pool lists a worker."""

    id: str
    type: str
    status: str
    endpoint: str | None
    created_at: str | None = Field(alias="createdAt")
    last_used_at: str | None = Field(alias="lastUsedAt")
    capabilities: list[str]


class PoolConfig(BaseModel):
    """The grader pool's `config`, answered with this worker's values."""

    max_workers: int = Field(alias="maxWorkers")
    worker_timeout: float = Field(alias="workerTimeout", description="Seconds a grading may wait to be answered.")
    health_check_interval: int | None = Field(alias="healthCheckInterval")
    docker_image: str | None = Field(alias="dockerImage")
    firecracker_enabled: bool = Field(alias="firecrackerEnabled")


class WorkersStatus(BaseModel):
    """The grader worker pool's `GET /workers/status`, answered from this worker's slots and started containers
    (with `scope=fleet`, from the slots of every live worker of the fleet)."""

    worker_id: str
    healthy: bool
    scope: Scope = "worker"
    max_workers: int
    """Jobs this worker runs at once (its slots; with `scope=fleet`, every live worker's)."""
    busy: int
    idle: int
    """Free slots."""
    queued: int
    started_containers: int
    """Containers started ahead in pools, idle or serving a job."""
    pools: list[PoolStatus]
    engines: list[EngineStatus]
    stats: PoolStats | None = Field(default=None, description="The grader pool's own answer, from these slots.")
    workers: list[PoolWorker] = Field(default_factory=list)
    config: PoolConfig | None = None


class Info(HostFacts):
    """What this worker is and what it allows; the host's facts and `protocol_version` and `labels` as the
    worker-agent system's workers say them, for its dashboard (docs/compatibility.md)."""

    worker_id: str
    version: str
    engines: list[EngineStatus]
    runtimes: list[str]
    default_runtime: str
    gvisor_fallback: bool
    allowed_images: list[str]
    allow_host_network: bool
    max_concurrent_jobs: int
    default_limits: ResolvedLimits
    max_limits: ResolvedLimits
    kill_grace_s: float
    problems: list[str] = Field(default_factory=list, description="What the worker lacks, as /health says.")
    protocol_version: int = Field(description="The worker-agent system's Job Protocol this worker speaks (1).")
    labels: list[str] = Field(description="`labels` as `key=value` (`key` alone for an empty value).")
