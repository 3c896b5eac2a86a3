"""`hatchway run`: one job on the local engine, no server; its output streams here and its exit code is ours."""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from pathlib import Path

from hatchway.bootstrap import build_worker
from hatchway.logs import job_logs
from hatchway.models import Job, JobRequest, Reason, Stream
from hatchway.settings import Settings
from hatchway.store.memory import MemoryStore
from hatchway.worker import Worker

EXIT_TIMEOUT = 124  # as timeout(1)
EXIT_NOT_RUN = 125  # as docker run, when the container could not run


async def run_locally(settings: Settings, request: JobRequest) -> int:
    """Run `request` to its end with an in-memory store and return the exit code to leave with."""
    with tempfile.TemporaryDirectory(prefix="hatchway-run-") as data_dir:
        local = settings.model_copy(
            update={
                "worker_id": f"{settings.worker_id}-run-{os.getpid()}",
                "data_dir": Path(data_dir),
                "max_concurrent_jobs": 1,
                # One job, then gone: a pool would only start containers nobody uses.
                "pools": [],
                "pool_warm_total": 0,
            }
        )
        worker = build_worker(local, store=MemoryStore())
        await worker.start()
        try:
            job, _ = await worker.jobs.submit(request)
            await asyncio.gather(
                _copy(worker, job.id, Stream.STDOUT, sys.stdout),
                _copy(worker, job.id, Stream.STDERR, sys.stderr),
            )
            final = await worker.jobs.wait_final(job.id, local.max_wait_s)
        except asyncio.CancelledError:
            final = await worker.jobs.get(job.id)
        finally:
            await worker.shutdown()
    return _exit_code(final)


async def _copy(worker: Worker, job_id: str, stream: Stream, out: object) -> None:
    async for text in job_logs(worker, job_id, [stream], tail=None, follow=True):
        out.write(text)  # type: ignore[attr-defined]
        out.flush()  # type: ignore[attr-defined]


def _exit_code(job: Job) -> int:
    if job.reason not in (None, Reason.EXIT_CODE):
        print(
            f"hatchway: job {job.state.value}: {job.reason.value}" + (f": {job.message}" if job.message else ""),
            file=sys.stderr,
        )
    if job.reason == Reason.TIMEOUT:
        return EXIT_TIMEOUT
    if job.exit_code is not None and job.reason != Reason.OUTPUT_LIMIT:
        return job.exit_code
    return EXIT_NOT_RUN
