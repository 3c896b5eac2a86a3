"""The scheduler: start queued jobs, best first, while there is a free slot."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from hatchway.models import Job
from hatchway.store.base import Fit, JobStore

log = logging.getLogger(__name__)


class Scheduler:
    """Claims jobs from the store and launches them, never more than `max_concurrent_jobs` at once.

    The store's claim is atomic, so a job is launched at most once however many submits and kills race.
    The loop sleeps until new work, a freed slot, the poll interval or stop, whichever comes first. While `ready`
    is clear (the engine does not answer) nothing is claimed: queued jobs wait there, and the loop wakes when
    it is set again. Only jobs `fit` admits are claimed (None: any); the others are left for other workers.
    """

    def __init__(
        self,
        *,
        store: JobStore,
        worker_id: str,
        max_concurrent_jobs: int,
        poll_interval_s: float,
        launch: Callable[[Job], Awaitable[None]],
        ready: asyncio.Event | None = None,
        fit: Fit | None = None,
    ) -> None:
        self._store = store
        self._fit = fit
        self._worker_id = worker_id
        self._max = max_concurrent_jobs
        self._poll_interval_s = poll_interval_s
        self._launch = launch
        self._ready = ready
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._freed = asyncio.Event()
        self.paused = False

    @property
    def running(self) -> int:
        return len(self._tasks)

    @property
    def max_concurrent_jobs(self) -> int:
        return self._max

    def next_free_slot(self) -> asyncio.Event:
        """An event set when a job next ends (a slot frees up); take it *before* looking at the slots."""
        return self._freed

    @property
    def tasks(self) -> set[asyncio.Task[None]]:
        return set(self._tasks)

    def wake(self) -> None:
        """There may be new work or a free slot."""
        self._wake.set()

    def adopt(self, job_id: str, work: Awaitable[None]) -> None:
        """Count an already-running job (re-attached after a restart) against the concurrency limit."""
        self._track(job_id, work)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self._wake.clear()
            while not self.paused and self._is_ready() and len(self._tasks) < self._max:
                job = await self._store.claim_next(self._worker_id, self._fit)
                if job is None:
                    break
                self._track(job.id, self._launch(job))
            waiters = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stop.wait())]
            if self._ready is not None and not self._ready.is_set():
                waiters.append(asyncio.ensure_future(self._ready.wait()))
            await asyncio.wait(waiters, timeout=self._poll_interval_s, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waiters:
                waiter.cancel()

    def _is_ready(self) -> bool:
        return self._ready is None or self._ready.is_set()

    def _track(self, job_id: str, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        task.set_name(f"job-{job_id}")
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        freed, self._freed = self._freed, asyncio.Event()
        freed.set()
        if not task.cancelled() and task.exception() is not None:
            log.error("job task crashed", exc_info=task.exception(), extra={"event": "job_task_crashed"})
        self.wake()
