"""Per-job change notifications inside one worker process: who waits for a job to change wakes when it does,
whichever worker of a fleet changed it (jobs/listener.py wakes them for the others' changes)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Container, Iterator
from dataclasses import dataclass, field

from hatchway.models import Job


@dataclass
class _Watch:
    event: asyncio.Event = field(default_factory=asyncio.Event)
    watchers: int = 0


class JobSignals:
    """Wake everyone waiting on a job when it changes. A wait never misses a change made after it
    began, and nothing is kept for a job once no one waits on it.
    """

    def __init__(self) -> None:
        self._watches: dict[str, _Watch] = {}
        self.listeners: list[Callable[[str], None]] = []
        """Called with the id of every job that changes (e.g. to tell a controller)."""
        self.end_listeners: list[Callable[[Job], None]] = []
        """Called once with every job that reaches its final state, as stored (e.g. to count it)."""
        self.start_listeners: list[Callable[..., None]] = []
        """Called as `listener(engine, pooled=..., seconds=...)` each time a job's container has started: on
        `engine`, a pool's (`pooled`) or a fresh one, `seconds` after the job asked for it (e.g. to time it)."""

    def container_started(self, engine: str, *, pooled: bool, seconds: float) -> None:
        """A job's container has started (see `start_listeners`)."""
        for listener in self.start_listeners:
            listener(engine, pooled=pooled, seconds=seconds)

    def ended(self, job: Job) -> None:
        """`job` has just been stored in its final state, by whoever ended it (each job ends once)."""
        for listener in self.end_listeners:
            listener(job)

    def notify(self, job_id: str) -> None:
        for listener in self.listeners:
            listener(job_id)
        self.wake(job_id)

    def wake(self, job_id: str) -> None:
        """Wake who waits on the job, and no listener: a change another worker made, seen in the store."""
        watch = self._watches.pop(job_id, None)
        if watch is not None:
            watch.event.set()

    def wake_all(self, but: Container[str] = ()) -> None:
        """Wake everyone waiting on any job but those in `but`: changes may have been missed (see `wake`)."""
        for job_id in [job_id for job_id in self._watches if job_id not in but]:
            self._watches.pop(job_id).event.set()

    @contextlib.contextmanager
    def watching(self, job_id: str) -> Iterator[asyncio.Event]:
        """An event set at the job's next change; enter *before* reading the job's state."""
        watch = self._watches.setdefault(job_id, _Watch())
        watch.watchers += 1
        try:
            yield watch.event
        finally:
            watch.watchers -= 1
            if watch.watchers == 0 and self._watches.get(job_id) is watch:
                del self._watches[job_id]

    @property
    def watched(self) -> int:
        """How many jobs someone is waiting on (for tests and metrics)."""
        return len(self._watches)

    @staticmethod
    async def wait(event: asyncio.Event, timeout_s: float) -> bool:
        """Wait for `event` up to `timeout_s`; True if it fired."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout_s)
        return event.is_set()
