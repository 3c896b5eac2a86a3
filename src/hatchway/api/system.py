"""/health, /info, /metrics, /stats, /sources, /pools, /workers and /workers/status.

/health and /workers/status answer for this worker, or with `?scope=fleet` for every worker of the fleet sharing
its store (the registry's, store/fleet.py): the jobs building and running on any of them, and the slots of those
alive."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Query, Response

from hatchway.api.agent_jobs import PROTOCOL_VERSION
from hatchway.api.deps import GradesDep, SettingsDep, SystemDep, WorkerView
from hatchway.api.grader_pool import PoolMember, pool_view
from hatchway.api.schemas import EngineStatus, Health, Info, Scope, WorkersStatus
from hatchway.engines.base import Engine
from hatchway.models import JobState
from hatchway.observability.host import MIB, host_facts, host_metrics, uptime_s
from hatchway.observability.metrics import CONTENT_TYPE, Snapshot
from hatchway.observability.stats import BUCKET_S, BUCKETS, Stats
from hatchway.pools.pool import PoolStatus
from hatchway.settings import Settings
from hatchway.sources import SourceStatus
from hatchway.store.fleet import WorkerHealth, WorkerStatus

router = APIRouter(tags=["system"])


ScopeQuery = Annotated[
    Scope,
    Query(description="`worker` (the default): this worker; `fleet`: every worker of the fleet sharing its store."),
]


@dataclass(frozen=True)
class _Load:
    """How busy what a status answers for is."""

    running: int
    queued: int
    slots: int
    members: list[WorkerStatus]
    """The workers whose slots count: this one, or every live one of the fleet."""
    fleet: list[WorkerStatus]


async def _load(worker: WorkerView, settings: Settings, scope: Scope) -> _Load:
    counts = await worker.counts()
    fleet = await worker.fleet()
    if scope == "fleet":
        alive = [member for member in fleet if member.health == WorkerHealth.ALIVE]
        running = counts[JobState.RUNNING] + counts[JobState.BUILDING]
        return _Load(running, counts[JobState.QUEUED], sum(member.slots for member in alive), alive, fleet)
    mine = [member for member in fleet if member.id == worker.worker_id]
    # Before it registers, a worker's jobs are all the store's (one worker on SQLite).
    running = mine[0].building + mine[0].running if mine else counts[JobState.RUNNING] + counts[JobState.BUILDING]
    return _Load(running, counts[JobState.QUEUED], settings.max_concurrent_jobs, mine, fleet)


@router.get("/health", response_model=Health)
async def health(worker: SystemDep, settings: SettingsDep, response: Response, scope: ScopeQuery = "worker") -> Health:
    """Liveness and load. 503 while the engine does not answer or the worker is stopping (whatever `scope`: it is
    this worker's health; `scope=fleet` counts the load of the whole fleet and lists its workers)."""
    engine_ok = await _any(worker).ping()
    load = await _load(worker, settings, scope)
    healthy = engine_ok and worker.accepting()
    if not healthy:
        response.status_code = 503
    sources = [source.status() for source in worker.sources]
    host = host_metrics()
    return Health(
        status="ok" if healthy and not worker.problems else "degraded",
        worker_id=worker.worker_id,
        accepting=worker.accepting(),
        scope=scope,
        running=load.running,
        queued=load.queued,
        max_concurrent_jobs=load.slots,
        fleet=load.fleet if scope == "fleet" else None,
        engine_ok=engine_ok,
        engines=_engines(worker),
        pools=worker.pools.status(),
        sources=sources,
        queue_url=next((source.url for source in sources if source.kind == "tasks"), None),
        controller=None if worker.controller is None else worker.controller.status(),
        fluster=None if worker.fluster is None else worker.fluster.status(),
        host=host,
        problems=list(worker.problems),
        uptime_seconds=uptime_s(),
        load_average=list(host.load_average),
        running_jobs=load.running,
        temperature_c=host.temperature_c,
        memory_total_mb=round(host.memory_total_bytes / MIB),
        memory_available_mb=round((host.memory_total_bytes - host.memory_used_bytes) / MIB),
        cpu_threads=host.cpu_count,
    )


@router.get("/sources", response_model=list[SourceStatus])
async def sources(worker: SystemDep) -> list[SourceStatus]:
    """Every job source the worker pulls from: last poll, claims, reports sent and pending, errors, backoff."""
    return [source.status() for source in worker.sources]


@router.get("/pools", response_model=list[PoolStatus])
async def pools(worker: SystemDep) -> list[PoolStatus]:
    """Every pool of started containers: idle, busy and starting containers, and jobs served."""
    return worker.pools.status()


@router.get("/workers", response_model=list[WorkerStatus])
async def workers(worker: SystemDep) -> list[WorkerStatus]:
    """Every worker of the fleet sharing this worker's store (this one alone on SQLite), by id: its address,
    version, slots, runtimes, profiles, pools and labels; its health by the store's clock (`alive`; `expired`: its
    lease ran out, and a survivor takes or took its jobs over, `reclaimed_at`/`reclaimed_by`; `stopped`: it
    stopped cleanly), its last heartbeat and lease, its generation (one per start), and its jobs building and
    running."""
    return await worker.fleet()


@router.get("/workers/status", response_model=WorkersStatus)
async def workers_status(
    worker: SystemDep, settings: SettingsDep, grades: GradesDep, scope: ScopeQuery = "worker"
) -> WorkersStatus:
    """Slots, busy and idle, started containers per pool, and health; and the grader worker pool's own answer
    (`stats`, `workers`, `config`) from them. With `scope=fleet` the slots are every live worker's of the fleet,
    each listed at its worker's address (pools and engines stay this worker's)."""
    engine_ok = await _any(worker).ping()
    load = await _load(worker, settings, scope)
    pools = worker.pools.status()
    members = [
        PoolMember(member.id, member.slots, member.building + member.running, member.address) for member in load.members
    ] or [PoolMember(worker.worker_id, load.slots, load.running, settings.address)]
    return WorkersStatus(
        worker_id=worker.worker_id,
        healthy=engine_ok and worker.accepting(),
        scope=scope,
        max_workers=load.slots,
        busy=load.running,
        idle=max(load.slots - load.running, 0),
        queued=load.queued,
        started_containers=sum(pool.idle + pool.busy for pool in pools),
        pools=pools,
        engines=_engines(worker),
        **pool_view(members=members, capabilities=sorted(grades.profiles), settings=settings),
    )


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE: {"schema": {"type": "string"}}}, "description": "Prometheus text"}},
)
async def metrics(worker: SystemDep, settings: SettingsDep) -> Response:
    """Counters, histograms and gauges in the Prometheus text format (see docs/operations.md, "Metrics")."""
    snapshot = Snapshot(
        jobs_by_state=await worker.counts(),
        max_concurrent_jobs=settings.max_concurrent_jobs,
        engines=dict(worker.health.ok),
        pools=worker.pools.status(),
        sources=[source.status() for source in worker.sources],
        callback_attempts=worker.callbacks.attempts,
    )
    return Response(worker.metrics.render(snapshot), media_type=CONTENT_TYPE)


