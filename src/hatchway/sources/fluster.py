"""Fluster's `WorkerService` on top of hatchway's job service (issue 19; docs/fluster-plan.md, "The worker"): the
dialect of the cluster controller's dispatch and of its clients' calls.

RunJob makes a hatchway job of origin `fluster` whose external id names the controller's job and attempt
(`fluster_jobs.external_id`): a retried attempt is a new job, the same attempt sent twice is one job, answered
with its state. It answers with the job queued, once its bundle is fetched and its pyproject.toml read (the real
worker answers before the fetch); the job then runs as any hatchway job (queued, prepared, run, its output kept),
with the runner (`hatchway.fluster.runner`), in `fluster.base_image` or in an image built on it with what the
bundle's pyproject.toml declares and pip_packages (`fluster_environment`). A request hatchway cannot run (packages
without the build network, a bundle that cannot be had, limits past this worker's) becomes a job that failed
saying why, so the controller hears FAILED instead of redispatching forever.

The other methods read those jobs: the latest attempt of a Fluster job id is the one they mean (the controller's
KillJob and GetJobStatus name no attempt). Errors are the real worker's: `not_found` for an unknown job,
`failed_precondition` to kill an ended one, and `internal` with "Error <doing what>: <why>" for the unexpected.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

from google.protobuf.message import Message

from hatchway.bundles import BundleCache, read_member
from hatchway.errors import (
    ArtifactNotFound,
    BadBundle,
    InputTooLarge,
    InvalidRequest,
    JobAlreadyFinished,
    JobNotFound,
    LimitTooHigh,
    NotAllowed,
    RuntimeUnavailable,
    ShuttingDown,
)
from hatchway.fluster import methods
from hatchway.fluster.connect import Code, ConnectError, Method
from hatchway.fluster.proto import cluster_pb2 as pb
from hatchway.fluster.runner import RESULT_FILE
from hatchway.jobs.prepare import BundleLimits
from hatchway.jobs.service import JobService, source_job_id
from hatchway.models import JobState, JobSummary, Stream
from hatchway.output.artifacts import ArtifactStore
from hatchway.settings.fluster import FlusterConfig
from hatchway.sources.fluster_bundles import GsFetcher
from hatchway.sources.fluster_environment import MAX_PYPROJECT_BYTES, PYPROJECT
from hatchway.sources.fluster_jobs import (
    ATTEMPT_LABEL,
    JOB_LABEL,
    ORIGIN,
    WORKER_LABEL,
    external_id,
    fluster_error,
    fluster_exit_code,
    fluster_state,
)
from hatchway.sources.fluster_logs import entries, filtered, log_entries
from hatchway.sources.fluster_request import Refusal, job_request, needs_build_network
from hatchway.store.base import JobQuery

"""Every Fluster job of this worker has it (ListJobs and HealthCheck find them by it)."""
DEFAULT_TERM_TIMEOUT_MS = 5000
"""KillJob's `term_timeout_ms` of 0, as the real worker reads it."""
_PAGE = 500
_REFUSALS = (NotAllowed, LimitTooHigh, InputTooLarge, RuntimeUnavailable, InvalidRequest, BadBundle)

Handler = Callable[[Any], Awaitable[Message]]


def _ms(moment: Any) -> int:
    return 0 if moment is None else int(moment.timestamp() * 1000)


