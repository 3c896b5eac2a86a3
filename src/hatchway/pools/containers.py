"""A pool's containers themselves: how one is laid out and started with its disk, wiped between jobs, and
removed (its disk kept as a spare when that is safe). What the pools keep and hand out is `manager`'s."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from hatchway.engines.base import Engine, Mount, Role, SandboxSpec
from hatchway.engines.volume_stock import VolumeStock
from hatchway.engines.volumes import Volume
from hatchway.errors import HatchwayError
from hatchway.models import ResolvedLimits
from hatchway.pools.pool import Pool
from hatchway.pools.slot import Slot

log = logging.getLogger(__name__)

WORKDIR = "/workspace"
"""Where a pooled container's working directory is; jobs asking for another take the cold path."""
IO_DIR = "/.hatchway/io"
"""Where a pooled job's stdin, stdout and stderr files are, in the container (root's only)."""


class PoolContainers:
    """Starts, wipes and removes pool containers on the engines, each with a disk from the stock."""

    def __init__(
        self,
        *,
        engines: Mapping[str, Engine],
        volumes: VolumeStock,
        run_as_user: str,
        default_limits: ResolvedLimits,
        max_limits: ResolvedLimits,
    ) -> None:
        self._engines = engines
        self._volumes = volumes
        self._user = run_as_user
        self._default_limits = default_limits
        self._max_limits = max_limits

    async def start(self, pool: Pool, name: str) -> Slot:
        """A started, idle container `name` for `pool`; raises HatchwayError (or, for a bug, whatever it met: its
        disk given back either way) if it fails."""
        engine = self._engines[pool.key.runtime]
        volume = None
        try:
            volume = await asyncio.to_thread(self._volumes.take, name, pool.disk_mb)
            handle = await engine.open(self._spec(pool, name, volume))
        except Exception:  # not a cancellation: an engine removes the container it could not open before raising
            if volume is not None:
                await asyncio.to_thread(self._volumes.give_back, volume, pool.disk_mb)
            raise
        return Slot(
            name=name,
            key=pool.key,
            engine=engine,
            handle=handle,
            volume=volume,
            disk_mb=pool.disk_mb,
            limit_mb=pool.disk_mb,  # as `take` made it
            environment=engine.environment(handle),
        )

    async def limit_disk(self, slot: Slot, disk_mb: int) -> None:
        """Let the job in `slot` use `disk_mb` of the container's disk (unless that is the limit already)."""
        if slot.limit_mb != disk_mb:
            await asyncio.to_thread(self._volumes.volumes.limit, slot.volume, disk_mb)
            slot.limit_mb = disk_mb

    async def wipe(self, slot: Slot) -> None:
        """Empty its working directory, /tmp and its output files; raises HatchwayError if something is left."""
        await asyncio.to_thread(self._volumes.volumes.wipe, slot.volume)

    async def destroy(self, slot: Slot) -> None:
        """Remove the container; its disk is kept as a spare only if the container is surely gone."""
        removed = True
        try:
            await slot.engine.remove(slot.handle)
        except HatchwayError:
            removed = False
        try:
            if removed and slot.anomaly is None:
                await asyncio.to_thread(self._volumes.give_back, slot.volume, slot.disk_mb)
            else:
                await asyncio.to_thread(self._volumes.volumes.remove, slot.volume)
        except HatchwayError as exc:
            log.error("a pool container's disk was not removed: %s", exc, extra={"event": "volume_remove_failed"})

    def _spec(self, pool: Pool, name: str, volume: Volume) -> SandboxSpec:
        limits = self._max_limits
        return SandboxSpec(
            owner=name,
            role=Role.POOL,
            image=pool.key.image,
            user=self._user,
            memory_mb=limits.memory_mb,
            cpus=self._default_limits.cpus,
            pids=limits.pids,
            log_bytes=64 * 1024,
            network="none",
            workdir=WORKDIR,
            mounts=(
                Mount(volume.work, WORKDIR, read_only=False),
                Mount(volume.tmp, "/tmp", read_only=False),
                Mount(volume.io, IO_DIR, read_only=False),
            ),
        )
