"""The worker's maintenance service: now and then, old events and artifacts go, the image and bundle caches are
kept in their budgets, and engines that failed are probed again."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from hatchway.bundles import BundleCache
from hatchway.engines.base import ImageService
from hatchway.engines.health import EngineHealth
from hatchway.errors import EngineError
from hatchway.output.artifacts import ArtifactStore
from hatchway.store.base import JobStore

log = logging.getLogger(__name__)

INTERVAL_S = 60.0


@dataclass(frozen=True)
class Maintenance:
    store: JobStore
    events_keep: int
    artifacts: ArtifactStore
    images: ImageService
    bundles: BundleCache
    health: EngineHealth

    async def run(self, stop: asyncio.Event) -> None:
        """Every `INTERVAL_S` until `stop`."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), INTERVAL_S)
                return
            await self.once()

    async def once(self) -> None:
        await self.store.prune_events(self.events_keep)
        try:
            await self.bundles.evict()
        except OSError as exc:
            log.warning("bundle eviction failed: %s", exc, extra={"event": "bundle_evict_failed"})
        expired = await asyncio.to_thread(self.artifacts.expire)
        if expired:
            log.info("artifacts expired", extra={"event": "artifacts_expired", "count": len(expired)})
        try:
            evicted = await self.images.evict()
        except EngineError as exc:
            log.warning("image eviction failed: %s", exc, extra={"event": "image_evict_failed"})
        else:
            if evicted:
                log.info("images evicted", extra={"event": "images_evicted", "images": evicted})
        if not self.health.all_ok:
            await self.health.probe()
