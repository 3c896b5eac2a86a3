"""Stops asked of this worker's jobs through the store: a DELETE on another worker of the fleet of a job this one
runs (`JobStore.request_cancel`). The store wakes this worker at once (`Wake.CANCEL`); a check of its own active
jobs every `check_interval_s` covers a wake-up that was lost."""

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

    async def check(self) -> None:
        """Kill every job of this worker with a stop asked of it (once: a kill under way is left as it goes)."""
        if not self._controls:  # nothing runs here: nothing to ask the store about
            return
        for job_id, grace_s in (await self._store.cancel_requests(self._worker_id)).items():
            control = self._controls.get(job_id)
            if control is None or control.kill_requested.is_set():
                continue
            log.info(
                "job kill requested",
                extra={"event": "job_kill_requested", "job_id": job_id, "worker_id": self._worker_id, "asked": "store"},
            )
            control.kill(grace_s)

    async def run(self, stop: asyncio.Event) -> None:
        """The safety net: check every `check_interval_s` until `stop`."""
        while not stop.is_set():
            await self.check()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._check_interval_s)
