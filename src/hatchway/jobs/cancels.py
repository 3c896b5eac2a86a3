"""Stops asked of this worker's jobs through the store: a DELETE on another worker of the fleet of a job this one
runs (`JobStore.request_cancel`). The store wakes this worker at once (`Wake.CANCEL`); a check of its own active
jobs every `check_interval_s` covers a wake-up that was lost. A stop asked of a job this worker has claimed but not
yet launched (no control yet) is kept and applied the moment it launches, rather than at the next check."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping

from hatchway.jobs.control import RunControl
from hatchway.store.base import JobStore

log = logging.getLogger(__name__)


class CancelRequests:
    """Kills the jobs this worker runs that someone asked, elsewhere, to stop: as a DELETE here would (SIGTERM, then
    SIGKILL after the grace the asker gave; a job stopped before it started ends cancelled)."""

    def __init__(
        self, *, store: JobStore, controls: Mapping[str, RunControl], worker_id: str, check_interval_s: float
    ) -> None:
        self._store = store
        self._controls = controls
        self._worker_id = worker_id
        self._check_interval_s = check_interval_s
        self._unlaunched: dict[str, float] = {}
        """Stops asked, at the last check, of jobs of this worker without a control yet: job id -> grace."""

    async def check(self, *, woken: bool = False) -> None:
        """Kill every job of this worker with a stop asked of it (once: a kill under way is left as it goes). The
        safety net's check skips the store while nothing runs here; a wake-up (`woken`) asks it anyway, as the
        job may be claimed and not yet launched."""
        if not self._controls and not woken:
            return
        unlaunched: dict[str, float] = {}
        for job_id, grace_s in (await self._store.cancel_requests(self._worker_id)).items():
            control = self._controls.get(job_id)
            if control is None:
                unlaunched[job_id] = grace_s
            else:
                self._kill(control, grace_s)
        self._unlaunched = unlaunched

    def launched(self, control: RunControl) -> None:
        """A job of this worker has its control now: a stop asked before is applied at once."""
        grace_s = self._unlaunched.pop(control.job_id, None)
        if grace_s is not None:
            self._kill(control, grace_s)

    def _kill(self, control: RunControl, grace_s: float) -> None:
        if control.kill_requested.is_set():
            return
        log.info(
            "job kill requested",
            extra={
                "event": "job_kill_requested",
                "job_id": control.job_id,
                "worker_id": self._worker_id,
                "asked": "store",
            },
        )
        control.kill(grace_s)

    async def run(self, stop: asyncio.Event) -> None:
        """The safety net: check every `check_interval_s` until `stop`."""
        while not stop.is_set():
            await self.check()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._check_interval_s)
