"""What the API's routes are handed: each route declares the few services it uses (FastAPI dependencies), never
the whole worker. `ApiServices.of` picks them out of a worker's parts."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, TypeVar

from fastapi import Depends, Request

from hatchway import __version__
from hatchway.api.forwarding import Peers
from hatchway.bundles import BundleCache
from hatchway.engines.base import Engine, ImageService
from hatchway.engines.health import EngineHealth
from hatchway.grading.service import GradeService
from hatchway.jobs.event_feed import EventFeed
from hatchway.jobs.service import JobService
from hatchway.models import JobState
from hatchway.observability.metrics import Metrics
from hatchway.observability.stats import JobStats
from hatchway.output.artifacts import ArtifactStore
from hatchway.pools import Pools
from hatchway.settings import Settings
from hatchway.sources import JobSource
from hatchway.store.fleet import WorkerStatus
from hatchway.worker.callbacks import CallbackSender
from hatchway.worker.fluster_reports import FlusterLink
from hatchway.worker.parts import Parts
from hatchway.worker.registration import ControllerLink

_T = TypeVar("_T")


@dataclass(frozen=True, kw_only=True)
class WorkerView:
    """What the system routes (/health, /info, /metrics, /stats, /sources, /pools, /workers, /workers/status)
    read."""

    worker_id: str
    version: str
    accepting: Callable[[], bool]
    counts: Callable[[], Awaitable[dict[JobState, int]]]
    fleet: Callable[[], Awaitable[list[WorkerStatus]]]
    """Every worker registered in the store (this one alone on SQLite)."""
    engines: Mapping[str, Engine]
    health: EngineHealth
    pools: Pools
    sources: Sequence[JobSource]
    controller: ControllerLink | None
    fluster: FlusterLink | None
    callbacks: CallbackSender
    metrics: Metrics
    stats: JobStats
    problems: Sequence[str]
    """What the worker lacks though it takes jobs (the sandbox supervisor, say)."""


@dataclass(frozen=True, kw_only=True)
class ApiServices:
    """Every service the API uses, each handed to the routes that need it."""

    settings: Settings
    jobs: JobService
    grades: GradeService
    artifacts: ArtifactStore
    images: ImageService
    bundles: BundleCache
    events: EventFeed
    system: WorkerView
    peers: Peers

    @classmethod
    def of(cls, parts: Parts) -> ApiServices:
        jobs = parts.jobs
        return cls(
            settings=parts.settings,
            jobs=jobs,
            grades=parts.grades,
            artifacts=parts.artifacts,
            images=parts.images,
            bundles=parts.bundles,
            events=parts.event_feed,
            peers=Peers(parts.worker_id, parts.store.worker_address if parts.settings.store_url else None),
            system=WorkerView(
                worker_id=parts.worker_id,
                version=__version__,
                accepting=lambda: jobs.accepting,
                counts=parts.store.counts,
                fleet=parts.store.workers,
                engines=parts.engines,
                health=parts.health,
                pools=parts.pools,
                sources=parts.sources,
                controller=parts.controller,
                fluster=parts.fluster,
                callbacks=parts.callbacks,
                metrics=parts.metrics,
                stats=parts.stats,
                problems=parts.problems,
            ),
        )


def _picked(pick: Callable[[ApiServices], _T]) -> Callable[[Request], Awaitable[_T]]:
    """A dependency handing a route one of the app's services; async, so FastAPI does not hop to a thread for it
    on every request."""

    async def dependency(request: Request) -> _T:
        return pick(request.app.state.services)

    return dependency


async def _on_submit(request: Request) -> Callable[[], None]:
    on_submit: Callable[[], None] = request.app.state.on_submit
    return on_submit


SettingsDep = Annotated[Settings, Depends(_picked(lambda services: services.settings))]
JobsDep = Annotated[JobService, Depends(_picked(lambda services: services.jobs))]
GradesDep = Annotated[GradeService, Depends(_picked(lambda services: services.grades))]
ArtifactsDep = Annotated[ArtifactStore, Depends(_picked(lambda services: services.artifacts))]
ImagesDep = Annotated[ImageService, Depends(_picked(lambda services: services.images))]
EventsDep = Annotated[EventFeed, Depends(_picked(lambda services: services.events))]
PeersDep = Annotated[Peers, Depends(_picked(lambda services: services.peers))]
SystemDep = Annotated[WorkerView, Depends(_picked(lambda services: services.system))]
OnSubmitDep = Annotated[Callable[[], None], Depends(_on_submit)]
"""What to call once a job or grading is created (`create_app`'s `on_submit`)."""
