"""Which engines really work: probed at start, re-probed after trouble, consulted when admitting jobs."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from hatchway.engines.base import Engine

log = logging.getLogger(__name__)


class EngineHealth:
    """What the last probe of each engine found. A probe starts a tiny container, so it is done at start-up,
    after a job failed for an engine reason, and now and then while an engine is down; one probe at a time."""

    def __init__(self, engines: Mapping[str, Engine], *, worker_id: str) -> None:
        self._engines = engines
        self._worker_id = worker_id
        self.ok: dict[str, bool] = dict.fromkeys(engines, False)
        self._probing: asyncio.Task[None] | None = None

    @property
    def all_ok(self) -> bool:
        return all(self.ok.values())

    def available_runtimes(self) -> set[str]:
        """Runtimes a job may be admitted for now. Docker is never refused for being down (its jobs wait
        in the queue); gVisor only counts once a probe container really ran on it."""
        available = {name for name, ok in self.ok.items() if ok}
        if "docker" in self._engines:
            available.add("docker")
        return available

    async def probe(self) -> None:
        """Run a tiny container on every engine and record which really work."""
        results = await asyncio.gather(*(engine.probe() for engine in self._engines.values()))
        for name, ok in zip(self._engines, results, strict=True):
            if self.ok.get(name) != ok:
                log.info(
                    "engine %s %s",
                    name,
                    "works" if ok else "does not work",
                    extra={"event": "engine_checked", "engine": name, "available": ok, "worker_id": self._worker_id},
                )
            self.ok[name] = ok

    async def settle(self) -> None:
        """Wait for a probe under way to end (its container removed), e.g. before the worker closes."""
        if self._probing is not None:
            await asyncio.gather(self._probing, return_exceptions=True)

    def recheck(self) -> None:
        """Probe again soon (a job failed for an engine reason), unless a probe is under way."""
        if self._probing is None or self._probing.done():
            self._probing = asyncio.get_running_loop().create_task(self.probe(), name="engine-probe")