class FlusterWorker:
    """Answers WorkerService's six methods for the jobs of one worker (`worker_id`, as the controller knows it)."""

    def __init__(
        self,
        *,
        jobs: JobService,
        artifacts: ArtifactStore,
        config: FlusterConfig,
        worker_id: str,
        host_network: bool,
        bundles: BundleCache,
        bundle_limits: BundleLimits,
        gs: GsFetcher | None = None,
    ) -> None:
        self._jobs = jobs
        self._gs = gs
        self._bundles = bundles
        self._bundle_limits = bundle_limits
        self._artifacts = artifacts
        self._config = config
        self.worker_id = config.worker_id or worker_id
        self._host_network = host_network
        self._started = time.monotonic()
        self._handlers: dict[str, tuple[str, Handler]] = {
            methods.RUN_JOB.path: ("running job", self.run_job),
            methods.GET_JOB_STATUS.path: ("getting job status", self.get_job_status),
            methods.LIST_JOBS.path: ("listing jobs", self.list_jobs),
            methods.FETCH_LOGS.path: ("fetching logs", self.fetch_logs),
            methods.KILL_JOB.path: ("killing job", self.kill_job),
            methods.HEALTH_CHECK.path: ("health check", self.health_check),
        }

    async def handle(self, method: Method[Any, Any], request: Message) -> Message:
        """`method`'s answer to `request`; ConnectError for what the real worker answers with an error."""
        doing, handler = self._handlers[method.path]
        try:
            return await handler(request)
        except ConnectError:
            raise
        except ShuttingDown as exc:
            raise ConnectError(Code.UNAVAILABLE, str(exc)) from exc
        except Exception as exc:
            raise ConnectError(Code.INTERNAL, f"Error {doing}: {exc}") from exc

    # --- RunJob ---

    async def run_job(self, request: pb.Worker.RunJobRequest) -> pb.Worker.RunJobResponse:
        if not request.job_id:
            raise ConnectError(Code.INVALID_ARGUMENT, "job_id is required")
        external = external_id(request.job_id, request.attempt_id)
        known = await self._jobs.state_of(source_job_id(ORIGIN, external))
        if known is not None:  # the same attempt again: one job
            return pb.Worker.RunJobResponse(job_id=request.job_id, state=fluster_state(known))
        labels = {JOB_LABEL: request.job_id[:256], ATTEMPT_LABEL: str(request.attempt_id), WORKER_LABEL: self.worker_id}
        try:
            bundle_url = await self._bundle_url(request.bundle_gcs_path)
            bundle_sha256, pyproject = await self._declarations(bundle_url)
            job_req = job_request(
                request,
                config=self._config,
                worker_id=self.worker_id,
                host_network=self._host_network,
                bundle_url=bundle_url,
                bundle_sha256=bundle_sha256,
                pyproject=pyproject,
            )
            job_req = job_req.model_copy(update={"labels": {**job_req.labels, **labels}})
            admitted = self._jobs.policy.admit(job_req, source=ORIGIN)
            spec = admitted.spec
            if needs_build_network(job_req):  # job_request built it only with fluster.build_network on
                # The environment's image is built from its Dockerfile alone (fluster_environment), not the bundle.
                spec = spec.model_copy(update={"build_network": "host", "build_context": "files"})
            job, _ = await self._jobs.enqueue(
                source_job_id(ORIGIN, external), spec, admitted.warnings, origin=ORIGIN, external_id=external
            )
        except (Refusal, *_REFUSALS) as exc:
            job = await self._jobs.refuse(ORIGIN, external, str(exc), labels=labels, image=self._config.base_image)
        return pb.Worker.RunJobResponse(job_id=request.job_id, state=fluster_state(job.state))

    async def _bundle_url(self, path: str) -> str | None:
        """The URL hatchway fetches the bundle `path` from: itself, or for a gs:// path the local copy the
        operator's command made (the RunJob answer waits for that copy)."""
        if not path:
            return None
        if path.startswith(("file://", "http://", "https://")):
            return path
        if path.startswith("gs://"):
            if self._gs is None:
                raise Refusal(
                    f"bundle {path} is on Google Cloud Storage, and this worker has no fetcher for gs:// paths: "
                    "set fluster.gs_command, or send a file:// or http(s):// bundle"
                )
            return (await self._gs.fetch(path)).as_uri()
        raise Refusal(f"bundle {path!r} is neither file://, http(s):// nor gs://")

    async def _declarations(self, bundle_url: str | None) -> tuple[str | None, bytes | None]:
        """The bundle's sha256 and its pyproject.toml (None without one), which say what its environment needs.
        The bundle is fetched now, as the job's preparation would (which then finds it in the cache by that
        sha256, so the job runs the bundle that was read); a bundle that cannot be had fails the job now."""
        if bundle_url is None:
            return None, None
        self._jobs.policy.require_url(bundle_url, "bundle_url", source=ORIGIN)  # saying why, as admitting would
        fetched = await self._bundles.fetch(bundle_url, None, source=ORIGIN)
        limits = self._bundle_limits
        pyproject = await asyncio.to_thread(
            read_member,
            fetched.path,
            PYPROJECT,
            max_bytes=MAX_PYPROJECT_BYTES,
            max_total_bytes=limits.max_unpacked_bytes,
            max_files=limits.max_files,
        )
        return fetched.sha256, pyproject

    # --- reading jobs ---

    async def _attempts(self, job_id: str) -> list[JobSummary]:
        page = await self._jobs.find(JobQuery(labels={JOB_LABEL: job_id[:256], WORKER_LABEL: self.worker_id}))
        return [job for job in page.jobs if job.origin == ORIGIN]

    async def _latest(self, job_id: str) -> JobSummary:
        attempts = await self._attempts(job_id)
        if not attempts:
            raise ConnectError(Code.NOT_FOUND, f"Job {job_id} not found")
        return max(attempts, key=lambda job: int(job.labels.get(ATTEMPT_LABEL, "0")))

    async def get_job_status(self, request: pb.Worker.GetJobStatusRequest) -> pb.JobStatus:
        summary = await self._latest(request.job_id)
        try:
            job = await self._jobs.get(summary.id)  # live resource figures while it runs
        except JobNotFound as exc:
            raise ConnectError(Code.NOT_FOUND, f"Job {request.job_id} not found") from exc
        status = job_status(job)
        if request.include_result and job.state == JobState.SUCCEEDED:
            with contextlib.suppress(ArtifactNotFound):
                status.serialized_result = self._artifacts.path(job.id, RESULT_FILE).read_bytes()
        return status

    async def list_jobs(self, request: pb.Worker.ListJobsRequest) -> pb.Worker.ListJobsResponse:
        return pb.Worker.ListJobsResponse(jobs=[job_status(job) for job in await self._all()])

    async def _all(self, state: JobState | None = None) -> list[JobSummary]:
        found: list[JobSummary] = []
        cursor: str | None = None
        while True:
            query = JobQuery(state=state, labels={WORKER_LABEL: self.worker_id}, limit=_PAGE, cursor=cursor)
            page = await self._jobs.find(query)
            found += [job for job in page.jobs if job.origin == ORIGIN]
            if page.next_cursor is None:
                return found
            cursor = page.next_cursor

    async def fetch_logs(self, request: pb.Worker.FetchLogsRequest) -> pb.Worker.FetchLogsResponse:
        try:
            summary = await self._latest(request.job_id)
        except ConnectError:
            return pb.Worker.FetchLogsResponse()  # the real worker's answer for an unknown job: no lines
        job = await self._jobs.get(summary.id)
        capture = self._jobs.capture(job.id)
        if capture is not None and not job.state.is_final:
            texts = {stream: capture.text(stream) for stream in (Stream.STDOUT, Stream.STDERR)}
            texts[Stream.BUILD] = capture.text(Stream.BUILD)
            times = capture.times()
        else:
            texts = {Stream.STDOUT: job.stdout, Stream.STDERR: job.stderr, Stream.BUILD: job.build_output}
            times = await self._jobs.output_times(job.id) if job.state.is_final else {}
        found = entries(texts, times, _ms(job.started_at or job.created_at))
        try:
            kept = filtered(found, request.filter)
        except ValueError as exc:
            raise ConnectError(Code.INVALID_ARGUMENT, str(exc)) from exc
        return pb.Worker.FetchLogsResponse(logs=log_entries(kept))

    # --- KillJob, HealthCheck ---

    async def kill_job(self, request: pb.Worker.KillJobRequest) -> pb.Empty:
        summary = await self._latest(request.job_id)
        if summary.state.is_final:
            raise _already_completed(request.job_id, summary.state)
        grace_ms = request.term_timeout_ms or DEFAULT_TERM_TIMEOUT_MS
        try:
            await self._jobs.kill(summary.id, grace_ms / 1000)
        except JobAlreadyFinished as exc:
            state = await self._jobs.state_of(summary.id)
            raise _already_completed(request.job_id, state or summary.state) from exc
        return pb.Empty()

    async def health_check(self, request: pb.Empty) -> pb.Worker.HealthResponse:
        running = await self._all(JobState.RUNNING)
        return pb.Worker.HealthResponse(
            healthy=True,
            uptime_ms=int((time.monotonic() - self._started) * 1000),
            running_jobs=len(running),
        )


