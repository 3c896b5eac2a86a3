"""Report holds kept in the worker's own memory: all a store needs that one worker has to itself (memory, SQLite),
since every reporter of its sources is in that worker. PostgreSQL, shared by a fleet, holds with row locks."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from hatchway.models import Job
from hatchway.store.base import ReportHold


@dataclass(frozen=True)
class _Held:
    job: Job
    mark: Callable[[str, datetime], Awaitable[Job | None]]

    async def reported(self, reported_at: datetime) -> Job | None:
        return await self.mark(self.job.id, reported_at)


class LocalHolds:
    """The jobs whose reports a reporter of this worker holds."""

    def __init__(self) -> None:
        self._held: set[str] = set()

    @contextlib.asynccontextmanager
    async def hold(
        self,
        outbox: Callable[[int], Awaitable[list[Job]]],
        mark: Callable[[str, datetime], Awaitable[Job | None]],
    ) -> AsyncIterator[ReportHold | None]:
        """Hold the oldest job of the outbox not held already, marked reported by `mark`; `outbox(n)` is its `n`
        oldest jobs (one more than are held is enough)."""
        job = next((job for job in await outbox(len(self._held) + 1) if job.id not in self._held), None)
        if job is None:
            yield None
            return
        self._held.add(job.id)
        try:
            yield _Held(job, mark)
        finally:
            self._held.discard(job.id)