@router.get("/stats", response_model=Stats)
async def stats(
    worker: SystemDep,
    window_s: Annotated[int, Query(ge=BUCKET_S, le=BUCKET_S * BUCKETS, description="How far back to look.")] = 3600,
) -> Stats:
    """Jobs finished per minute, with their duration and queue-wait percentiles, over the last `window_s`
    (kept in memory since start-up: the dashboard's charts)."""
    return worker.stats.window(window_s)


@router.get("/info", response_model=Info)
async def info(worker: SystemDep, settings: SettingsDep) -> Info:
    """Who this worker is, what it runs and what it allows."""
    return Info(
        worker_id=worker.worker_id,
        version=worker.version,
        engines=_engines(worker),
        runtimes=list(worker.engines),
        default_runtime=settings.default_runtime,
        gvisor_fallback=settings.gvisor_fallback,
        allowed_images=settings.allowed_images,
        allow_host_network=settings.allow_host_network,
        max_concurrent_jobs=settings.max_concurrent_jobs,
        default_limits=settings.default_limits,
        max_limits=settings.max_limits,
        kill_grace_s=settings.kill_grace_s,
        problems=list(worker.problems),
        **host_facts().model_dump(),
        protocol_version=PROTOCOL_VERSION,
        labels=[f"{key}={value}" if value else key for key, value in settings.labels.items()],
    )


def _engines(worker: WorkerView) -> list[EngineStatus]:
    return [EngineStatus(name=name, available=ok) for name, ok in worker.health.ok.items()]


def _any(worker: WorkerView) -> Engine:
    return next(iter(worker.engines.values()))
