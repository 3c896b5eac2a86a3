"""Which engines really work (probes, at start and after trouble), and whether the engine answers at all: when
it goes away, work waits until a ping with backoff finds it back."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping

from hatchway.engines.base import Engine
from hatchway.errors import HatchwayError

log = logging.getLogger(__name__)

RETRY_S = (1.0, 15.0)
"""The first and the longest wait between pings of an engine that went away (doubling in between)."""


async def _nothing() -> None:
    return None


class EngineHealth:
    """What the last probe of each engine found, and whether the engine answers now.

    A probe starts a tiny container, so it is done at start-up, after a job failed for an engine reason, and now
    and then while an engine is down; one probe at a time. Whether the engine *answers* is a cheaper question: once
    something finds it gone (`lost`), `answering` is cleared, the scheduler claims nothing, and a watch pings the
    engine after 1, 2, 4 ... up to 15 s until it answers. Then `on_back` tidies up what the outage left (under the
    probe lock, so no probe's container is taken for a leftover), the engines are probed again, and `answering`
    is set: jobs waiting for the engine go on.
    """

    def __init__(
        self, engines: Mapping[str, Engine], *, worker_id: str, retry_s: tuple[float, float] = RETRY_S
    ) -> None:
        self._engines = engines
        self._worker_id = worker_id
        self.retry_s = retry_s
        self.ok: dict[str, bool] = dict.fromkeys(engines, False)
        self.answering = asyncio.Event()
        """Set while the engine answers (as far as the worker knows); only this class sets or clears it."""
        self.answering.set()
        self.on_back: Callable[[], Awaitable[None]] = _nothing
        """Run once the engine answers again after an outage, before work goes on."""
        self._probing: asyncio.Task[None] | None = None
        self._watching: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

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
        """Run a tiny container on every engine and record which really work; if none answers, it is lost."""
        async with self._lock:
            await self._probe()
        if not self.all_ok and not await self.ping():
            self.lost("it does not answer a ping")

    def assume_working(self) -> None:
        """Count every engine as working without a probe; the first job that fails for an engine reason has them
        probed (`recheck`)."""
        self.ok = dict.fromkeys(self._engines, True)

    async def ping(self) -> bool:
        """Whether every engine answers now (a cheap API call, no container)."""
        results = await asyncio.gather(*(engine.ping() for engine in self._engines.values()))
        return all(results)

    def lost(self, why: object) -> None:
        """The engine stopped answering (a job or a probe found out): pause work and watch for it to come back."""
        if self.answering.is_set():
            self.answering.clear()
            log.warning(
                "the container engine stopped answering: %s",
                why,
                extra={"event": "engine_lost", "worker_id": self._worker_id},
            )
        if self._watching is None or self._watching.done():
            self._watching = asyncio.get_running_loop().create_task(self._watch(), name="engine-watch")

    async def settle(self) -> None:
        """Wait for a probe under way to end (its container removed), and stop watching, e.g. before the worker
        closes."""
        if self._watching is not None:
            self._watching.cancel()
            await asyncio.gather(self._watching, return_exceptions=True)
        if self._probing is not None:
            await asyncio.gather(self._probing, return_exceptions=True)

    def recheck(self) -> None:
        """Probe again soon (a job failed for an engine reason), unless a probe is under way."""
        if self._probing is None or self._probing.done():
            self._probing = asyncio.get_running_loop().create_task(self.probe(), name="engine-probe")

    async def _watch(self) -> None:
        delay_s, longest_s = self.retry_s
        while True:
            await asyncio.sleep(delay_s)
            if await self.ping():
                break
            delay_s = min(delay_s * 2, longest_s)
        async with self._lock:
            try:
                await self.on_back()
            except HatchwayError as exc:  # gone again, most likely: whoever needs it finds out and reports it
                log.warning("tidying up after the outage failed: %s", exc, extra={"event": "engine_tidy_failed"})
            await self._probe()
        self.answering.set()
        log.info("the container engine answers again", extra={"event": "engine_back", "worker_id": self._worker_id})

    async def _probe(self) -> None:
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
