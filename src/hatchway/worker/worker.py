"""The worker: starts the parts `bootstrap` wired and stops them in order, its job sources among them (the HTTP
API too, when it has one: `hatchway serve` adds it), with its background loops under one supervisor.

Job sources talk to `worker.jobs` (the `JobService`) only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from hatchway.errors import ConfigError, EngineError, SandboxUnavailable
from hatchway.models import Reason
from hatchway.sources import JobSource
from hatchway.worker.parts import Parts

log = logging.getLogger(__name__)

_RECOVERY_RETRY_S = 2.0
_RECOVERY_SETTLE_S = 120.0  # the longest a drain waits for recovery under way (it reaps, sweeps and resumes)
# How long stopped jobs may take to be cleaned up at shutdown: removing a gVisor sandbox after a fork bomb has
# been seen to take 35 s.
_CLEAN_UP_S = 90.0
_REPORT_GRACE_S = 10.0
# How long a source clients push to may take to close once the drain is over (the HTTP API gives its open
# connections 5 s).
_PUSH_CLOSE_S = 10.0


class Worker:
    """Accepts jobs, runs them under the concurrency limit, and recovers after a restart."""

    _schedule_task: asyncio.Task[None] | None = None
    """Recovery, then the scheduler: from `start` on."""

    def __init__(self, parts: Parts, *, on_close: Callable[[], None] = lambda: None) -> None:
        self.parts = parts
        self.settings = parts.settings
        self.worker_id = parts.settings.worker_id
        self.jobs = parts.jobs
        """The facade job sources talk to."""
        self.sources = parts.sources
        self._pulled_tasks: list[asyncio.Task[None]] = []
        self._pushed_tasks: list[asyncio.Task[None]] = []
        # Apart from the worker's stop, which pulled sources get: set once the drain is over.
        self._pushed_stop = parts.pushed_stop
        self._recovered = False
        self._recovery_over = asyncio.Event()
        """Set once recovery has resumed every job it will (or given up, the worker stopping)."""
        parts.health.on_back = self._after_outage
        # Apart from the worker's stop: jobs that end while it drains have callbacks to send too.
        self._callbacks_stop = asyncio.Event()
        self._callbacks_task: asyncio.Task[None] | None = None
        self._lease_task: asyncio.Task[None] | None = None
        self.services = parts.services
        self._on_close = on_close
        self._stop = self.services.stopping

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
        self._check_supervisor()
        if probe:
            await self.parts.health.probe()
        else:
            self.parts.health.assume_working()
        await self.parts.store.prune_events(self.settings.events_keep)
        await self.parts.lease.join()  # before recovery: what its last life left becomes this one's to settle
        self.jobs.accepting = True
        # Clients can push work from now on, while the last run is recovered too: it is queued meanwhile.
        self._pushed_tasks = [self._run(source, self._pushed_stop) for source in self.sources if source.pushes]
        # Until the worker's services stop, after the drain: a stop asked elsewhere reaches a job that drains here.
        self.services.start("wake-ups", self.parts.listener.run())
        self.services.start("cancel-requests", self.parts.cancels.run(self._pushed_stop))
        self._schedule_task = self.services.start("scheduler", self._schedule())
        if self.parts.controller is not None:
            self.services.start("controller", self.parts.controller.run(self._stop))
        if self.parts.fluster is not None:  # until the drain is over: the states of the jobs it stops are reported
            self.services.start("fluster-registration", self.parts.fluster.registration.run(self._pushed_stop))
            self.services.start("fluster-reports", self.parts.fluster.reporter.run(self._pushed_stop))
        self.services.start("maintenance", self.parts.maintenance.run(self._stop))
        # Renewed until the drain is over: a draining worker still holds its jobs.
        self._lease_task = self.services.start("lease", self.parts.lease.run(self._pushed_stop))
        self._callbacks_task = self.services.start("callbacks", self.parts.callbacks.run(self._callbacks_stop))
        log.info("worker started", extra={"event": "worker_started", "worker_id": self.worker_id})

    def _check_supervisor(self) -> None:
        """Without its supervisor the worker still runs jobs, but every pooled job runs cold and no grading can
        run: say so loudly, once, at the start, and keep saying so in `/health` and `/info`."""
        try:
            self.parts.supervisor()
        except SandboxUnavailable as exc:
            problem = f"{exc}; pooled jobs run in fresh containers and gradings fail until it is built"
            self.parts.problems.append(problem)
            log.error(problem, extra={"event": "supervisor_missing", "worker_id": self.worker_id})

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
        self.parts.scheduler.paused = True
        log.info("worker stopping", extra={"event": "worker_stopping", "worker_id": self.worker_id})
        await self._recovery_settled()  # the jobs it resumes are this drain's to stop too
        pending = self.parts.scheduler.tasks
        if pending:
            _, pending = await asyncio.wait(pending, timeout=self.settings.shutdown_grace_s)
        for control in list(self.parts.dispatcher.controls.values()):
            control.kill(self.settings.kill_grace_s, reason=Reason.SHUTDOWN)
        if pending:
            await asyncio.wait(pending, timeout=self.settings.kill_grace_s + _CLEAN_UP_S)
        if self._pulled_tasks:  # every job has ended: its result goes to its source now, if the source answers
            await asyncio.wait(self._pulled_tasks, timeout=_REPORT_GRACE_S)
        self._callbacks_stop.set()  # a last try for each pending callback; the rest wait in the store
        if self._callbacks_task is not None:
            await asyncio.wait([self._callbacks_task], timeout=_REPORT_GRACE_S)
        await self.parts.pools.close()
        await asyncio.to_thread(self.parts.volume_stock.clear)
        # Every job is final and recorded, every report sent that could be: the clients of the HTTP API have seen
        # their jobs end, and it may close.
        self._pushed_stop.set()
        if self._pushed_tasks:
            await asyncio.wait(self._pushed_tasks, timeout=_PUSH_CLOSE_S)
        if self._lease_task is not None:  # it marks this worker stopped in the store
            await asyncio.wait([self._lease_task], timeout=_REPORT_GRACE_S)
        await self.services.stop()
        await self.parts.health.settle()
        log.info("worker drained", extra={"event": "worker_drained", "worker_id": self.worker_id})

    async def close(self) -> None:
        """Release the store and the engines; call after `drain`. After a drain cut short (a second SIGTERM), the
        background services still running, the HTTP API among them, are cancelled first; jobs' containers are
        left to the next start's recovery."""
        await self.services.stop()
        await self.parts.store.close()
        for engine in self.parts.engines.values():
            await engine.close()
        self._on_close()
        log.info("worker stopped", extra={"event": "worker_stopped", "worker_id": self.worker_id})

    # Background services

    async def _schedule(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    await self.parts.recovery.run()
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
        self.services.start("pools", self.parts.pools.run(self._stop))
        self._pulled_tasks = [self._run(source, self._stop) for source in self.sources if not source.pushes]
        await self.parts.scheduler.run(self._stop)

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
        self.parts.pools.engine_restarted()
        if self._recovered:
            await self.parts.recovery.reap(self.parts.dispatcher.owned())
