"""Pools of started containers: kept ready per image and runtime, handed to plain jobs, reset or replaced after.

Configured pools (`pools:` in the config file) keep their size; an image that ran recently gets a small pool
of its own ("warm"), bounded in total by `pool_warm_total`, dropped after `pool_warm_idle_s` without a job.
A job a pool cannot serve takes the cold path. One that finds no idle container waits for a container being
started or reset for that pool, if one is under way that no other job waits for (it is ready sooner than a cold
start would be, and starting a second container for the job would only slow both); otherwise it goes cold.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
import uuid
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from hatchway.engines.base import Engine, ImageService, image_name
from hatchway.engines.volume_stock import VolumeStock
from hatchway.engines.volumes import numeric_owner
from hatchway.errors import HatchwayError
from hatchway.models import Job, ResolvedLimits
from hatchway.pools.containers import WORKDIR, PoolContainers
from hatchway.pools.pool import Pool, PoolStatus
from hatchway.pools.slot import PoolKey, Slot, SlotState
from hatchway.settings import PoolConfig

log = logging.getLogger(__name__)

_MIN_STARTS_AT_ONCE = 2
_MAX_STARTS_AT_ONCE = 8
"""Container starts under way at once: as many as there are job slots (a one-use pool under load starts one a job),
within these bounds; more only compete with running jobs for the engine and the CPUs."""
_WAIT_FOR_START_S = 10.0
"""How long a job waits for a container being started for it before it takes the cold path after all."""
_BACKOFF_S = (1.0, 2.0, 5.0, 10.0, 30.0)
_SWEEP_INTERVAL_S = 1.0
"""How often pools are refilled, warm pools expired and idle containers checked (at most one a pool at a time)."""
_CHECK_EVERY_S = 3.0
_FRESH_S = 1.0
"""A container that served or answered a ping this recently is handed out without another ping."""
"""How often an idle container's supervisor is pinged, to replace one that died."""


