"""Running one job: workspace, container, limits, outcome; the result is stored before anything is removed."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from hatchway.engines.base import CommandNotRunnable, Engine, ExitStatus, Handle
from hatchway.errors import EngineError, HatchwayError, ImageNotFound
from hatchway.models import Job, JobState, Outcome, Reason, Stream, utcnow
from hatchway.output import OutputCapture
from hatchway.signals import JobSignals
from hatchway.store.base import JobStore

log = logging.getLogger(__name__)


@dataclass
class RunControl:
    """How the rest of the worker steers one active job."""

    job_id: str
    kill_requested: asyncio.Event = field(default_factory=asyncio.Event)
    kill_grace_s: float = 0.0
    kill_reason: Reason = Reason.KILLED
    output_limit: asyncio.Event = field(default_factory=asyncio.Event)
    capture: OutputCapture | None = None

    def kill(self, grace_s: float, reason: Reason = Reason.KILLED) -> None:
        if not self.kill_requested.is_set():
            self.kill_grace_s = grace_s
            self.kill_reason = reason
            self.kill_requested.set()


class JobRunner:
    """Takes a claimed job to a final, stored state, whatever happens on the way."""

    def __init__(
        self,
        *,
        store: JobStore,
        engine: Engine,
        signals: JobSignals,
        work_dir: Path,
        output_dir: Path,
        worker_id: str,
        run_as_user: str,
    ) -> None:
        self._store = store
        self._engine = engine
        self._signals = signals
        self._work_dir = work_dir
        self._output_dir = output_dir
        self._worker_id = worker_id
        self._owner = _numeric_owner(run_as_user)

    async def run(self, job: Job, control: RunControl) -> Job:
        """Prepare, start and supervise a job that this worker has claimed (state `building`)."""
        self._log("job_building", job.id)
        handle: Handle | None = None
        capture = self._capture(job, control)
        try:
            workspace = self._prepare_workspace(job)
            if control.kill_requested.is_set():
                return await self._stop_before_start(job, control)
            started = await self._engine.start(job, workspace, capture)
            if isinstance(started, CommandNotRunnable):
                return await self._finish(
                    job,
                    Outcome(
                        state=JobState.FAILED,
                        reason=Reason.EXIT_CODE,
                        exit_code=started.exit_code,
                        message=started.message,
                    ),
                )
            handle = started
            running = await self._store.mark_running(job.id, utcnow())
            self._signals.notify(job.id)
            self._log("job_running", job.id)
            return await self._supervise(running or job, handle, control, capture)
        except ImageNotFound as exc:
            return await self._finish(
                job, Outcome(state=JobState.FAILED, reason=Reason.IMAGE_NOT_FOUND, message=str(exc))
            )
        except (HatchwayError, OSError) as exc:
            log.exception("job failed in the engine", extra=self._extra("job_engine_error", job.id))
            return await self._finish(job, Outcome(state=JobState.FAILED, reason=Reason.ENGINE_ERROR, message=str(exc)))
        finally:
            await self._clean_up(job.id, handle, capture)

    async def resume(self, job: Job, handle: Handle, started_at: datetime, control: RunControl) -> Job:
        """Pick up a job whose container outlived a worker restart, as if nothing had happened."""
        self._log("job_reattached", job.id)
        capture = self._capture(job, control)
        try:
            running = job if job.state == JobState.RUNNING else await self._store.mark_running(job.id, started_at)
            return await self._supervise(running or job, handle, control, capture)
        except (HatchwayError, OSError) as exc:
            log.exception("re-attached job failed", extra=self._extra("job_engine_error", job.id))
            return await self._finish(job, Outcome(state=JobState.FAILED, reason=Reason.ENGINE_ERROR, message=str(exc)))
        finally:
            await self._clean_up(job.id, handle, capture)

    async def _stop_before_start(self, job: Job, control: RunControl) -> Job:
        if control.kill_reason == Reason.SHUTDOWN:
            # It never ran: keep it queued for the next start instead of failing it.
            requeued = await self._store.requeue_lost(job.id)
            self._log("job_requeued", job.id)
            return requeued or job
        return await self._finish(job, Outcome(state=JobState.KILLED, reason=Reason.CANCELLED))

    async def _supervise(self, job: Job, handle: Handle, control: RunControl, capture: OutputCapture) -> Job:
        limits = job.spec.limits
        started_at = job.started_at or utcnow()
        remaining_s = limits.timeout_s - (utcnow() - started_at).total_seconds()
        exited = asyncio.create_task(self._engine.wait(handle, capture), name=f"wait-{job.id}")
        stopped_for = await _first_of(exited, control, max(remaining_s, 0.0))
        if stopped_for is not None:
            grace_s = control.kill_grace_s if stopped_for in (Reason.KILLED, Reason.SHUTDOWN) else 0.0
            self._log("job_stopping", job.id, reason=stopped_for.value)
            await self._engine.stop(handle, grace_s)
        status = await exited
        outcome = self._outcome(status, stopped_for, capture)
        return await self._finish(job, outcome.model_copy(update={"resources": self._engine.resources(handle)}))

    @staticmethod
    def _outcome(status: ExitStatus, stopped_for: Reason | None, capture: OutputCapture) -> Outcome:
        truncated = capture.truncated
        state: JobState
        reason: Reason | None
        if stopped_for in (Reason.KILLED, Reason.SHUTDOWN):
            state, reason = JobState.KILLED, stopped_for
        elif stopped_for is not None:
            state, reason = JobState.FAILED, stopped_for
        elif truncated[Stream.STDOUT] or truncated[Stream.STDERR]:
            state, reason = JobState.FAILED, Reason.OUTPUT_LIMIT
        elif status.oom_killed:
            state, reason = JobState.FAILED, Reason.MEMORY_LIMIT
        elif status.exit_code == 0:
            state, reason = JobState.SUCCEEDED, None
        else:
            state, reason = JobState.FAILED, Reason.EXIT_CODE
        return Outcome(
            state=state,
            reason=reason,
            exit_code=status.exit_code,
            stdout=capture.text(Stream.STDOUT),
            stderr=capture.text(Stream.STDERR),
            stdout_truncated=truncated[Stream.STDOUT],
            stderr_truncated=truncated[Stream.STDERR],
        )

    async def _finish(self, job: Job, outcome: Outcome) -> Job:
        finished = await self._store.finish(job.id, outcome, utcnow())
        self._log(
            "job_finished",
            job.id,
            state=outcome.state.value,
            reason=outcome.reason.value if outcome.reason else None,
            exit_code=outcome.exit_code,
        )
        if finished is None:  # someone else ended it first; theirs is the true record
            return await self._store.get(job.id) or job
        return finished

    def _capture(self, job: Job, control: RunControl) -> OutputCapture:
        capture = OutputCapture(
            self._output_dir / job.id,
            cap_bytes=job.spec.limits.output_bytes,
            loop=asyncio.get_running_loop(),
            on_limit=control.output_limit.set,
        )
        control.capture = capture
        return capture

    def _prepare_workspace(self, job: Job) -> Path:
        workspace = self._work_dir / job.id
        shutil.rmtree(workspace, ignore_errors=True)
        workspace.mkdir(parents=True)
        for relative, text in job.spec.files.items():
            target = workspace / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        self._hand_over(workspace)
        return workspace

    def _hand_over(self, workspace: Path) -> None:
        """Make the workspace writable by the non-root user the job runs as."""
        for path in [workspace, *workspace.rglob("*")]:
            if self._owner is not None:
                os.chown(path, *self._owner, follow_symlinks=False)
            else:
                path.chmod(0o777 if path.is_dir() else 0o666)

    async def _clean_up(self, job_id: str, handle: Handle | None, capture: OutputCapture) -> None:
        """Remove what the job used; waiters wake only now, so an ended job is also a cleaned-up one."""
        capture.finish()
        if handle is not None:
            with contextlib.suppress(EngineError):
                await self._engine.remove(handle)
        shutil.rmtree(self._work_dir / job_id, ignore_errors=True)
        self._signals.notify(job_id)

    def _log(self, event: str, job_id: str, **fields: object) -> None:
        log.info(event.replace("_", " "), extra={**self._extra(event, job_id), **fields})

    def _extra(self, event: str, job_id: str) -> dict[str, object]:
        return {"event": event, "job_id": job_id, "worker_id": self._worker_id}


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


def _numeric_owner(user: str) -> tuple[int, int] | None:
    uid, _, gid = user.partition(":")
    if uid.isdigit() and (gid.isdigit() or not gid):
        return int(uid), int(gid or uid)
    return None
