"""What every kind of job shares on its way to its end, whichever runner takes it there (a job's or a grading's):
its live output, a stop before it started, an engine that went away, and storing how it ended, once."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from hatchway.engines.health import EngineHealth
from hatchway.errors import EngineError, EngineUnavailable, HatchwayError
from hatchway.jobs.control import RunControl
from hatchway.jobs.notify import JobSignals
from hatchway.models import Job, JobState, Outcome, Reason, Stream, utcnow
from hatchway.output.capture import OutputCapture
from hatchway.store.base import JobStore

log = logging.getLogger("hatchway.jobs.runner")  # one job's life logs under one name, whichever part tells it


class JobLifecycle:
    """The steps both runners take a job through: capture, stop before the start, outage, requeue, finish."""

    def __init__(
        self, *, store: JobStore, signals: JobSignals, health: EngineHealth, output_dir: Path, worker_id: str
    ) -> None:
        self._store = store
        self._signals = signals
        self._health = health
        self._output_dir = output_dir
        self._worker_id = worker_id

    async def stop_before_start(self, job: Job, control: RunControl) -> Job:
        """End a job killed before anything started: cancelled, or queued again if the worker is stopping."""
        if control.kill_reason == Reason.SHUTDOWN:
            # It never ran: keep it queued for the next start instead of failing it.
            requeued = await self._store.requeue_lost(job.id)
            self.log("job_requeued", job.id)
            return requeued or job
        return await self.finish(job, Outcome(state=JobState.KILLED, reason=Reason.CANCELLED), None)

    def started(self, job: Job, running: Job | None, control: RunControl) -> Job:
        """The job as `mark_running` stored it. None means it is no longer this worker's: another worker took
        it over while this one could not renew its lease (paused, or cut off from the store). Its container is
        then stopped at once, and nothing it does is recorded (the store refuses it)."""
        if running is not None:
            return running
        self.log("job_claim_lost", job.id)
        control.kill(0.0, reason=Reason.WORKER_LOST)
        return job

    async def outage(self, exc: HatchwayError) -> bool:
        """Whether `exc` means the engine went away, rather than a failure of the job or of the engine."""
        if isinstance(exc, EngineUnavailable):
            return True
        # A sandbox's stream that ends as the daemon stops says only "ended": ask the engine.
        return isinstance(exc, EngineError) and not await self._health.ping()

    async def wait_in_queue(self, job: Job, exc: HatchwayError, *, started_too: bool = False) -> Job:
        """The engine went away before the job started (or, with `started_too`, a job that may run again from
        scratch): queue it again, in its place, instead of failing it. The scheduler claims nothing until the
        engine answers again."""
        self._health.lost(exc)
        message = f"{exc}; the job waits in the queue until it answers again"
        requeued = await self._store.requeue_unstarted(job.id, message)
        if requeued is None and started_too:
            requeued = await self._store.requeue_lost(job.id)
        if requeued is None:
            return await self._store.get(job.id) or job
        self.log("job_requeued", job.id, why=str(exc))
        return requeued

    async def finish(self, job: Job, outcome: Outcome, capture: OutputCapture | None) -> Job:
        """Store how the job ended, once; if someone else ended it first, theirs is the true record."""
        if capture is not None:
            times = {stream: line_times.encode() for stream, line_times in capture.times().items() if line_times}
            outcome = outcome.model_copy(update={"build_output": capture.text(Stream.BUILD), "output_times": times})
        finished = await self._store.finish(job.id, outcome, utcnow())
        self.log(
            "job_finished" if finished is not None else "job_finish_refused",
            job.id,
            state=outcome.state.value,
            reason=outcome.reason.value if outcome.reason else None,
            exit_code=outcome.exit_code,
        )
        if finished is None:  # someone else ended it first (or took it over); theirs is the true record
            return await self._store.get(job.id) or job
        self._signals.ended(finished)
        return finished

    def capture(self, job: Job, control: RunControl, *, recovered: bool = False) -> OutputCapture:
        """The job's live output, capped per stream, visible to followers through `control`; `recovered`: the job
        is taken up after a restart, and the times the last worker recorded for its output are kept."""
        capture = OutputCapture(
            self._output_dir / job.id,
            cap_bytes=job.spec.limits.output_bytes,
            loop=asyncio.get_running_loop(),
            on_limit=control.output_limit.set,
            build=job.spec.kind == "grade" or job.spec.build is not None,
            recovered=recovered,
        )
        control.capture = capture
        return capture

    def log(self, event: str, job_id: str, **fields: object) -> None:
        log.info(event.replace("_", " "), extra={**self.extra(event, job_id), **fields})

    def extra(self, event: str, job_id: str) -> dict[str, object]:
        return {"event": event, "job_id": job_id, "worker_id": self._worker_id}