def _already_completed(job_id: str, state: JobState) -> ConnectError:
    name = pb.JobState.Name(fluster_state(state))
    return ConnectError(Code.FAILED_PRECONDITION, f"Job {job_id} already completed with state {name}")


def job_status(job: JobSummary) -> pb.JobStatus:
    """What GetJobStatus and ListJobs say of a job (the controller's own fields left unset)."""
    status = pb.JobStatus(
        job_id=job.labels.get(JOB_LABEL, job.id),
        state=fluster_state(job.state),
        current_attempt_id=int(job.labels.get(ATTEMPT_LABEL, "0")),
        status_message=job.message or job.state.value,
    )
    if job.started_at is not None:
        status.started_at_ms = _ms(job.started_at)
    if job.finished_at is not None:
        status.finished_at_ms = _ms(job.finished_at)
    exit_code = fluster_exit_code(job)
    if exit_code is not None:
        status.exit_code = exit_code
    if job.state in (JobState.FAILED, JobState.KILLED):
        status.error = fluster_error(job)
    for name, port in job.run.ports.items():
        status.ports[name] = port
    usage = job.resources
    mib = 1024 * 1024
    if usage.memory_bytes is not None:
        status.resource_usage.memory_mb = usage.memory_bytes // mib
    if usage.peak_memory_bytes is not None:
        status.resource_usage.memory_peak_mb = usage.peak_memory_bytes // mib
    if usage.pids is not None:
        status.resource_usage.process_count = usage.pids
    if job.run.image is not None:
        status.build_metrics.image_tag = job.run.image
        status.build_metrics.from_cache = bool(job.run.image_cached)
    return status
