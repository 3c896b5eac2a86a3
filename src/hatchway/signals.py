"""Per-job change notifications inside one worker process: who waits for a job to change wakes when it does."""

from __future__ import annotations

import asyncio
import contextlib


class JobSignals:
    """Wake everyone waiting on a job when it changes state. Waits never miss a change made after
    they began, and nothing is kept for jobs no one waits on.
    """

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}

    def notify(self, job_id: str) -> None:
        event = self._events.pop(job_id, None)
        if event is not None:
            event.set()

    def watch(self, job_id: str) -> asyncio.Event:
        """An event set at the job's next change; take it *before* reading the job's state."""
        return self._events.setdefault(job_id, asyncio.Event())

    @staticmethod
    async def wait(event: asyncio.Event, timeout_s: float) -> bool:
        """Wait for `event` up to `timeout_s`; True if it fired."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout_s)
        return event.is_set()
