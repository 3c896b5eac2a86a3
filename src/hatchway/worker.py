"""The worker: composes store, engine, scheduler and runner, and is what every job source talks to."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import shutil
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

from hatchway import __version__
from hatchway.artifacts import ArtifactStore
from hatchway.bundles import BundleCache
from hatchway.engines.base import Engine, Found, Handle, ImageService
from hatchway.engines.docker import DockerEngine
from hatchway.engines.docker_host import DockerHost
from hatchway.engines.docker_images import DockerImages
from hatchway.engines.images import ImageManager
from hatchway.errors import EngineError, JobAlreadyFinished, JobConflict, JobNotFound, ShuttingDown
from hatchway.models import Job, JobRequest, JobState, Outcome, Reason, RunInfo, new_job_id, utcnow
from hatchway.output import OutputCapture
from hatchway.policy import Policy, image_matches, url_matches
from hatchway.ports import PortAllocator
from hatchway.prepare import BundleLimits, Preparer
from hatchway.runner import JobRunner, RunControl
from hatchway.scheduler import Scheduler
from hatchway.settings import Settings
from hatchway.signals import JobSignals
from hatchway.store.base import JobPage, JobQuery, JobStore
from hatchway.store.sqlite import SqliteStore

log = logging.getLogger(__name__)

_RECOVERY_RETRY_S = 2.0
_MAINTENANCE_INTERVAL_S = 60.0


class Worker:
    """Accepts jobs, runs them under the concurrency limit, and recovers after a restart."""

    def __init__(
        self,
        *,
        settings: Settings,
        store: JobStore,
        engines: Mapping[str, Engine],
        images: ImageService,
        bundles: BundleCache,
        on_close: Callable[[], None] = lambda: None,
    ) -> None:
        self.settings = settings
        self.worker_id = settings.worker_id
        self.store = store
        self.engines = engines
        self.images = images
        self.version = __version__
        self.engine_ok: dict[str, bool] = dict.fromkeys(engines, False)
        self.policy = Policy.from_settings(
            settings, allowed_runtimes=list(engines), available_runtimes=self.available_runtimes
        )
        self.signals = JobSignals()
        self.artifacts = ArtifactStore(
            settings.data_dir / "artifacts",
            max_bytes=settings.artifacts_max_bytes,
            retention_s=settings.artifacts_retention_s,
        )
        self._ports = PortAllocator(*settings.port_range)
        self._controls: dict[str, RunControl] = {}
        self._preparer = Preparer(
            images=images,
            bundles=bundles,
            ports=self._ports,
            bundle_limits=BundleLimits(
                max_unpacked_bytes=settings.bundle_max_unpacked_bytes, max_files=settings.bundle_max_files
            ),
            work_dir=settings.data_dir / "work",
            worker_id=self.worker_id,
            controller_url=settings.controller_url,
            run_as_user=settings.run_as_user,
        )
        self._runner = JobRunner(
            store=store,
            engines=engines,
            preparer=self._preparer,
            artifacts=self.artifacts,
            signals=self.signals,
            output_dir=settings.data_dir / "output",
            worker_id=self.worker_id,
            choose_runtime=self.policy.choose_runtime,
            on_engine_trouble=self.recheck_engines,
        )
        self.scheduler = Scheduler(
            store=store,
            worker_id=self.worker_id,
            max_concurrent_jobs=settings.max_concurrent_jobs,
            poll_interval_s=settings.poll_interval_s,
            launch=self._launch,
        )
        self._on_close = on_close
        self._stop = asyncio.Event()
        self._loops: list[asyncio.Task[None]] = []
        self._probing: asyncio.Task[None] | None = None
        self._on_fatal: Callable[[], None] = lambda: None
        self.accepting = False

    @classmethod
    def from_settings(cls, settings: Settings, store: JobStore | None = None) -> Worker:
        """A worker on the embedded defaults: SQLite under the data directory and the local Docker engine,
        with runc as `docker` and gVisor's runsc as `gvisor` where policy allows them."""
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        host = DockerHost(docker_url=settings.docker_url, max_concurrent_jobs=settings.max_concurrent_jobs)
        runtimes = {"docker": None, "gvisor": settings.gvisor_runtime}
        engines: dict[str, Engine] = {
            name: DockerEngine(
                host,
                name=name,
                worker_id=settings.worker_id,
                run_as_user=settings.run_as_user,
                tmpfs_mb=settings.tmpfs_mb,
                runtime=runtimes[name],
            )
            for name in settings.allowed_runtimes
        }
        images = DockerImages(
            host,
            ImageManager(
                host.api,
                state_path=settings.data_dir / "images.json",
                pull_timeout_s=settings.image_pull_timeout_s,
                build_timeout_s=settings.build_timeout_s,
                cache_budget_bytes=settings.image_cache_bytes,
                image_allowed=functools.partial(image_matches, settings.allowed_images),
            ),
        )
        bundles = BundleCache(
            settings.data_dir / "bundles",
            max_download_bytes=settings.bundle_max_bytes,
            download_timeout_s=settings.bundle_timeout_s,
            url_allowed=functools.partial(url_matches, settings.bundle_allowed_urls),
        )
        return cls(
            settings=settings,
            store=store or SqliteStore(settings.data_dir / "hatchway.db"),
            engines=engines,
            images=images,
            bundles=bundles,
            on_close=host.close,
        )

    def available_runtimes(self) -> set[str]:
        """Runtimes a job may be admitted for now. Docker is never refused for being down (its jobs wait
        in the queue); gVisor only counts once a probe container really ran on it."""
        available = {name for name, ok in self.engine_ok.items() if ok}
        if "docker" in self.engines:
            available.add("docker")
        return available

    async def probe_engines(self) -> None:
        """Run a tiny container on every engine and record which really work."""
        results = await asyncio.gather(*(engine.probe() for engine in self.engines.values()))
        for name, ok in zip(self.engines, results, strict=True):
            if self.engine_ok.get(name) != ok:
                log.info(
                    "engine %s %s",
                    name,
                    "works" if ok else "does not work",
                    extra={"event": "engine_checked", "engine": name, "available": ok, "worker_id": self.worker_id},
                )
            self.engine_ok[name] = ok

    def recheck_engines(self) -> None:
        """Probe the engines again soon (a job failed for an engine reason); one probe at a time."""
        if self._probing is None or self._probing.done():
            self._probing = asyncio.get_running_loop().create_task(self.probe_engines(), name="engine-probe")

    # Lifecycle

    async def start(self, on_fatal: Callable[[], None] | None = None) -> None:
        """Start taking jobs; recovery of the previous run happens first, in the background."""
        if on_fatal is not None:
            self._on_fatal = on_fatal
        await self.probe_engines()
        for name, work in (("scheduler", self._schedule()), ("maintenance", self._maintain())):
            loop = asyncio.create_task(work, name=name)
            loop.add_done_callback(self._loop_ended)
            self._loops.append(loop)
        self.accepting = True
        log.info("worker started", extra={"event": "worker_started", "worker_id": self.worker_id})

    async def shutdown(self) -> None:
        """Drain, then close."""
        await self.drain()
        await self.close()

    async def drain(self) -> None:
        """Stop taking jobs, let running ones finish within the grace period, stop the rest, record all."""
        if self._stop.is_set():
            return
        self.accepting = False
        self._stop.set()
        self.scheduler.paused = True
        log.info("worker stopping", extra={"event": "worker_stopping", "worker_id": self.worker_id})
        pending = self.scheduler.tasks
        if pending:
            _, pending = await asyncio.wait(pending, timeout=self.settings.shutdown_grace_s)
        for control in list(self._controls.values()):
            control.kill(self.settings.kill_grace_s, reason=Reason.SHUTDOWN)
        if pending:
            await asyncio.wait(pending, timeout=self.settings.kill_grace_s + 30)
        for task in self._loops:
            task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        self._loops.clear()
        log.info("worker drained", extra={"event": "worker_drained", "worker_id": self.worker_id})

    async def close(self) -> None:
        """Release the store and the engines; call after `drain`."""
        await self.store.close()
        for engine in self.engines.values():
            await engine.close()
        self._on_close()
        log.info("worker stopped", extra={"event": "worker_stopped", "worker_id": self.worker_id})

    def _loop_ended(self, task: asyncio.Task[None]) -> None:
        if self._stop.is_set():
            return
        error = None if task.cancelled() else task.exception()
        log.critical(
            "background loop %s ended unexpectedly; shutting down",
            task.get_name(),
            exc_info=error,
            extra={"event": "loop_died", "worker_id": self.worker_id},
        )
        self._on_fatal()

    async def _schedule(self) -> None:
        while not self._stop.is_set():
            try:
                await self._recover()
                break
            except EngineError as exc:
                log.error(
                    "cannot recover jobs yet: %s",
                    exc,
                    extra={"event": "recovery_waiting", "worker_id": self.worker_id},
                )
                await asyncio.sleep(_RECOVERY_RETRY_S)
        await self.scheduler.run(self._stop)

    async def _maintain(self) -> None:
        """Now and then: expire old artifacts, keep the image cache in its budget, re-probe failed engines."""
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), _MAINTENANCE_INTERVAL_S)
                return
            expired = await asyncio.to_thread(self.artifacts.expire)
            if expired:
                log.info("artifacts expired", extra={"event": "artifacts_expired", "count": len(expired)})
            try:
                evicted = await self.images.evict()
            except EngineError as exc:
                log.warning("image eviction failed: %s", exc, extra={"event": "image_evict_failed"})
            else:
                if evicted:
                    log.info("images evicted", extra={"event": "images_evicted", "images": evicted})
            if not all(self.engine_ok.values()):
                await self.probe_engines()

    # What job sources call

    async def submit(self, request: JobRequest) -> tuple[Job, bool]:
        """Queue a job; with a known `id`, return the existing job and False instead of a second one."""
        if not self.accepting:
            raise ShuttingDown("the worker is shutting down and takes no new jobs")
        admitted = self.policy.admit(request)
        spec = admitted.spec
        job = Job(
            id=request.id or new_job_id(),
            state=JobState.QUEUED,
            created_at=utcnow(),
            image=spec.image,
            labels=spec.labels,
            priority=spec.priority,
            run=RunInfo(warnings=admitted.warnings),
            spec=spec,
        )
        stored, created = await self.store.enqueue(job)
        if not created and stored.spec != spec:
            raise JobConflict(f"job {job.id!r} exists with a different spec; choose another id")
        if created:
            self._log("job_queued", job.id)
            self.scheduler.wake()
        return stored, created

    async def get(self, job_id: str) -> Job:
        """The job; while it runs, with live resource figures from its container."""
        job = await self.store.get(job_id)
        if job is None:
            raise JobNotFound(f"no job has id {job_id!r}")
        control = self._controls.get(job_id)
        live = control.resources() if control is not None and not job.state.is_final else None
        return job if live is None else job.model_copy(update={"resources": live})

    async def find(self, query: JobQuery) -> JobPage:
        return await self.store.find(query)

    async def kill(self, job_id: str, grace_s: float) -> Job:
        """Cancel a queued job, or stop a running one (SIGTERM, then SIGKILL after `grace_s`), and
        return it once it has ended."""
        job = await self.get(job_id)
        if job.state.is_final:
            raise JobAlreadyFinished(f"job {job_id!r} has already ended ({job.state.value})")
        cancelled = await self.store.cancel(job_id, utcnow())
        if cancelled is not None:
            self.signals.notify(job_id)
            self._log("job_cancelled", job_id)
            return cancelled
        control = self._controls.get(job_id)
        if control is not None:
            self._log("job_kill_requested", job_id)
            control.kill(grace_s)
        return await self.wait_final(job_id, grace_s + 30)

    async def wait_final(self, job_id: str, timeout_s: float) -> Job:
        """The job once it has ended, or as it is after `timeout_s`."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            with self.signals.watching(job_id) as changed:
                job = await self.get(job_id)
                remaining = deadline - asyncio.get_running_loop().time()
                if job.state.is_final or remaining <= 0:
                    return job
                await self.signals.wait(changed, remaining)

    def capture(self, job_id: str) -> OutputCapture | None:
        """The live output of an active job, if it has started producing any."""
        control = self._controls.get(job_id)
        return None if control is None else control.capture

    # Running and recovering

    def _launch(self, job: Job) -> Awaitable[None]:
        # The control exists from the moment the job is claimed, so a kill can never miss it.
        control = self._controls[job.id] = RunControl(job.id)
        return self._controlled(job.id, self._runner.run(job, control))

    def _launch_resumed(self, job: Job, found: Found) -> Awaitable[None]:
        control = self._controls[job.id] = RunControl(job.id)
        self._ports.claim(job.id, job.run.ports)
        return self._controlled(job.id, self._runner.resume(job, found, control))

    async def _controlled(self, job_id: str, work: Awaitable[Job]) -> None:
        try:
            await work
        finally:
            del self._controls[job_id]

    async def _recover(self) -> None:
        """Settle what the last run of this worker left: re-attach, requeue, or record the loss."""
        found: dict[str, Found] = {}
        leftovers: list[Handle] = []
        everything = await asyncio.gather(*(engine.recover() for engine in self.engines.values()))
        unique = {item.handle.ref: item for found_list in everything for item in found_list}
        for item in unique.values():
            if item.handle.job_id in found:
                leftovers.append(item.handle)
            else:
                found[item.handle.job_id] = item
        adopted: set[str] = set()
        for job in await self.store.active(self.worker_id):
            container = found.pop(job.id, None)
            if container is not None and container.started_at is not None:
                adopted.add(job.id)
                self.scheduler.adopt(job.id, self._launch_resumed(job, container))
                continue
            if container is not None:
                leftovers.append(container.handle)
            await self._settle_lost(job)
        leftovers += [item.handle for item in found.values()]
        for handle in leftovers:
            self._log("container_reaped", handle.job_id, container=handle.ref)
            await self._any_engine().remove(handle)
        self._clear_stale_dirs(adopted)

    async def _settle_lost(self, job: Job) -> None:
        if job.state == JobState.BUILDING:
            # It never started, so running it now is safe and what the client wanted.
            await self.store.requeue_lost(job.id)
            self._log("job_requeued", job.id)
            return
        await self.store.finish(
            job.id,
            Outcome(
                state=JobState.FAILED,
                reason=Reason.WORKER_RESTART,
                message="the worker restarted while the job ran and its container was gone",
            ),
            utcnow(),
        )
        self._log("job_lost", job.id)

    def _clear_stale_dirs(self, keep: set[str]) -> None:
        for parent in (self.settings.data_dir / "work", self.settings.data_dir / "output"):
            if parent.is_dir():
                for child in parent.iterdir():
                    if child.name not in keep:
                        _remove_tree(child)

    def _any_engine(self) -> Engine:
        # Engines on one Docker host can remove each other's containers.
        return next(iter(self.engines.values()))

    def _log(self, event: str, job_id: str, **fields: object) -> None:
        log.info(
            event.replace("_", " "),
            extra={"event": event, "job_id": job_id, "worker_id": self.worker_id, **fields},
        )


def _remove_tree(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
