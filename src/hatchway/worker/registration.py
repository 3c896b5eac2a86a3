"""Registration with a controller (the cluster worker's): register until accepted, then a heartbeat every
`heartbeat_interval_s` with the running and queued counts and the jobs whose state changed since the last one;
a controller that answers 404 to a heartbeat has forgotten this worker, which registers again."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict

from hatchway.jobs.service import JobService
from hatchway.models import JobState, utcnow
from hatchway.observability.host import host_metrics
from hatchway.settings import Settings
from hatchway.sources.base import Backoff, pause

log = logging.getLogger(__name__)


class ControllerStatus(BaseModel):
    """The link to the controller as `/health` shows it."""

    model_config = ConfigDict(frozen=True)

    url: str
    registered: bool
    last_heartbeat_at: datetime | None
    errors: int
    last_error: str | None


class ControllerLink:
    """Keeps the controller told of this worker."""

    def __init__(
        self,
        *,
        url: str,
        worker_id: str,
        registration: Callable[[], dict[str, Any]],
        counts: Callable[[], Awaitable[dict[JobState, int]]],
        jobs: JobService,
        interval_s: float,
    ) -> None:
        self._url = url.rstrip("/")
        self._worker_id = worker_id
        self._registration = registration
        self._counts = counts
        self._jobs = jobs
        self._interval_s = interval_s
        self._changed: set[str] = set()
        self._registered = False
        self._last_beat: datetime | None = None
        self._errors = 0
        self._last_error: str | None = None
        self._backoff = Backoff(f"registering with the controller at {url}")

    def changed(self, job_id: str) -> None:
        """A job changed state: the next heartbeat says so."""
        self._changed.add(job_id)

    def status(self) -> ControllerStatus:
        return ControllerStatus(
            url=self._url,
            registered=self._registered,
            last_heartbeat_at=self._last_beat,
            errors=self._errors,
            last_error=self._last_error,
        )

    async def run(self, stop: asyncio.Event) -> None:
        async with httpx.AsyncClient(timeout=30) as http:
            while not stop.is_set():
                if not self._registered:
                    await self._register(http, stop)
                    continue
                await pause(stop, self._interval_s)
                if not stop.is_set():
                    await self._beat(http)

    async def _register(self, http: httpx.AsyncClient, stop: asyncio.Event) -> None:
        body = {"worker_id": self._worker_id, **self._registration()}
        answer = await self._post(http, "/workers/register", body)
        if answer is not None and answer.is_success:
            self._registered = True
            self._backoff.succeeded()
            log.info("registered with the controller", extra={"event": "controller_registered", "url": self._url})
            return
        await pause(stop, self._backoff.failed(self._last_error or "", url=self._url))

    async def _beat(self, http: httpx.AsyncClient) -> None:
        changed, self._changed = self._changed, set()
        states = []
        for job_id in sorted(changed):
            job = await self._jobs.store.get(job_id)
            if job is not None:
                states.append({"id": job.id, "state": job.state.value, "reason": job.reason, "labels": job.labels})
        counts = await self._counts()
        body = {
            "worker_id": self._worker_id,
            "running": counts.get(JobState.RUNNING, 0) + counts.get(JobState.BUILDING, 0),
            "queued": counts.get(JobState.QUEUED, 0),
            "jobs": states,
            "time": utcnow().isoformat(),
        }
        answer = await self._post(http, f"/workers/{self._worker_id}/heartbeat", body)
        if answer is not None and answer.is_success:
            self._last_beat = utcnow()
            return
        self._changed |= changed  # told next time
        if answer is not None and answer.status_code == 404:
            log.warning("the controller forgot this worker; registering again", extra={"event": "controller_forgot"})
            self._registered = False

    async def _post(self, http: httpx.AsyncClient, path: str, body: dict[str, Any]) -> httpx.Response | None:
        try:
            answer = await http.post(f"{self._url}{path}", json=body)
        except httpx.HTTPError as exc:
            self._note(f"{self._url} cannot be reached: {exc!r}")
            return None
        if not answer.is_success:
            self._note(f"{self._url} answered {answer.status_code} to POST {path}")
        return answer

    def _note(self, error: str) -> None:
        self._errors += 1
        self._last_error = error


def registration(settings: Settings, version: str, runtimes: list[str], profiles: list[str]) -> dict[str, object]:
    """What the controller is told of a worker when it registers."""
    host = host_metrics()
    return {
        "address": settings.address,
        "version": version,
        "resources": {
            "cpus": host.cpu_count,
            "memory_bytes": host.memory_total_bytes,
            "runtimes": runtimes,
            "profiles": profiles,
            "max_concurrent_jobs": settings.max_concurrent_jobs,
        },
        "labels": settings.labels,
    }
