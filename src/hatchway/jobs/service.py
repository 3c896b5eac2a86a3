"""The job service: the narrow facade every job source (HTTP API, CLI, pulled masters) talks to."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager

from hatchway.errors import InvalidRequest, JobAlreadyFinished, JobConflict, JobNotFound, ShuttingDown
from hatchway.jobs.control import RunControl
from hatchway.jobs.notify import JobSignals
from hatchway.jobs.policy import Policy
from hatchway.models import (
    CallbackStatus,
    Job,
    JobRequest,
    JobSpec,
    JobState,
    Reason,
    RunInfo,
    Stream,
    new_job_id,
    utcnow,
)
from hatchway.output.capture import OutputCapture
from hatchway.output.line_times import LineTimes
from hatchway.store.base import JobPage, JobQuery, JobStore, ReportHold
from hatchway.store.fleet import WorkerHealth

log = logging.getLogger(__name__)

_SLOT_CHECK_S = 5.0  # a safety net: a slot frees up with a signal
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def source_job_id(origin: str, external_id: str) -> str:
    """The job id of item `external_id` of source `origin`: readable, valid, and the same every time."""
    digest = hashlib.sha256(f"{origin}\0{external_id}".encode()).hexdigest()[:12]
    return f"{source_id_prefix(origin)}{_UNSAFE.sub('-', external_id)[:60]}.{digest}"


def source_id_prefix(origin: str) -> str:
    """How every job id of source `origin` begins: ids so begun are that source's alone."""
    return f"{_UNSAFE.sub('-', origin)[:40]}."


def job_not_found(job_id: str) -> JobNotFound:
    """What asking for an id no job has gets."""
    return JobNotFound(f"no job has id {job_id!r}")


