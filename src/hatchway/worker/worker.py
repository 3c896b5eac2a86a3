"""The worker: composes store, engines, scheduler, runner and recovery; starts and stops them in order, its job
sources among them (the HTTP API too, when it has one: `hatchway serve` adds it).

Job sources talk to `worker.jobs` (the `JobService`) only; building a worker from settings is `bootstrap`'s.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping

from hatchway import __version__
from hatchway.bundles import BundleCache
from hatchway.engines.base import Engine, Found, ImageService
from hatchway.engines.health import EngineHealth
from hatchway.engines.volumes import LoopVolumes, Volumes, VolumeStock
from hatchway.errors import ConfigError, EngineError
from hatchway.grading.admission import GradeAdmission
from hatchway.grading.archive import ProblemArchives
from hatchway.grading.runner import GradeRunner
from hatchway.grading.service import GradeService
from hatchway.jobs.control import RunControl
from hatchway.jobs.event_feed import EventFeed
from hatchway.jobs.notify import JobSignals
from hatchway.jobs.policy import Policy
from hatchway.jobs.ports import PortAllocator
from hatchway.jobs.prepare import BundleLimits, Preparer, numeric_owner
from hatchway.jobs.recovery import Recovery
from hatchway.jobs.runner import JobRunner
from hatchway.jobs.scheduler import Scheduler
from hatchway.jobs.service import JobService
from hatchway.judge.profiles import resolve_profiles
from hatchway.models import Job, Reason
from hatchway.observability.metrics import Metrics
from hatchway.observability.stats import JobStats
from hatchway.output.artifacts import ArtifactStore
from hatchway.pools import Pools
from hatchway.settings import Settings
from hatchway.sources import JobSource, build_sources
from hatchway.store.base import JobStore
from hatchway.worker.callbacks import CallbackSender
from hatchway.worker.loops import Services
from hatchway.worker.maintenance import Maintenance
from hatchway.worker.registration import ControllerLink, registration

log = logging.getLogger(__name__)

_RECOVERY_RETRY_S = 2.0
_RECOVERY_SETTLE_S = 120.0  # the longest a drain waits for recovery under way (it reaps, sweeps and resumes)
# How long stopped jobs may take to be cleaned up at shutdown: removing a gVisor sandbox after a fork bomb has
# been seen to take 35 s.
_CLEAN_UP_S = 90.0
_MAX_SPARE_VOLUMES = 32
_REPORT_GRACE_S = 10.0
# How long a source clients push to may take to close once the drain is over (the HTTP API gives its open
# connections 5 s).
_PUSH_CLOSE_S = 10.0


class Worker:
    """Accepts jobs, runs them under the concurrency limit, and recovers after a restart."""

    _schedule_task: asyncio.Task[None] | None = None
    """Recovery, then the scheduler: from `start` on."""

    def __init__(
        self,
        *,
        settings: Settings,
        store: JobStore,
        engines: Mapping[str, Engine],
        images: ImageService,
        bundles: BundleCache,
        volumes: Volumes | None = None,
        on_close: Callable[[], None] = lambda: None,
    ) -> None:
        self.settings = settings
        self.worker_id = settings.worker_id
        self.store = store
        self.engines = engines
        self.images = images
        self.version = __version__
        self.health = EngineHealth(engines, worker_id=self.worker_id)
        self.policy = Policy.from_settings(
            settings, allowed_runtimes=list(engines), available_runtimes=self.health.available_runtimes
        )
        self.signals = JobSignals()
        self.metrics = Metrics()
        self.stats = JobStats()
        self.signals.end_listeners += [self.metrics.job_finished, self.stats.job_finished]
        self.artifacts = ArtifactStore(
            settings.data_dir / "artifacts",
            max_bytes=settings.artifacts_max_bytes,
            retention_s=settings.artifacts_retention_s,
        )
        self._ports = PortAllocator(*settings.port_range)
        profiles = resolve_profiles(settings.profiles)
        self.volumes = volumes or LoopVolumes(settings.data_dir / "volumes", owner=numeric_owner(settings.run_as_user))
        spares = min(settings.max_concurrent_jobs + sum(pool.size for pool in settings.pools), _MAX_SPARE_VOLUMES)
        self._volume_stock = VolumeStock(self.volumes, spares=spares)
        self._controls: dict[str, RunControl] = {}
        bundle_limits = BundleLimits(
            max_unpacked_bytes=settings.bundle_max_unpacked_bytes, max_files=settings.bundle_max_files
        )
        self._preparer = Preparer(
            images=images,
            bundles=bundles,
            ports=self._ports,
            bundle_limits=bundle_limits,
            worker_id=self.worker_id,
            controller_url=settings.controller_url,
            run_as_user=settings.run_as_user,
        )
        self.pools = Pools(
            engines=engines,
            volumes=self._volume_stock,
            images=images,
            configs=settings.pools,
            warm_total=settings.pool_warm_total,
            warm_size=settings.pool_warm_size,
            warm_idle_s=settings.pool_warm_idle_s,
            run_as_user=settings.run_as_user,
            default_limits=settings.default_limits,
            max_limits=settings.max_limits,
            worker_id=self.worker_id,
            engine_ok=lambda runtime: self.health.answering.is_set() and self.health.ok.get(runtime, False),
            slots=settings.max_concurrent_jobs,
        )
        self._runner = JobRunner(
            store=store,
            engines=engines,
            preparer=self._preparer,
            volumes=self._volume_stock,
            pools=self.pools,
            artifacts=self.artifacts,
            signals=self.signals,
            output_dir=settings.data_dir / "output",
            worker_id=self.worker_id,
            choose_runtime=self.policy.choose_runtime,
            health=self.health,
            metrics=self.metrics,
        )
        self.scheduler = Scheduler(
            store=store,
            worker_id=self.worker_id,
            max_concurrent_jobs=settings.max_concurrent_jobs,
            poll_interval_s=settings.poll_interval_s,
            launch=self._launch,
            ready=self.health.answering,
        )
        problems = ProblemArchives(bundles=bundles, limits=bundle_limits)
        self._grader = GradeRunner(
            store=store,
            engines=engines,
            images=images,
            problems=problems,
            jobs=self._runner,
            signals=self.signals,
            work_dir=settings.data_dir / "work",
            run_as_user=settings.run_as_user,
            worker_id=self.worker_id,
            choose_runtime=self.policy.choose_runtime,
            health=self.health,
        )
        self.jobs = JobService(
            store=store,
            policy=self.policy,
            signals=self.signals,
            controls=self._controls,
            wake_scheduler=self.scheduler.wake,
            worker_id=self.worker_id,
            max_concurrent_jobs=lambda: self.scheduler.max_concurrent_jobs,
            next_free_slot=self.scheduler.next_free_slot,
        )
        self.grades = GradeService(
            jobs=self.jobs,
            admission=GradeAdmission(
                policy=self.policy,
                profiles=profiles,
                default_limits=settings.grade_default_limits,
                max_limits=settings.grade_max_limits,
                max_input_bytes=settings.max_input_bytes,
            ),
            problems=problems,
            scratch=settings.data_dir / "tmp",
        )
        self.sources: list[JobSource] = build_sources(settings.sources, worker_id=self.worker_id, grades=self.grades)
        self._pulled_tasks: list[asyncio.Task[None]] = []
        self._pushed_tasks: list[asyncio.Task[None]] = []
        # Apart from the worker's stop, which pulled sources get: set once the drain is over.
        self._pushed_stop = asyncio.Event()
        self._recovery = Recovery(
            store=store,
            engines=engines,
            worker_id=self.worker_id,
            resume=self._resume,
            signals=self.signals,
            stale_dirs=(settings.data_dir / "work", settings.data_dir / "output"),
            sweep_volumes=self.volumes.sweep,
        )
        self._recovered = False
        self._recovery_over = asyncio.Event()
        """Set once recovery has resumed every job it will (or given up, the worker stopping)."""
        self.health.on_back = self._after_outage
        self.controller: ControllerLink | None = None
        if settings.controller_url:
            self.controller = ControllerLink(
                url=settings.controller_url,
                worker_id=self.worker_id,
                registration=lambda: registration(
                    settings, self.version, sorted(self.health.available_runtimes()), sorted(profiles)
                ),
                counts=store.counts,
                jobs=self.jobs,
                interval_s=settings.heartbeat_interval_s,
            )
            self.signals.listeners.append(self.controller.changed)
        self.callbacks = CallbackSender(
            store=store,
            secret=settings.callback_secret,
            retry_s=settings.callback_retry_s,
            timeout_s=settings.callback_timeout_s,
            worker_id=self.worker_id,
        )
        self.signals.end_listeners.append(self.callbacks.ended)
        # Apart from the worker's stop: jobs that end while it drains have callbacks to send too.
        self._callbacks_stop = asyncio.Event()
        self._callbacks_task: asyncio.Task[None] | None = None
        self._maintenance = Maintenance(
            store=store,
            events_keep=settings.events_keep,
            artifacts=self.artifacts,
            images=images,
            bundles=bundles,
            health=self.health,
        )
        self.services = Services(worker_id=self.worker_id)
        self._on_close = on_close
        self._stop = self.services.stopping
        # Streams of events end with the HTTP API, once the drain is over: their readers see jobs stopped by it.
        self.event_feed = EventFeed(store, self.signals, stopping=self._pushed_stop)

    @property
    def accepting(self) -> bool:
        return self.jobs.accepting

    def add_source(self, source: JobSource) -> None:
        """Take work from `source` too: for one built around this worker, as the HTTP API is (its app needs the
        worker). Call before `start`. Sources clients push to are listed first, as they start first."""
        if any(known.name == source.name for known in self.sources):
            raise ConfigError(f"sources: two sources are named {source.name!r}; give one of them another name")
        self.sources.append(source)
        self.sources.sort(key=lambda known: not known.pushes)

    # Lifecycle

    async def start(self, on_fatal: Callable[[], None] | None = None, *, probe: bool = True) -> None:
        """Start taking jobs; recovery of the previous run happens first, in the background.

        Without `probe`, every engine counts as working until a job finds otherwise (then it is probed as usual):
        for `hatchway run`, whose one job's start tells as much as a probe would, and sooner.
        """
        if on_fatal is not None:
            self.services.on_fatal = on_fatal
        if probe:
            await self.health.probe()
        else:
            self.health.assume_working()
        await self.store.prune_events(self.settings.events_keep)
        self.jobs.accepting = True
        # Clients can push work from now on, while the last run is recovered too: it is queued meanwhile.
        self._pushed_tasks = [self._run(source, self._pushed_stop) for source in self.sources if source.pushes]
        self._schedule_task = self.services.start("scheduler", self._schedule())
        if self.controller is not None:
            self.services.start("controller", self.controller.run(self._stop))
        self.services.start("maintenance", self._maintenance.run(self._stop))
        self._callbacks_task = self.services.start("callbacks", self.callbacks.run(self._callbacks_stop))
        log.info("worker started", extra={"event": "worker_started", "worker_id": self.worker_id})

    async def shutdown(self) -> None:
        """Drain, then close."""
        await self.drain()
        await self.close()

    async def drain(self) -> None:
        """Stop taking jobs, let running ones finish within the grace period, stop the rest, record all; then
        close the sources clients push to (the HTTP API), which answered until then."""
        if self._stop.is_set():
            return
        self.jobs.accepting = False
        self._stop.set()
        self.scheduler.paused = True
        log.info("worker stopping", extra={"event": "worker_stopping", "worker_id": self.worker_id})
        await self._recovery_settled()  # the jobs it resumes are this drain's to stop too
        pending = self.scheduler.tasks
        if pending:
            _, pending = await asyncio.wait(pending, timeout=self.settings.shutdown_grace_s)
        for control in list(self._controls.values()):
            control.kill(self.settings.kill_grace_s, reason=Reason.SHUTDOWN)
        if pending:
            await asyncio.wait(pending, timeout=self.settings.kill_grace_s + _CLEAN_UP_S)
        if self._pulled_tasks:  # every job has ended: its result goes to its source now, if the source answers
            await asyncio.wait(self._pulled_tasks, timeout=_REPORT_GRACE_S)
        self._callbacks_stop.set()  # a last try for each pending callback; the rest wait in the store
        if self._callbacks_task is not None:
            await asyncio.wait([self._callbacks_task], timeout=_REPORT_GRACE_S)
        await self.pools.close()
        await asyncio.to_thread(self._volume_stock.clear)
        # Every job is final and recorded, every report sent that could be: the clients of the HTTP API have seen
        # their jobs end, and it may close.
        self._pushed_stop.set()
        if self._pushed_tasks:
            await asyncio.wait(self._pushed_tasks, timeout=_PUSH_CLOSE_S)
        await self.services.stop()
        await self.health.settle()
        log.info("worker drained", extra={"event": "worker_drained", "worker_id": self.worker_id})

    async def close(self) -> None:
        """Release the store and the engines; call after `drain`. After a drain cut short (a second SIGTERM), the
        background services still running, the HTTP API among them, are cancelled first; jobs' containers are
        left to the next start's recovery."""
        await self.services.stop()
        await self.store.close()
        for engine in self.engines.values():
            await engine.close()
        self._on_close()
        log.info("worker stopped", extra={"event": "worker_stopped", "worker_id": self.worker_id})

    # Background services

    async def _schedule(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    await self._recovery.run()
                    self._recovered = True
                    break
                except EngineError as exc:
                    log.error(
                        "cannot recover jobs yet: %s",
                        exc,
                        extra={"event": "recovery_waiting", "worker_id": self.worker_id},
                    )
                    await asyncio.sleep(_RECOVERY_RETRY_S)
        finally:
            self._recovery_over.set()
        # Only now: recovery removes every labelled container and disk no job owns, a pool's new ones included.
        self.services.start("pools", self.pools.run(self._stop))
        self._pulled_tasks = [self._run(source, self._stop) for source in self.sources if not source.pushes]
        await self.scheduler.run(self._stop)

    def _run(self, source: JobSource, stop: asyncio.Event) -> asyncio.Task[None]:
        return self.services.start(f"source-{source.name}", source.run(self.jobs, stop))

    async def _recovery_settled(self) -> None:
        """Until recovery has resumed every job it will: a drain that began during it must not miss those."""
        task = self._schedule_task
        if task is None or task.done():
            return
        over = asyncio.ensure_future(self._recovery_over.wait())
        await asyncio.wait([over, task], timeout=_RECOVERY_SETTLE_S, return_when=asyncio.FIRST_COMPLETED)
        over.cancel()

    async def _after_outage(self) -> None:
        """The engine answers again: remove what the outage left that no active job owns (not before recovery
        has settled the last run's, which it does itself)."""
        self.pools.engine_restarted()
        if self._recovered:
            # A job running in a pooled container owns it under the pool's name for it.
            pooled = {control.slot.name for control in self._controls.values() if control.slot is not None}
            await self._recovery.reap(set(self._controls) | pooled)

    # Running

    def _launch(self, job: Job) -> Awaitable[None]:
        # The control exists from the moment the job is claimed, so a kill can never miss it.
        control = self._controls[job.id] = RunControl(job.id)
        self.signals.notify(job.id)  # claimed: it is building now
        runner = self._grader if job.spec.kind == "grade" else self._runner
        return self._controlled(job.id, runner.run(job, control))

    def _resume(self, job: Job, found: Found) -> None:
        control = self._controls[job.id] = RunControl(job.id)
        self._ports.claim(job.id, job.run.ports)
        self.scheduler.adopt(job.id, self._controlled(job.id, self._runner.resume(job, found, control)))

    async def _controlled(self, job_id: str, work: Awaitable[Job]) -> None:
        try:
            await work
        finally:
            del self._controls[job_id]
