"""The job service: the narrow facade every job source (HTTP API, CLI, pulled masters) talks to."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from hatchway.errors import JobAlreadyFinished, JobConflict, JobNotFound, ShuttingDown
from hatchway.models import Job, JobRequest, JobSpec, JobState, RunInfo, new_job_id, utcnow
from hatchway.output import OutputCapture
from hatchway.policy import Policy
from hatchway.runner import RunControl
from hatchway.signals import JobSignals
from hatchway.store.base import JobPage, JobQuery, JobStore

log = logging.getLogger(__name__)


class JobService:
    """Submit, look at, wait for and kill jobs. It never runs anything itself: it queues, and steers the
    jobs the worker runs through their `RunControl`s (shared with the worker, which adds and removes them)."""

    def __init__(
        self,
        *,
        store: JobStore,
        policy: Policy,
        signals: JobSignals,
        controls: dict[str, RunControl],
        wake_scheduler: Callable[[], None],
        worker_id: str,
    ) -> None:
        self.store = store
        self.policy = policy
        self.signals = signals
        self._controls = controls
        self._wake_scheduler = wake_scheduler
        self._worker_id = worker_id
        self.accepting = False

    async def submit(self, request: JobRequest) -> tuple[Job, bool]:
        """Queue a job; with a known `id`, return the existing job and False instead of a second one."""
        admitted = self.policy.admit(request)
        return await self.enqueue(request.id, admitted.spec, admitted.warnings)

    async def enqueue(self, job_id: str | None, spec: JobSpec, warnings: list[str]) -> tuple[Job, bool]:
        """Queue an admitted spec (a job or a grade); an existing `job_id` with the same spec is returned as is."""
        if not self.accepting:
            raise ShuttingDown("the worker is shutting down and takes no new jobs")
        job = Job(
            id=job_id or new_job_id(),
            state=JobState.QUEUED,
            created_at=utcnow(),
            image=spec.image,
            labels=spec.labels,
            priority=spec.priority,
            run=RunInfo(warnings=warnings),
            spec=spec,
        )
        stored, created = await self.store.enqueue(job)
        if not created and stored.spec != spec:
            raise JobConflict(f"job {job.id!r} exists with a different spec; choose another id")
        if created:
            self._log("job_queued", job.id, kind=spec.kind)
            self._wake_scheduler()
        return stored, created

    async def get(self, job_id: str) -> Job:
        """The job; while it runs, with live resource figures from its sandbox."""
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

    def _log(self, event: str, job_id: str, **fields: object) -> None:
        log.info(
            event.replace("_", " "),
            extra={"event": event, "job_id": job_id, "worker_id": self._worker_id, **fields},
        )
