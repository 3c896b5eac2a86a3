"""What a worker is made of: every part `bootstrap` builds, named. The worker starts and drains them; the API and
the command line are handed the few they use."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from hatchway.bundles import BundleCache
from hatchway.engines.base import Engine, ImageService
from hatchway.engines.health import EngineHealth
from hatchway.engines.volume_stock import VolumeStock
from hatchway.engines.volumes import Volumes
from hatchway.grading.service import GradeService
from hatchway.jobs.cancels import CancelRequests
from hatchway.jobs.dispatch import Dispatcher
from hatchway.jobs.event_feed import EventFeed
from hatchway.jobs.listener import StoreListener
from hatchway.jobs.notify import JobSignals
from hatchway.jobs.policy import Policy
from hatchway.jobs.recovery import Recovery
from hatchway.jobs.scheduler import Scheduler
from hatchway.jobs.service import JobService
from hatchway.observability.metrics import Metrics
from hatchway.observability.stats import JobStats
from hatchway.output.artifacts import ArtifactStore
from hatchway.pools import Pools
from hatchway.settings import Settings
from hatchway.sources import JobSource
from hatchway.store.base import JobStore
from hatchway.worker.callbacks import CallbackSender
from hatchway.worker.fluster_reports import FlusterLink
from hatchway.worker.lease import Lease
from hatchway.worker.loops import Services
from hatchway.worker.maintenance import Maintenance
from hatchway.worker.registration import ControllerLink


@dataclass(frozen=True, kw_only=True)
class Parts:
    """Every part of one worker, as `bootstrap.parts` wired them."""

    settings: Settings
    store: JobStore
    engines: Mapping[str, Engine]
    images: ImageService
    bundles: BundleCache
    volumes: Volumes
    volume_stock: VolumeStock
    health: EngineHealth
    policy: Policy
    signals: JobSignals
    metrics: Metrics
    stats: JobStats
    artifacts: ArtifactStore
    pools: Pools
    dispatcher: Dispatcher
    scheduler: Scheduler
    recovery: Recovery
    jobs: JobService
    grades: GradeService
    sources: list[JobSource]
    """Every job source; the HTTP API is added to it by whoever serves it (`Worker.add_source`)."""
    controller: ControllerLink | None
    fluster: FlusterLink | None
    """Registration with Fluster's controller and its state reports, when the settings name one."""
    callbacks: CallbackSender
    lease: Lease
    """Its registration and lease in the store, and the takeover of lost workers."""
    maintenance: Maintenance
    services: Services
    event_feed: EventFeed
    cancels: CancelRequests
    listener: StoreListener
    """Follows the store's wake-ups (every worker's, in a fleet) for the scheduler, the event feed and `cancels`."""
    pushed_stop: asyncio.Event
    supervisor: Callable[[], Path]
    """The sandbox supervisor's binary as sandboxes mount it; raises SandboxUnavailable if it is not built."""
    problems: list[str]
    """What the worker lacks though it takes jobs, found at its start (`/health` and `/info` say so)."""
    """Set once the drain is over: sources clients push to (the HTTP API) close then, and event streams end."""

    @property
    def worker_id(self) -> str:
        return self.settings.worker_id
