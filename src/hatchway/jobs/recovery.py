"""Restart recovery: settle what the last run of this worker left in the store and on the engine."""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections import defaultdict
from collections.abc import Awaitable, Callable, Container, Iterable, Mapping
from pathlib import Path

from hatchway.engines.base import Engine, Found, Handle, Role
from hatchway.jobs.notify import JobSignals
from hatchway.models import Job, JobState, Outcome, Reason, utcnow
from hatchway.store.base import JobStore

log = logging.getLogger(__name__)


class Recovery:
    """After a restart, every job this worker had claimed is settled exactly once:

    - a plain job whose container is still there (started) is re-attached and supervised as if nothing happened;
    - a job that never started (`building`), or a grade (grading has no side effects), is queued again
      and its containers removed: it runs again from scratch;
    - a plain job whose container is gone failed with `worker_restart`: its result is lost.

    Every other container carrying this worker's label is a leftover and is removed, whatever its role; so are the
    disks and the intermediate images of the builds it cut short.
    """

    def __init__(
        self,
        *,
        store: JobStore,
        engines: Mapping[str, Engine],
        worker_id: str,
        resume: Callable[[Job, Found], None],
        signals: JobSignals,
        stale_dirs: Iterable[Path] = (),
        sweep_volumes: Callable[[set[str]], list[str]] = lambda keep: [],
        sweep_images: Callable[[], Awaitable[list[str]]] | None = None,
    ) -> None:
        self._store = store
        self._engines = engines
        self._worker_id = worker_id
        self._resume = resume
        self._signals = signals
        self._stale_dirs = list(stale_dirs)
        self._sweep_volumes = sweep_volumes
        self._sweep_images = sweep_images

    async def run(self) -> None:
        """Settle everything; raises EngineError (before changing anything) if the engine cannot list."""
        everything = await asyncio.gather(*(engine.recover() for engine in self._engines.values()))
        unique = {item.handle.ref: item for found_list in everything for item in found_list}
        by_owner: dict[str, list[Found]] = defaultdict(list)
        for item in unique.values():
            by_owner[item.handle.job_id].append(item)
        leftovers: list[Handle] = []
        adopted: set[str] = set()
        resumable: list[tuple[Job, Found]] = []
        for job in await self._store.active(self._worker_id):
            containers = by_owner.pop(job.id, [])
            if job.run.sandbox is not None:  # it ran in a pooled container, labelled with the pool's name for it
                containers += by_owner.pop(job.run.sandbox, [])
            main = _resumable(job, containers)
            if main is not None:
                adopted.add(job.id)
                if job.run.sandbox is not None:
                    adopted.add(job.run.sandbox)  # its disk is the pooled container's
                leftovers += [item.handle for item in containers if item is not main]
                resumable.append((job, main))
                continue
            leftovers += [item.handle for item in containers]
            await self._settle_lost(job)
        leftovers += [item.handle for found in by_owner.values() for item in found]
        for handle in leftovers:
            self._log("container_reaped", handle.job_id, container=handle.ref, role=handle.role)
            await self._any_engine().remove(handle)
        await asyncio.to_thread(self._clear_stale_dirs, adopted)
        swept = await asyncio.to_thread(self._sweep_volumes, adopted)
        if swept:
            extra = {"event": "volumes_swept", "worker_id": self._worker_id, "count": len(swept)}
            log.info("volumes removed", extra=extra)
        if self._sweep_images is not None:  # after the containers, which may have used them
            images = await self._sweep_images()
            if images:
                extra = {"event": "build_images_swept", "worker_id": self._worker_id, "count": len(images)}
                log.info("images of unfinished builds removed", extra=extra)
        # Only now: a taken-up job that ends at once hands its disk on as a spare, which the sweep, not knowing
        # it, would remove from under the next job.
        for job, main in resumable:
            self._resume(job, main)

    async def _settle_lost(self, job: Job) -> None:
        if (job.state == JobState.BUILDING and job.launched_at is None) or job.spec.kind == "grade":
            # It never started, or it can safely run again from scratch: do what the client wanted.
            await self._store.requeue_lost(job.id)
            self._signals.notify(job.id)
            self._log("job_requeued", job.id)
            return
        lost = await self._store.finish(
            job.id,
            Outcome(
                state=JobState.FAILED,
                reason=Reason.WORKER_RESTART,
                message="the worker restarted while the job ran and its container was gone",
            ),
            utcnow(),
        )
        self._signals.notify(job.id)
        if lost is not None:
            self._signals.ended(lost)
        self._log("job_lost", job.id)

    async def reap(self, active: Container[str]) -> None:
        """Remove this worker's sandboxes that belong to no job in `active`: after an engine outage, those of
        jobs that ended while the engine was away, or of a start the outage cut short."""
        everything = await asyncio.gather(*(engine.recover() for engine in self._engines.values()))
        unique = {item.handle.ref: item for found_list in everything for item in found_list}
        for item in unique.values():
            if item.handle.job_id not in active:
                self._log("container_reaped", item.handle.job_id, container=item.handle.ref, role=item.handle.role)
                await self._any_engine().remove(item.handle)

    def _clear_stale_dirs(self, keep: set[str]) -> None:
        for parent in self._stale_dirs:
            if parent.is_dir():
                for child in parent.iterdir():
                    # A job's directory, or its output files <id>.<stream> (an id may hold dots itself).
                    if child.name not in keep and child.name.rsplit(".", 1)[0] not in keep:
                        _remove_tree(child)

    def _any_engine(self) -> Engine:
        # Engines on one Docker host can remove each other's containers.
        return next(iter(self._engines.values()))

    def _log(self, event: str, job_id: str, **fields: object) -> None:
        log.info(
            event.replace("_", " "),
            extra={"event": event, "job_id": job_id, "worker_id": self._worker_id, **fields},
        )


def _resumable(job: Job, containers: list[Found]) -> Found | None:
    """The container a plain job can be re-attached to: its own job container, or the pooled one it ran in,
    started."""
    if job.spec.kind != "job":
        return None
    role = Role.POOL if job.run.sandbox is not None else Role.JOB
    for item in containers:
        if item.handle.role == role and item.started_at is not None:
            return item
    return None


def _remove_tree(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
