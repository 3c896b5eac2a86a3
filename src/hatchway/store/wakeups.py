"""What a store tells the worker about changes it did not make itself, so it need not poll for them: a job was
queued, an event was recorded, a running job was asked to stop.

PostgreSQL announces every change of every worker of a fleet (LISTEN/NOTIFY, store/postgres_listen.py); a store
only one process uses announces its own changes, in-process (`LocalWakeups`). Either way the worker follows them
the same way (jobs/listener.py) and keeps a slow poll as its safety net: a wake-up may be lost (PostgreSQL drops
the NOTIFYs sent while a listener reconnects), and the first one after a (re)connection is `Wake.ANY`, which asks
to look at everything again.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from enum import StrEnum

from hatchway.models import JobState


class Wake(StrEnum):
    """Why a follower of the store is woken."""

    QUEUE = "queue"
    """A job was queued, or put back in the queue: a worker with a free slot may claim it."""
    EVENTS = "events"
    """A lifecycle event was recorded: event readers, and whoever waits on its job, read the log on."""
    CANCEL = "cancel"
    """Someone asked to stop the active job `Wakeup.job_id` (`JobStore.request_cancel`)."""
    ANY = "any"
    """Wake-ups flow (again): what happened before may have been missed; look at everything once."""


@dataclass(frozen=True)
class Wakeup:
    """One wake-up: why, and what it is about where that is known."""

    wake: Wake
    job_id: str | None = None


class LocalWakeups:
    """The wake-ups of a store used by one process, from its own changes, to every follower. Each follower has its
    own unbounded queue: following is cheap (it sets events and reads a little), so none grows for long."""

    def __init__(self) -> None:
        self._followers: set[asyncio.Queue[Wakeup]] = set()

    async def follow(self) -> AsyncGenerator[Wakeup, None]:
        """`Wake.ANY` at once, then every wake-up from now on, until the caller stops iterating."""
        queue: asyncio.Queue[Wakeup] = asyncio.Queue()
        self._followers.add(queue)
        try:
            yield Wakeup(Wake.ANY)
            while True:
                yield await queue.get()
        finally:
            self._followers.discard(queue)

    def changed(self, state: JobState) -> None:
        """A job's state changed to `state` (and an event was recorded)."""
        if state == JobState.QUEUED:
            self._publish(Wakeup(Wake.QUEUE))
        self._publish(Wakeup(Wake.EVENTS))

    def cancel_requested(self, job_id: str) -> None:
        """Someone asked to stop active job `job_id`."""
        self._publish(Wakeup(Wake.CANCEL, job_id=job_id))

    def _publish(self, wakeup: Wakeup) -> None:
        for queue in self._followers:
            queue.put_nowait(wakeup)
