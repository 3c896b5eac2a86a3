"""Following the store's wake-ups (store/wakeups.py) and passing each to whoever in this worker waits for it: the
scheduler (a job was queued), event streams and whoever waits on a job (an event was recorded), the cancel
requests (a stop was asked). In a fleet they come from every worker; the same code follows a store only this
process uses. Each follower keeps its own slow poll as the safety net of a lost wake-up."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Container

from hatchway.jobs.cancels import CancelRequests
from hatchway.jobs.notify import JobSignals
from hatchway.store.base import JobStore
from hatchway.store.wakeups import Wake, Wakeup

_BATCH = 500


class StoreListener:
    """Passes on the store's wake-ups; `listening` is set once they flow. The waiters of the jobs in `runs_here`
    (this worker's) are left to this worker's own code, which wakes them once a job that ended is cleaned up too."""

    def __init__(
        self,
        *,
        store: JobStore,
        signals: JobSignals,
        runs_here: Container[str],
        wake_scheduler: Callable[[], None],
        pulse_feed: Callable[[], None],
        cancels: CancelRequests,
    ) -> None:
        self._store = store
        self._signals = signals
        self._runs_here = runs_here
        self._wake_scheduler = wake_scheduler
        self._pulse_feed = pulse_feed
        self._cancels = cancels
        self._after: int | None = None
        """The newest event whose job's waiters were woken; None while no one waits."""
        self.listening = asyncio.Event()

    async def run(self) -> None:
        """Follow the wake-ups until cancelled (the store makes its connection again itself when it drops)."""
        wakeups = self._store.wakeups()
        try:
            async for wakeup in wakeups:
                await self._pass_on(wakeup)
        finally:
            await wakeups.aclose()

    async def _pass_on(self, wakeup: Wakeup) -> None:
        if wakeup.wake == Wake.ANY:
            self.listening.set()
        if wakeup.wake in (Wake.QUEUE, Wake.ANY):
            self._wake_scheduler()
        if wakeup.wake in (Wake.EVENTS, Wake.ANY):
            await self._events()
        if wakeup.wake in (Wake.CANCEL, Wake.ANY):
            await self._cancels.check(woken=True)

    async def _events(self) -> None:
        """Events were recorded: readers read on, and whoever waits on one of their jobs looks again.

        The log is read for that only while someone waits, from the last event read: events commit in id order, so
        a waiter that began before that read has all its job's later events after it. While no one waits the
        place is forgotten, and the first wake-up that finds someone waiting again starts from the newest event
        and wakes every waiter once (each reads its own job again): cheaper than reading all that was missed.
        A wake-up says nothing of which events (a NOTIFY's event id may be another schema's, in a shared
        database): the log itself says.
        """
        self._pulse_feed()
        if not self._signals.watched:
            self._after = None
            return
        if self._after is None:
            self._after = (await self._store.events_after(0, limit=0)).newest_id
            self._signals.wake_all(but=self._runs_here)
            return
        while True:
            batch = await self._store.events_after(self._after, limit=_BATCH)
            for event in batch.events:
                if event.job_id not in self._runs_here:
                    self._signals.wake(event.job_id)
                self._after = event.id
            if len(batch.events) < _BATCH:
                return
