"""The worker: composes store, engine, scheduler and runner, and is what every job source talks to."""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path

from hatchway import __version__
from hatchway.engines.base import Engine, Found, Handle
from hatchway.engines.docker import DockerEngine
from hatchway.errors import EngineError, JobAlreadyFinished, JobConflict, JobNotFound, ShuttingDown
from hatchway.models import Job, JobRequest, JobState, Outcome, Reason, new_job_id, utcnow
from hatchway.output import OutputCapture
from hatchway.policy import Policy
from hatchway.runner import JobRunner, RunControl
from hatchway.scheduler import Scheduler
from hatchway.settings import Settings
from hatchway.signals import JobSignals
from hatchway.store.base import JobPage, JobQuery, JobStore
from hatchway.store.sqlite import SqliteStore

log = logging.getLogger(__name__)

_RECOVERY_RETRY_S = 2.0


class Worker:
    """Accepts jobs, runs them under the concurrency limit, and recovers after a restart."""

    def __init__(self, *, settings: Settings, store: JobStore, engine: Engine) -> None:
        self.settings = settings
        self.worker_id = settings.worker_id
        self.store = store
        self.engine = engine
        self.version = __version__
        self.policy = Policy(
            allowed_images=settings.allowed_images,
            allow_host_network=settings.allow_host_network,
            default_limits=settings.default_limits,
            max_limits=settings.max_limits,
            max_input_bytes=settings.max_input_bytes,
        )
        self.signals = JobSignals()
        self._controls: dict[str, RunControl] = {}
        self._runner = JobRunner(
            store=store,
            engine=engine,
            signals=self.signals,
            work_dir=settings.data_dir / "work",
            output_dir=settings.data_dir / "output",
            worker_id=self.worker_id,
            run_as_user=settings.run_as_user,
        )
        self.scheduler = Scheduler(
            store=store,
            worker_id=self.worker_id,
            max_concurrent_jobs=settings.max_concurrent_jobs,
            poll_interval_s=settings.poll_interval_s,
            launch=self._launch,
        )
        self._stop = asyncio.Event()
        self._loops: list[asyncio.Task[None]] = []
        self._on_fatal: Callable[[], None] = lambda: None
        self.accepting = False
        self.recovered = False

    @classmethod
    def from_settings(cls, settings: Settings) -> Worker:
        """A worker on the embedded defaults: SQLite under the data directory and the local Docker engine."""
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = DockerEngine(
            worker_id=settings.worker_id,
            run_as_user=settings.run_as_user,
            tmpfs_mb=settings.tmpfs_mb,
            image_pull_timeout_s=settings.image_pull_timeout_s,
            max_concurrent_jobs=settings.max_concurrent_jobs,
            docker_url=settings.docker_url,
        )
        return cls(settings=settings, store=SqliteStore(settings.data_dir / "hatchway.db"), engine=engine)

    # Lifecycle

    async def start(self, on_fatal: Callable[[], None] | None = None) -> None:
        """Start taking jobs; recovery of the previous run happens first, in the background."""
        if on_fatal is not None:
            self._on_fatal = on_fatal
        loop = asyncio.create_task(self._schedule(), name="scheduler")
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
        """Release the store and the engine; call after `drain`."""
        await self.store.close()
        await self.engine.close()
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
        self.recovered = True
        await self.scheduler.run(self._stop)

    # What job sources call

    async def submit(self, request: JobRequest) -> tuple[Job, bool]:
        """Queue a job; with a known `id`, return the existing job and False instead of a second one."""
        if not self.accepting:
            raise ShuttingDown("the worker is shutting down and takes no new jobs")
        spec = self.policy.admit(request)
        job = Job(
            id=request.id or new_job_id(),
            state=JobState.QUEUED,
            created_at=utcnow(),
            image=spec.image,
            labels=spec.labels,
            priority=spec.priority,
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
        job = await self.store.get(job_id)
        if job is None:
            raise JobNotFound(f"no job has id {job_id!r}")
        return job

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
        assert found.started_at is not None
        control = self._controls[job.id] = RunControl(job.id)
        return self._controlled(job.id, self._runner.resume(job, found.handle, found.started_at, control))

    async def _controlled(self, job_id: str, work: Awaitable[Job]) -> None:
        try:
            await work
        finally:
            del self._controls[job_id]

    async def _recover(self) -> None:
        """Settle what the last run of this worker left: re-attach, requeue, or record the loss."""
        found: dict[str, Found] = {}
        leftovers: list[Handle] = []
        for item in await self.engine.recover():
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
            await self.engine.remove(handle)
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
