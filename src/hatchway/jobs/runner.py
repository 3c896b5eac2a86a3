"""Running one job: prepare, start, supervise the limits, decide the outcome, store it, then clean up.

When the engine goes away (it restarts, say), a job that had not started goes back to the queue and runs once the
engine answers again; a running one keeps what it printed, waits for the engine (within its own time limit), and
is re-attached to its container, as after a worker restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta

from hatchway.engines.base import CommandNotRunnable, Engine, ExitStatus, Found
from hatchway.engines.health import EngineHealth
from hatchway.engines.volume_stock import VolumeStock
from hatchway.engines.volumes import Volume, numeric_owner
from hatchway.errors import (
    BadBundle,
    BuildFailed,
    EngineError,
    EngineUnavailable,
    HatchwayError,
    ImageNotFound,
    ImagePullFailed,
    NotAllowed,
    RunNeverStarted,
)
from hatchway.jobs.control import RunControl
from hatchway.jobs.lifecycle import JobLifecycle
from hatchway.jobs.notify import JobSignals
from hatchway.jobs.outcome import captured, cut_off, decide
from hatchway.jobs.prepare import Prepared, Preparer
from hatchway.models import Job, JobState, Outcome, Reason, RunInfo, Stream, utcnow
from hatchway.output.artifacts import ArtifactStore, Collected
from hatchway.output.capture import OutputCapture
from hatchway.pools import PooledRuns, PoolKey, Pools, Slot
from hatchway.pools.slot import SlotState
from hatchway.store.base import JobStore

log = logging.getLogger(__name__)

# Failures while preparing a job, each with the reason it ends with.
_PREPARE_FAILURES: tuple[tuple[type[HatchwayError], Reason], ...] = (
    (BadBundle, Reason.BAD_BUNDLE),
    (ImageNotFound, Reason.IMAGE_NOT_FOUND),
    (ImagePullFailed, Reason.IMAGE_PULL_FAILED),
    (BuildFailed, Reason.BUILD_FAILED),
    (NotAllowed, Reason.BUILD_FAILED),
)


class JobRunner:
    """Takes a claimed job to a final, stored state, whatever happens on the way."""

    def __init__(
        self,
        *,
        store: JobStore,
        engines: Mapping[str, Engine],
        preparer: Preparer,
        volumes: VolumeStock,
        pools: Pools | None,
        artifacts: ArtifactStore,
        signals: JobSignals,
        lifecycle: JobLifecycle,
        worker_id: str,
        choose_runtime: Callable[[str], tuple[str, list[str]]],
        health: EngineHealth,
    ) -> None:
        self._store = store
        self._lifecycle = lifecycle
        self._engines = engines
        self._preparer = preparer
        self._volumes = volumes
        self._pools = pools
        self._pooled = PooledRuns(pools) if pools is not None else None
        self._owner = numeric_owner(preparer.user)
        self._artifacts = artifacts
        self._signals = signals
        self._worker_id = worker_id
        self._choose_runtime = choose_runtime
        self._health = health

    async def run(self, job: Job, control: RunControl) -> Job:
        """Prepare, start and supervise a job that this worker has claimed (state `building`)."""
        self._lifecycle.log("job_building", job.id)
        began = time.perf_counter()  # from the claim to the command handed to its container
        capture = self._lifecycle.capture(job, control)
        try:
            if control.kill_requested.is_set():
                return await self._lifecycle.stop_before_start(job, control)
            runtime, warnings = self._choose_runtime(job.spec.runtime)
            engine = self._engines[runtime]
            pools = self._pools
            control.slot = await pools.claim(job, runtime) if pools is not None else None
            if pools is not None and control.slot is not None:
                control.volume = control.slot.volume
                await pools.limit_disk(control.slot, job.spec.limits.disk_mb)
            else:
                control.volume = await asyncio.to_thread(self._volumes.take, job.id, job.spec.limits.disk_mb)
            prepared = await self._preparer.prepare(
                job,
                volume=control.volume,
                engine=runtime,
                warnings=[*job.run.warnings, *warnings],
                on_build_output=lambda line: capture.write(Stream.BUILD, line.encode() + b"\n"),
                image_present=control.slot is not None,
                stop=control.kill_requested,
            )
            if control.kill_requested.is_set():
                return await self._lifecycle.stop_before_start(job, control)
            if await self._store.mark_launching(job.id, utcnow()) is None:
                # Taken over meanwhile (this worker could not renew its lease): another worker runs it now.
                self._lifecycle.log("job_claim_lost", job.id)
                return job
            if control.slot is not None:
                return await self._run_pooled(job, control, control.slot, prepared, capture, began=began)
            started = await engine.start(prepared.sandbox, prepared.process, capture)
            self._signals.container_started(runtime, pooled=False, seconds=time.perf_counter() - began)
            if isinstance(started, CommandNotRunnable):
                outcome = Outcome(
                    state=JobState.FAILED, reason=Reason.EXIT_CODE, exit_code=started.exit_code, message=started.message
                )
                return await self._lifecycle.finish(job, outcome, capture)
            control.engine, control.handle = engine, started
            running = await self._store.mark_running(job.id, utcnow(), prepared.run)
            self._signals.notify(job.id)
            self._lifecycle.log("job_running", job.id, engine=runtime)
            return await self._supervise(self._lifecycle.started(job, running, control), control, capture)
        except HatchwayError as exc:
            if control.handle is None and control.kill_requested.is_set():
                return await self._lifecycle.stop_before_start(job, control)  # its build was stopped for the kill
            if control.handle is None and await self._lifecycle.outage(exc):
                return await self._lifecycle.wait_in_queue(job, exc)
            return await self._failed(job, exc, capture)
        except OSError as exc:
            log.exception("job failed on the worker", extra=self._lifecycle.extra("job_engine_error", job.id))
            return await self._failed(job, EngineError(str(exc)), capture)
        finally:
            await self._clean_up(job, control, capture)

    async def _run_pooled(
        self, job: Job, control: RunControl, slot: Slot, prepared: Prepared, capture: OutputCapture, *, began: float
    ) -> Job:
        assert self._pooled is not None and self._owner is not None
        uid, gid = self._owner
        handle = await self._pooled.start(slot, prepared.process, job.spec.limits, capture, uid=uid, gid=gid)
        self._signals.container_started(slot.key.runtime, pooled=True, seconds=time.perf_counter() - began)
        control.engine, control.handle = self._pooled, handle
        run = prepared.run.model_copy(update={"pooled": True, "sandbox": slot.name})
        running = await self._store.mark_running(job.id, utcnow(), run)
        self._signals.notify(job.id)
        self._lifecycle.log("job_running", job.id, engine=slot.key.runtime, pooled=True)
        return await self._supervise(self._lifecycle.started(job, running, control), control, capture)

    async def resume(self, job: Job, found: Found, control: RunControl) -> Job:
        """Pick up a job whose container outlived a worker restart, as if nothing had happened."""
        self._lifecycle.log("job_reattached", job.id)
        capture = self._lifecycle.capture(job, control, recovered=True)
        control.engine, control.handle = self._engines[found.engine], found.handle
        control.volume = self._volumes.volumes.find(job.id)
        if job.run.sandbox is not None and self._pooled is not None:
            control.slot = self._adopted_slot(job, found)
            control.volume = control.slot.volume
            control.engine = self._pooled
            self._pooled.adopt(control.slot, capture, job.spec.limits.output_bytes)
        try:
            running = job
            if job.state == JobState.BUILDING:
                assert found.started_at is not None
                run = RunInfo(engine=found.engine, image=job.spec.image)
                running = await self._store.mark_running(job.id, found.started_at, run) or job
                self._signals.notify(job.id)
            return await self._supervise(running, control, capture)
        except RunNeverStarted as exc:
            requeued = await self._store.requeue_lost(job.id)
            self._lifecycle.log("job_requeued", job.id, why=str(exc))
            return requeued or job
        except HatchwayError as exc:
            return await self._failed(job, exc, capture)
        finally:
            await self._clean_up(job, control, capture)

    def _adopted_slot(self, job: Job, found: Found) -> Slot:
        """The pooled container a job ran in when the worker died, taken up again (replaced after the job)."""
        assert job.run.sandbox is not None and job.spec.image is not None
        return Slot(
            name=job.run.sandbox,
            key=PoolKey(job.run.image or job.spec.image, found.engine),
            engine=self._engines[found.engine],
            handle=found.handle,
            volume=self._volumes.volumes.find(job.run.sandbox),
            disk_mb=job.spec.limits.disk_mb,
            environment={},
            state=SlotState.BUSY,
            job_id=job.id,
            anomaly="taken up after a worker restart",
        )

    async def _supervise(self, job: Job, control: RunControl, capture: OutputCapture) -> Job:
        assert control.engine is not None and control.handle is not None
        engine, handle = control.engine, control.handle
        deadline = (job.started_at or utcnow()) + timedelta(seconds=job.spec.limits.timeout_s)
        stopped_for: Reason | None = None
        lost: HatchwayError | None = None
        while True:
            exited = asyncio.create_task(engine.wait(handle, capture), name=f"wait-{job.id}")
            if stopped_for is None:
                stopped_for = await _first_of(exited, control, _left_s(deadline))
                if stopped_for is not None:
                    await self._stop(job, control, stopped_for)
            try:
                status = await exited
                break
            except HatchwayError as exc:
                if not await self._lifecycle.outage(exc):
                    if lost is not None:
                        raise EngineError(
                            f"{lost}; when it answered again the job could not be picked up: {exc}"
                        ) from exc
                    raise
                lost = exc
            # The engine went away: what the job printed so far is kept; wait for the engine, within the job's
            # time limit, then wait for its container again (the rest of its output comes from the engine's log).
            self._health.lost(lost)
            self._lifecycle.log("job_waiting_for_engine", job.id, why=str(lost))
            if stopped_for is None:
                stopped_for = await _engine_back(self._health.answering, control, _left_s(deadline))
            if not self._health.answering.is_set():
                assert stopped_for is not None
                return await self._lifecycle.finish(job, cut_off(stopped_for, lost, capture), capture)
            self._lifecycle.log("job_reattaching", job.id)
            if stopped_for is not None:  # the stop may not have reached the container before the outage
                await self._stop(job, control, stopped_for)
        assert control.volume is not None
        collected, disk_full = await asyncio.to_thread(self._collect, job.id, control.volume)
        outcome = decide(status, stopped_for, capture, disk_full=disk_full)
        if status.message and outcome.reason == Reason.EXIT_CODE and not outcome.message:
            outcome = outcome.model_copy(update={"message": status.message})
        if collected.truncated:
            outcome = outcome.model_copy(update={"message": self._artifacts.left_out(collected)})
        return await self._lifecycle.finish(
            job, outcome.model_copy(update={"resources": engine.resources(handle)}), capture
        )

    def _collect(self, job_id: str, volume: Volume) -> tuple[Collected, bool]:
        """The job's artifacts, and whether it filled its disk (blocking)."""
        return self._artifacts.collect(job_id, volume.work), self._volumes.volumes.full(volume)

    async def _stop(self, job: Job, control: RunControl, reason: Reason) -> None:
        assert control.engine is not None and control.handle is not None
        grace_s = control.kill_grace_s if reason in (Reason.KILLED, Reason.SHUTDOWN) else 0.0
        self._lifecycle.log("job_stopping", job.id, reason=reason.value)
        # If the engine went away, the wait meets the outage too, and the stop is sent again once it is back.
        with contextlib.suppress(EngineUnavailable):
            await control.engine.stop(control.handle, grace_s)

    async def _failed(self, job: Job, exc: HatchwayError, capture: OutputCapture) -> Job:
        reason = next((reason for kind, reason in _PREPARE_FAILURES if isinstance(exc, kind)), None)
        if reason is None:
            reason = Reason.ENGINE_ERROR
            log.error("job failed in the engine: %s", exc, extra=self._lifecycle.extra("job_engine_error", job.id))
            self._health.recheck()
        # What it printed before the failure is kept.
        outcome = Outcome(state=JobState.FAILED, reason=reason, message=str(exc), **captured(capture))
        return await self._lifecycle.finish(job, outcome, capture)

    async def _clean_up(self, job: Job, control: RunControl, capture: OutputCapture) -> None:
        """Remove what the job used; waiters wake only now, so an ended job is also a cleaned-up one."""
        job_id = job.id
        capture.finish()
        removed = True
        if control.engine is not None and control.handle is not None:
            try:
                await control.engine.remove(control.handle)
            except EngineError:
                removed = False
        elif control.slot is not None and self._pools is not None:
            await self._pools.release(control.slot)  # claimed, but the job never started in it
        self._preparer.release(job_id)
        if control.volume is not None and control.slot is None:
            try:
                if removed:  # a volume a live container may still write to is never handed on
                    await asyncio.to_thread(self._volumes.give_back, control.volume, job.spec.limits.disk_mb)
                else:
                    await asyncio.to_thread(self._volumes.volumes.remove, control.volume)
            except HatchwayError as exc:
                log.error(
                    "the job's disk was not removed: %s",
                    exc,
                    extra=self._lifecycle.extra("volume_remove_failed", job_id),
                )
        self._signals.notify(job_id)


def _left_s(deadline: datetime) -> float:
    return max((deadline - utcnow()).total_seconds(), 0.0)


async def _engine_back(answering: asyncio.Event, control: RunControl, timeout_s: float) -> Reason | None:
    """Wait for the engine to answer again, a kill or the timeout; None if the engine answered first."""
    back = asyncio.create_task(answering.wait())
    kill = asyncio.create_task(control.kill_requested.wait())
    try:
        await asyncio.wait({back, kill}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        back.cancel()
        kill.cancel()
    if control.kill_requested.is_set():
        return control.kill_reason
    return None if answering.is_set() else Reason.TIMEOUT


async def _first_of(exited: asyncio.Task[ExitStatus], control: RunControl, timeout_s: float) -> Reason | None:
    """Wait for the container to exit, a kill, the output limit or the timeout; None if it exited first."""
    kill = asyncio.create_task(control.kill_requested.wait())
    flood = asyncio.create_task(control.output_limit.wait())
    try:
        done, _ = await asyncio.wait({exited, kill, flood}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        kill.cancel()
        flood.cancel()
    if exited in done:
        return None
    if kill in done:
        return control.kill_reason
    if flood in done:
        return Reason.OUTPUT_LIMIT
    return Reason.TIMEOUT
