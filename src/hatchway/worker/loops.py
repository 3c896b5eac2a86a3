"""The worker's background services: named tasks under one supervisor that shuts the worker down if one dies."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

log = logging.getLogger(__name__)


class Services:
    """Runs named background loops. A loop that ends while the worker is not stopping is a bug or a lost
    resource: it is logged and `on_fatal` asks the worker to drain and stop, rather than limp on without it."""

    def __init__(self, *, worker_id: str) -> None:
        self._worker_id = worker_id
        self._tasks: list[asyncio.Task[None]] = []
        self.stopping = asyncio.Event()
        """Set when the worker begins to stop: loops watch it and end on their own, which is no failure."""
        self.on_fatal: Callable[[], None] = lambda: None

    @property
    def names(self) -> list[str]:
        return [task.get_name() for task in self._tasks if not task.done()]

    def start(self, name: str, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(work, name=name)
        task.add_done_callback(self._ended)
        self._tasks.append(task)
        return task

    async def stop(self) -> None:
        """Cancel every service and wait for them to end."""
        self.stopping.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    def _ended(self, task: asyncio.Task[None]) -> None:
        if self.stopping.is_set():
            return
        error = None if task.cancelled() else task.exception()
        log.critical(
            "background service %s ended unexpectedly; shutting down",
            task.get_name(),
            exc_info=error,
            extra={"event": "loop_died", "worker_id": self._worker_id},
        )
        self.on_fatal()
