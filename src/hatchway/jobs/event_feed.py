"""Following the event log: replay from the id a client last saw, then each new event as it is recorded."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from hatchway.jobs.notify import JobSignals
from hatchway.models import JobKind
from hatchway.output.events import EventBatch, JobEvent
from hatchway.store.base import JobStore

_BATCH = 500


@dataclass(frozen=True)
class EventsMissed:
    """The events after `after` up to `resumed_after` are no longer kept (or `after` is not an id this log
    handed out); the stream goes on after `resumed_after`."""

    after: int
    resumed_after: int
    message: str


@dataclass(frozen=True)
class EventFilter:
    """Which events a reader wants; None: any."""

    job_id: str | None = None
    kind: JobKind | None = None


FeedItem = JobEvent | EventsMissed | None
"""What a reader gets: an event, a notice of missed events, or None when nothing happened for a while."""


class EventFeed:
    """Reads the store's event log for any number of readers, woken by the worker's job notifications and by the
    store's wake-ups (`pulse`: every worker's events, in a fleet); `recheck_s` is the safety net of a lost one."""

    def __init__(
        self, store: JobStore, signals: JobSignals, *, stopping: asyncio.Event, recheck_s: float = 5.0
    ) -> None:
        self._store = store
        self._stopping = stopping
        self._recheck_s = recheck_s
        self._changed = asyncio.Event()
        signals.listeners.append(lambda _job_id: self.pulse())

    def pulse(self) -> None:
        """New events may have been recorded: every reader waiting for one reads on."""
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def follow(self, after: int | None, which: EventFilter, *, idle_s: float = 15.0) -> AsyncIterator[FeedItem]:
        """Every event after id `after` (None: from now on), then each new one as it happens; None after `idle_s`
        without one. Ends once the worker stops, after the events recorded by then: a client resumes elsewhere,
        or at the next start, from the last id it saw."""
        if after is None:
            after = (await self._store.events_after(0, limit=0)).newest_id
        loop = asyncio.get_running_loop()
        quiet_since = loop.time()
        while True:
            changed = self._changed  # taken before reading: a change made while we read wakes the wait below
            batch = await self._store.events_after(after, limit=_BATCH, job_id=which.job_id, kind=which.kind)
            missed = _missed(after, batch)
            if missed is not None:
                yield missed
                after = missed.resumed_after
                continue
            for event in batch.events:
                yield event
                after = event.id
            if batch.events:
                quiet_since = loop.time()
            if len(batch.events) == _BATCH:
                continue
            if self._stopping.is_set():
                return
            idle = quiet_since + idle_s - loop.time()
            if idle <= 0:
                yield None
                quiet_since = loop.time()
                continue
            await _first(changed, self._stopping, timeout_s=min(idle, self._recheck_s))


def _missed(after: int, batch: EventBatch) -> EventsMissed | None:
    if after > batch.newest_id:
        return EventsMissed(
            after=after,
            resumed_after=0,
            message=f"event {after} is newer than any this worker recorded (its event log was reset?): "
            "every event it keeps follows",
        )
    first_wanted = after + 1
    oldest = batch.oldest_id if batch.oldest_id is not None else batch.newest_id + 1
    if first_wanted < oldest:
        return EventsMissed(
            after=after,
            resumed_after=oldest - 1,
            message=f"events {first_wanted} to {oldest - 1} are no longer kept (the worker keeps the newest "
            "events_keep); the stream goes on from the oldest one kept",
        )
    return None


async def _first(changed: asyncio.Event, stopping: asyncio.Event, *, timeout_s: float) -> None:
    waiters = [asyncio.ensure_future(changed.wait()), asyncio.ensure_future(stopping.wait())]
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait(waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