class Pools:
    """Every pool of this worker, and the loop that keeps them filled."""

    def __init__(
        self,
        *,
        engines: Mapping[str, Engine],
        volumes: VolumeStock,
        images: ImageService,
        configs: list[PoolConfig],
        warm_total: int,
        warm_size: int,
        warm_idle_s: float,
        run_as_user: str,
        default_limits: ResolvedLimits,
        max_limits: ResolvedLimits,
        worker_id: str,
        engine_ok: Callable[[str], bool],
        slots: int = _MIN_STARTS_AT_ONCE,
    ) -> None:
        self._engines = engines
        self._containers = PoolContainers(
            engines=engines,
            volumes=volumes,
            run_as_user=run_as_user,
            default_limits=default_limits,
            max_limits=max_limits,
        )
        self._images = images
        self._warm_total = warm_total
        self._warm_size = warm_size
        self._warm_idle_s = warm_idle_s
        self._owner = numeric_owner(run_as_user)
        self._default_limits = default_limits
        self._worker_id = worker_id
        self._engine_ok = engine_ok
        self._starts_at_once = min(max(slots, _MIN_STARTS_AT_ONCE), _MAX_STARTS_AT_ONCE)
        self._pools: dict[PoolKey, Pool] = {}
        for config in configs:
            key = PoolKey(image_name(config.image), config.runtime)
            if config.runtime in engines:
                self._add(key, config.size, config.reuse_jobs, config.disk_mb, configured=True)
        self._wake = asyncio.Event()
        self._changed = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._names = itertools.count(1)
        self._prefix = uuid.uuid4().hex[:6]
        self.running = False

    # What the runner calls

    async def claim(self, job: Job, runtime: str) -> Slot | None:
        """An idle container for `job`, now busy; None if no pool can serve it soon (cold path). With none idle, it
        waits for one being started or reset, if there is one no other job waits for. A container idle for a while
        is pinged first: its supervisor's connection goes through the engine, and an engine restart cuts it."""
        key = self.key_for(job, runtime)
        if key is None:
            return None
        pool = self._pools.get(key)
        if pool is None:
            # A Dockerfile's image gets a pool once it is built (by this job, on the cold path, if not yet).
            if job.spec.build is None or await self._images.present(key.image):
                self._warm(key)
            return None
        pool.last_used = time.monotonic()
        if job.spec.limits.disk_mb > pool.disk_mb:
            return None
        deadline = time.monotonic() + _WAIT_FOR_START_S
        while True:
            slot = await self._take_idle(pool)
            if slot is not None:
                slot.state, slot.job_id = SlotState.BUSY, job.id
                slot.result, slot.run, slot.stopped, slot.offsets = None, None, False, {}
                pool.busy.add(slot)
                pool.hits += 1
                self._notify()  # one fewer idle: refill
                return slot
            left = deadline - time.monotonic()
            if not self.running or pool.starting <= pool.waiting or left <= 0 or self._pools.get(key) is not pool:
                return None
            changed = self.next_change()
            pool.waiting += 1
            try:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), left)
            finally:
                pool.waiting -= 1

    async def _take_idle(self, pool: Pool) -> Slot | None:
        """The pool's next idle container that answers, or None; dead ones found on the way are replaced."""
        while pool.idle:
            slot = pool.idle.popleft()
            if slot.anomaly is None and time.monotonic() - slot.checked_at > _FRESH_S:
                if await slot.engine.check(slot.handle):
                    slot.checked_at = time.monotonic()
                else:
                    slot.anomaly = "its supervisor did not answer"
            if slot.anomaly is None:
                return slot
            self._discard(pool, slot)  # it died while idle
        return None

    def key_for(self, job: Job, runtime: str) -> PoolKey | None:
        """The pool key of a job a pooled container can serve as well as a fresh one; None for the others."""
        spec = job.spec
        image = spec.image
        if spec.build is not None and spec.bundle_url is None:
            # Its image's name is known before it is built: a hash of the Dockerfile, the files and the runtime.
            files = {path: text.encode() for path, text in spec.build.files.items()}
            image = self._images.build_name(spec.build.dockerfile, files, "", runtime)
        if (
            spec.kind != "job"
            or image is None
            or (spec.bundle_url is not None and spec.build is not None)
            or spec.network != "none"
            or spec.ports
            or spec.workdir != WORKDIR
            or spec.image_defaults  # a pooled container runs argv as given, in its own working directory
            or self._owner is None
            or spec.limits.cpus != self._default_limits.cpus
        ):
            return None
        return PoolKey(image_name(image), runtime)

    async def release(self, slot: Slot) -> None:
        """The job is over (its result stored): reset the container for the next job before returning (so that a
        client told the job ended finds it ready), or replace it in the background."""
        pool = self._pools.get(slot.key)
        if pool is None or slot not in pool.busy:  # taken up after a restart: removed like a cold job's container
            await self._containers.destroy(slot)
            return
        pool.busy.discard(slot)
        pool.served += 1
        slot.served += 1
        slot.job_id = None
        reusable = (
            self.running
            and not slot.stopped
            and slot.anomaly is None
            and slot.served <= pool.reuse_jobs
            and slot.result is not None
            and slot.result.error is None
        )
        if reusable:
            slot.state = SlotState.RESETTING
            pool.starting += 1
            await self._reset(pool, slot)
        else:
            self._discard(pool, slot)

    async def limit_disk(self, slot: Slot, disk_mb: int) -> None:
        """Let the job in `slot` use `disk_mb` of the container's disk (unless that is the limit already)."""
        await self._containers.limit_disk(slot, disk_mb)

    def next_change(self) -> asyncio.Event:
        """An event set when a container next starts or is started, is claimed, comes back or goes; take it
        *before* looking."""
        return self._changed

    def status(self) -> list[PoolStatus]:
        return [pool.status() for pool in self._pools.values()]

    # The fill loop (a background service)

    async def run(self, stop: asyncio.Event) -> None:
        """Keep every pool at its size until `stop`."""
        self.running = True
        try:
            checked = time.monotonic()
            while not stop.is_set():
                self._wake.clear()
                self._expire_warm()
                if time.monotonic() - checked >= _SWEEP_INTERVAL_S:
                    checked = time.monotonic()
                    # A task of its own, which `close` waits for: a container out for its ping must not come
                    # back to an idle list that `close` has already emptied.
                    await asyncio.shield(self._spawn(self._check_idle(), "pool-check"))
                self._fill()
                waiters = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stop.wait())]
                await asyncio.wait(waiters, timeout=_SWEEP_INTERVAL_S, return_when=asyncio.FIRST_COMPLETED)
                for waiter in waiters:
                    waiter.cancel()
        finally:
            self.running = False  # containers given back from now on are removed; `close` removes the idle ones
            self._notify()  # jobs waiting for a start take the cold path

    async def close(self) -> None:
        """Remove every idle container, and wait for starts, resets, pings and removals under way."""
        self.running = False  # from now on a container that comes back is removed, and none is started
        for pool in self._pools.values():
            while pool.idle:
                self._discard(pool, pool.idle.popleft())
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
            for pool in self._pools.values():
                while pool.idle:
                    self._discard(pool, pool.idle.popleft())

    def engine_restarted(self) -> None:
        """The engine was away: every container's connection is cut. Replace them all (a busy one after its job)."""
        for pool in self._pools.values():
            for slot in pool.busy:
                slot.anomaly = slot.anomaly or "the engine restarted"
            while pool.idle:
                slot = pool.idle.popleft()
                slot.anomaly = "the engine restarted"
                self._discard(pool, slot)
        self._notify()

    def lost(self, slot: Slot, why: str) -> None:
        """The container died or misbehaved: it must not serve again."""
        slot.anomaly = slot.anomaly or why
        self._notify()

    # Inside

    def _notify(self) -> None:
        """Something changed: the fill loop looks again, and whoever watches the pools is told."""
        self._wake.set()
        self._tell_watchers()

    def _tell_watchers(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def _check_idle(self) -> None:
        """Ping the supervisor of each pool's longest-unchecked idle container, taken out for that moment (the
        others stay ready); replace it if it died."""
        now = time.monotonic()
        taken = []
        for pool in self._pools.values():
            due = [slot for slot in pool.idle if now - slot.checked_at >= _CHECK_EVERY_S]
            if due:
                slot = min(due, key=lambda slot: slot.checked_at)
                pool.idle.remove(slot)
                taken.append((pool, slot))
        if not taken:
            return
        alive = await asyncio.gather(*(slot.engine.check(slot.handle) for _, slot in taken))
        for (pool, slot), ok in zip(taken, alive, strict=True):
            slot.checked_at = time.monotonic()
            if ok and self.running and self._pools.get(pool.key) is pool:
                pool.idle.append(slot)
                continue
            if not ok:
                log.warning(
                    "an idle pool container died; replacing it",
                    extra={"event": "pool_container_lost", "image": pool.key.image, "container": slot.handle.ref},
                )
            self._discard(pool, slot)

    def _add(self, key: PoolKey, size: int, reuse_jobs: int, disk_mb: int | None, *, configured: bool) -> Pool:
        pool = Pool(
            key=key,
            size=size,
            reuse_jobs=reuse_jobs,
            disk_mb=disk_mb or self._default_limits.disk_mb,
            configured=configured,
        )
        self._pools[key] = pool
        self._images.acquire(key.image)  # held while the pool exists: eviction must not take it
        return pool

    def _warm(self, key: PoolKey) -> None:
        warm = sum(pool.size for pool in self._pools.values() if not pool.configured)
        if self._warm_size <= 0 or warm + self._warm_size > self._warm_total or key.runtime not in self._engines:
            return
        self._add(key, self._warm_size, 0, None, configured=False)
        log.info("pool warming", extra={"event": "pool_warming", "image": key.image, "runtime": key.runtime})
        self._notify()

    def _expire_warm(self) -> None:
        now = time.monotonic()
        for key, pool in list(self._pools.items()):
            if pool.configured or pool.busy or now - pool.last_used < self._warm_idle_s:
                continue
            while pool.idle:
                self._discard(pool, pool.idle.popleft())
            if pool.starting == 0:
                del self._pools[key]
                self._images.release(key.image)
                log.info("pool dropped", extra={"event": "pool_dropped", "image": key.image, "runtime": key.runtime})

    def _fill(self) -> None:
        if not self.running:
            return
        now = time.monotonic()
        starting = sum(pool.starting for pool in self._pools.values())
        for pool in self._pools.values():
            if now < pool.retry_at or not self._engine_ok(pool.key.runtime):
                continue
            while self._kept(pool) < pool.size and starting < self._starts_at_once:
                pool.starting += 1
                starting += 1
                self._spawn(self._start(pool), f"pool-start-{pool.key}")
                self._tell_watchers()

    @staticmethod
    def _kept(pool: Pool) -> int:
        """Containers the pool counts towards its size: a busy one counts if it will come back."""
        return len(pool.idle) + pool.starting + (len(pool.busy) if pool.reuse_jobs else 0)

    async def _start(self, pool: Pool) -> None:
        try:
            slot = await self._containers.start(pool, f"pool-{self._prefix}-{next(self._names)}")
        except HatchwayError as exc:
            self._start_failed(pool, str(exc))
            return
        except Exception as exc:
            # A bug or an error nothing translated: the pool still counts right (a start that never ends its count
            # stops the pool from ever filling) and says what happened.
            log.exception("pool container start raised", extra={"event": "pool_start_error", "image": pool.key.image})
            self._start_failed(pool, f"starting a container failed unexpectedly: {exc!r}")
            return
        pool.starting -= 1
        pool.failures, pool.last_error = 0, None
        if self._pools.get(pool.key) is pool and self.running:
            pool.idle.append(slot)
        else:
            await self._containers.destroy(slot)
        self._notify()

    def _start_failed(self, pool: Pool, error: str) -> None:
        pool.starting -= 1
        pool.failures += 1
        pool.last_error = error
        pool.retry_at = time.monotonic() + _BACKOFF_S[min(pool.failures, len(_BACKOFF_S)) - 1]
        log.warning(
            "pool container did not start: %s", error, extra={"event": "pool_start_failed", "image": pool.key.image}
        )
        self._notify()

    async def _reset(self, pool: Pool, slot: Slot) -> None:
        """Make a used container as good as new: the supervisor already killed every process of the job;
        empty its working directory, /tmp and its output files."""
        try:
            await self._containers.wipe(slot)
        except HatchwayError as exc:
            slot.anomaly = f"the wipe after a job failed: {exc}"
        except Exception as exc:  # as in _start: the count must stay right whatever went wrong
            log.exception("pool container wipe raised", extra={"event": "pool_wipe_error", "image": pool.key.image})
            slot.anomaly = f"the wipe after a job failed unexpectedly: {exc!r}"
        pool.starting -= 1
        slot.checked_at = time.monotonic()  # it just served a job: alive
        if slot.anomaly is None and self.running and self._pools.get(pool.key) is pool:
            slot.state = SlotState.IDLE
            pool.idle.append(slot)
        else:
            await self._containers.destroy(slot)
        self._notify()

    def _discard(self, pool: Pool, slot: Slot) -> None:
        self._spawn(self._containers.destroy(slot), f"pool-remove-{slot.name}")
        self._notify()

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.ensure_future(work)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task
