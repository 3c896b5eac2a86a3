"""This worker's lease in the fleet (store/fleet.py): it registers as it starts, renews its lease every third of
`worker_lease_s`, and takes over the workers whose lease ran out.

A worker that could not renew in time (paused, say, with SIGSTOP, or cut off from the store) and finds, when it
can again, that a survivor took its jobs over, has lost them: the store already refuses every change it would
make to them (fencing). It stops their containers at once, records and reports nothing of them, and then comes
back as a new generation of itself, taking jobs again, as a worker that restarted would. A worker whose id a newer
process registered under (two processes given one `worker_id`) stops instead: the other one holds its name.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping

from hatchway.jobs.control import RunControl
from hatchway.jobs.notify import JobSignals
from hatchway.jobs.scheduler import Scheduler
from hatchway.models import JobState, Reason
from hatchway.sources.base import pause
from hatchway.store.base import JobStore
from hatchway.store.fleet import LeaseLost, WorkerInfo
from hatchway.worker.loops import Services

log = logging.getLogger(__name__)

_CLEAN_UP_S = 90.0  # the longest the stopped jobs of a lost lease may take to end (as a drain gives them)


class Lease:
    """Keeps this worker registered in the store, and takes lost workers over."""

    def __init__(
        self,
        *,
        store: JobStore,
        info: Callable[[], WorkerInfo],
        lease_s: float,
        signals: JobSignals,
        scheduler: Scheduler,
        controls: Mapping[str, RunControl],
        services: Services,
    ) -> None:
        self._store = store
        self._info = info
        self._lease_s = lease_s
        self._signals = signals
        self._scheduler = scheduler
        self._controls = controls
        self._services = services
        self._worker_id = ""
        self.generation: int | None = None
        """Which life of this worker holds the lease (None before `join`, and once another process holds it)."""
        self.lost: list[LeaseLost] = []
        """Each time this worker found its lease lost, why."""

    async def join(self) -> None:
        """Register: a new generation of this worker, which takes up what its last life left (restart recovery
        settles those jobs next)."""
        info = self._info()
        self._worker_id = info.id
        self.generation = await self._store.register(info, self._lease_s)
        log.info(
            "worker registered in the store",
            extra={"event": "worker_registered", "worker_id": self._worker_id, "generation": self.generation},
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Take lost workers over, then renew every third of the lease, until `stop` (set once the worker's drain
        is over: every job it ran has ended); then mark it stopped."""
        while not stop.is_set() and self.generation is not None:
            await self._take_over()
            await pause(stop, self._lease_s / 3)
            if not stop.is_set():
                await self._renew()  # before a takeover, which would otherwise find this worker's own lease run out
        if self.generation is not None:
            await self._store.mark_stopped(self._worker_id, self.generation)
            log.info(
                "worker marked stopped in the store",
                extra={"event": "worker_left", "worker_id": self._worker_id, "generation": self.generation},
            )

    async def _renew(self) -> None:
        assert self.generation is not None
        lost = await self._store.renew_lease(self._worker_id, self.generation, self._lease_s)
        if lost is not None:
            await self._fenced(lost)

    async def _fenced(self, lost: LeaseLost) -> None:
        """The lease is lost: stop every job of it (the store records nothing of them any more), then come back as a
        new generation, unless another process holds this worker's id."""
        self.lost.append(lost)
        generation, self.generation = self.generation, None
        log.error(
            "this worker lost its lease (%s): it stops the jobs it held, which it no longer owns",
            lost.value,
            extra={"event": "lease_lost", "worker_id": self._worker_id, "generation": generation, "why": lost.value},
        )
        self._scheduler.paused = True
        for control in list(self._controls.values()):
            control.kill(0.0, reason=Reason.WORKER_LOST)
        tasks = self._scheduler.tasks
        if tasks:
            await asyncio.wait(tasks, timeout=_CLEAN_UP_S)
        if lost == LeaseLost.SUPERSEDED:
            self._services.on_fatal()
            return
        if self._services.stopping.is_set():
            return
        await self.join()
        self._scheduler.paused = False
        self._scheduler.wake()

    async def _take_over(self) -> None:
        for taken in await self._store.reclaim_expired(self._worker_id):
            counts = {state: sum(job.state == state for job in taken.jobs) for state in JobState}
            log.warning(
                "took over lost worker %s: %d jobs queued again, %d lost, %d claimed items to take up",
                taken.worker_id,
                counts[JobState.QUEUED],
                counts[JobState.FAILED],
                taken.claims,
                extra={"event": "worker_taken_over", "worker_id": self._worker_id, "lost_worker": taken.worker_id},
            )
            for job in taken.jobs:
                self._signals.notify(job.id)
                if job.state.is_final:
                    self._signals.ended(job)
            if counts[JobState.QUEUED]:
                self._scheduler.wake()