def _new_callback(spec: JobSpec) -> CallbackStatus | None:
    """A job's callback, pending from its submission on: its delivery is then due the moment the store records
    the job's final state, in the same write."""
    if spec.callback_url is None:
        return None
    return CallbackStatus(url=spec.callback_url, delivery_id=new_job_id())


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
        max_concurrent_jobs: Callable[[], int] = lambda: 1,
        next_free_slot: Callable[[], asyncio.Event] = asyncio.Event,
        sources: Sequence[str] = (),
    ) -> None:
        self.store = store
        self.policy = policy
        self.signals = signals
        self._controls = controls
        self._wake_scheduler = wake_scheduler
        self._worker_id = worker_id
        self._max_jobs = max_concurrent_jobs
        self._next_free_slot = next_free_slot
        self._reserved = 0
        self._source_prefixes = tuple(source_id_prefix(name) for name in sources)
        self.accepting = False

    async def submit(
        self, request: JobRequest, *, origin: str | None = None, external_id: str | None = None
    ) -> tuple[Job, bool]:
        """Queue a job; with a known `id`, return the existing job and False instead of a second one. A job
        source gives its name and the item's id there (`origin`, `external_id`): the job's id is then made from
        them, so an item handed out twice becomes one job."""
        admitted = self.policy.admit(request, source=origin)
        job_id = request.id if origin is None else source_job_id(origin, external_id or "")
        return await self.enqueue(job_id, admitted.spec, admitted.warnings, origin=origin, external_id=external_id)

    async def enqueue(
        self,
        job_id: str | None,
        spec: JobSpec,
        warnings: list[str],
        *,
        origin: str | None = None,
        external_id: str | None = None,
    ) -> tuple[Job, bool]:
        """Queue an admitted spec (a job or a grade); an existing `job_id` with the same spec is returned as is."""
        if not self.accepting:
            raise ShuttingDown("the worker is shutting down and takes no new jobs")
        if origin is None and job_id is not None and job_id.startswith(self._source_prefixes):
            # Else a client could take the id a source's next item will get: that item would collide with the
            # client's job and never be reported.
            raise InvalidRequest(
                f"id {job_id!r} is in the namespace of a job source (ids beginning {job_id.split('.')[0]}. are "
                "its items'): choose another id"
            )
        job = Job(
            id=job_id or new_job_id(),
            state=JobState.QUEUED,
            created_at=utcnow(),
            image=spec.image,
            labels=spec.labels,
            priority=spec.priority,
            run=RunInfo(warnings=warnings),
            spec=spec,
            message=self.policy.placement_wait(spec.placement),
            origin=origin,
            external_id=external_id,
            callback=_new_callback(spec),
        )
        stored, created = await self.store.enqueue(job)
        if not created and stored.spec != spec:
            raise JobConflict(f"job {job.id!r} exists with a different spec; choose another id")
        if created:
            self._log("job_queued", job.id, kind=spec.kind)
            self.signals.notify(job.id)
            self._wake_scheduler()
        return stored, created

    async def get(self, job_id: str) -> Job:
        """The job; while it runs, with live resource figures from its sandbox."""
        job = await self.store.get(job_id)
        if job is None:
            raise job_not_found(job_id)
        control = self._controls.get(job_id)
        live = control.resources() if control is not None and not job.state.is_final else None
        return job if live is None else job.model_copy(update={"resources": live})

    async def state_of(self, job_id: str) -> JobState | None:
        """The job's state alone, without loading the job (its output may be large); None: no job has that id."""
        return await self.store.state_of(job_id)

    async def find(self, query: JobQuery) -> JobPage:
        return await self.store.find(query)

    async def kill(self, job_id: str, grace_s: float) -> Job:
        """Cancel a queued job, or stop a running one (SIGTERM, then SIGKILL after `grace_s`), whichever worker of
        the fleet runs it, and return it once it has ended."""
        job = await self.get(job_id)
        if job.state.is_final:
            raise JobAlreadyFinished(f"job {job_id!r} has already ended ({job.state.value})")
        cancelled = await self.store.cancel(job_id, utcnow())
        if cancelled is not None:
            self.signals.notify(job_id)
            self.signals.ended(cancelled)
            self._log("job_cancelled", job_id)
            return cancelled
        control = self._controls.get(job_id)
        if control is not None:
            self._log("job_kill_requested", job_id)
            control.kill(grace_s)
        elif await self.store.request_cancel(job_id, utcnow(), grace_s) is not None:
            # Another worker runs it (or this one's claim of it is not back yet): the store wakes whichever does.
            self._log("job_stop_asked", job_id)
        return await self.wait_final(job_id, grace_s + 30)

    async def wait_final(self, job_id: str, timeout_s: float) -> Job:
        """The job once it has ended, or as it is after `timeout_s`. Until then only its state is read at each
        change: a whole job (spec, output) costs far more to load, and a job changes state several times."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            with self.signals.watching(job_id) as changed:
                state = await self.store.state_of(job_id)
                remaining = deadline - asyncio.get_running_loop().time()
                if state is None or state.is_final or remaining <= 0:
                    return await self.get(job_id)
                await self.signals.wait(changed, remaining)

    async def refuse(
        self, origin: str, external_id: str, message: str, *, labels: dict[str, str], image: str | None = None
    ) -> Job:
        """Record an item of source `origin` that cannot run as a job that ended `failed`/`refused` (`message`
        says why; `image` is what it would have run in, where that is known), so that its report is kept and sent
        like any other; a second refusal of the same item returns the first."""
        now = utcnow()
        spec = JobSpec(
            image=image,
            command=[],
            env={},
            stdin=None,
            files={},
            workdir="/workspace",
            limits=self.policy.default_limits,
            network="none",
            priority=0,
            labels=labels,
        )
        job = Job(
            id=source_job_id(origin, external_id),
            state=JobState.FAILED,
            reason=Reason.REFUSED,
            message=message,
            created_at=now,
            finished_at=now,
            image=spec.image,
            labels=spec.labels,
            priority=spec.priority,
            spec=spec,
            origin=origin,
            external_id=external_id,
        )
        stored, created = await self.store.enqueue(job)
        if created:
            self.signals.notify(stored.id)
            self.signals.ended(stored)
        self._log("job_refused", stored.id, why=message)
        return stored

    async def record_claim(self, origin: str, external_id: str, item: str) -> None:
        """Keep an item just taken from source `origin`'s master until it is stored as a job or refused: if the
        worker dies in between, `claims` hands it back on the next start (the master will not hand it out again),
        or to the survivor given this worker's claims."""
        await self.store.record_claim(origin, external_id, item, self._worker_id)

    async def claims(self, origin: str) -> list[tuple[str, str]]:
        """This worker's items of source `origin` taken and never stored as jobs (its own, and those handed to it
        from a worker that died), as (external id, item), oldest first."""
        return await self.store.claims(origin, self._worker_id)

    async def forget_claim(self, origin: str, external_id: str) -> None:
        """The item is stored as a job (or refused as one)."""
        await self.store.forget_claim(origin, external_id)

    async def unreported(self, origin: str) -> list[Job]:
        """Jobs of source `origin` that have ended and whose result it has not been told yet, oldest first."""
        return await self.store.unreported(origin)

    def hold_report(self, origin: str) -> AbstractAsyncContextManager[ReportHold | None]:
        """The oldest ended job of source `origin` whose report no one else holds, held while the block runs
        (None: none is left): however many workers report for that source, only the holder sends it."""
        return self.store.hold_report(origin)

    async def free_slots(self) -> int:
        """How many more jobs could start at once now: slots neither running nor promised to queued jobs. In a
        fleet the queue is the fleet's, and so are the slots: this worker's and every other live worker's."""
        counts = await self.store.counts()
        busy = sum(counts.values())  # queued, building and running, on any worker
        others = sum(
            worker.slots
            for worker in await self.store.workers()
            if worker.health == WorkerHealth.ALIVE and worker.id != self._worker_id
        )
        return max(self._max_jobs() + others - busy - self._reserved, 0)

    @contextlib.asynccontextmanager
    async def slot(self, stop: asyncio.Event) -> AsyncIterator[bool]:
        """Wait for a free slot (or `stop`) and hold it while a source claims work for it; yields False if
        stopping. The slot is the source's until the job it submits is queued (then the queue holds it)."""
        while not stop.is_set():
            freed = self._next_free_slot()
            if await self.free_slots() > 0:
                self._reserved += 1
                try:
                    yield True
                finally:
                    self._reserved -= 1
                return
            waiters = [asyncio.ensure_future(freed.wait()), asyncio.ensure_future(stop.wait())]
            await asyncio.wait(waiters, timeout=_SLOT_CHECK_S, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waiters:
                waiter.cancel()
        yield False

    async def output_times(self, job_id: str) -> dict[Stream, LineTimes]:
        """When each line of an ended job's output was written, per stream, as far as is known."""
        return await self.store.output_times(job_id)

    def capture(self, job_id: str) -> OutputCapture | None:
        """The live output of an active job, if it has started producing any."""
        control = self._controls.get(job_id)
        return None if control is None else control.capture

    def container(self, job_id: str) -> str | None:
        """The engine's reference to an active job's sandbox (a Docker container id), once it has started."""
        control = self._controls.get(job_id)
        return None if control is None or control.handle is None else control.handle.ref

    def _log(self, event: str, job_id: str, **fields: object) -> None:
        log.info(
            event.replace("_", " "),
            extra={"event": event, "job_id": job_id, "worker_id": self._worker_id, **fields},
        )
