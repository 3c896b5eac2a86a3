"""/jobs: create, get, list, kill, logs."""

from __future__ import annotations

import asyncio
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import FileResponse, StreamingResponse

from hatchway.api.deps import ArtifactsDep, JobsDep, OnSubmitDep, PeersDep, SettingsDep
from hatchway.api.schemas import ArtifactInfo, JobList
from hatchway.errors import InvalidRequest
from hatchway.fields import label_key_ok
from hatchway.jobs.logs import job_logs
from hatchway.models import PROGRAM_STREAMS, Job, JobKind, JobRequest, JobState, Stream
from hatchway.output.log_filter import MAX_PATTERN_CHARS, log_filter
from hatchway.settings import Settings
from hatchway.store.base import JobQuery

router = APIRouter(prefix="/jobs", tags=["jobs"])


WaitFlag = Annotated[bool, Query(description="Answer once it has ended.")]
WaitSeconds = Annotated[float | None, Query(gt=0, description="Longest wait with `wait=true`.")]


def wait_bound(settings: Settings, wait_s: float | None) -> float:
    """How long a `wait=true` request waits: `wait_s`, at most the configured `max_wait_s`."""
    if wait_s is not None and wait_s > settings.max_wait_s:
        raise InvalidRequest(f"wait_s may be at most {settings.max_wait_s}")
    return wait_s or settings.max_wait_s


@router.post(
    "",
    status_code=201,
    response_model=Job,
    responses={200: {"model": Job, "description": "A job with this `id` existed already; it is returned."}},
)
async def create_job(
    body: JobRequest,
    response: Response,
    jobs: JobsDep,
    settings: SettingsDep,
    *,
    on_submit: OnSubmitDep,
    wait: WaitFlag = False,
    wait_s: WaitSeconds = None,
) -> Job:
    """Queue a job. Resubmitting an `id` returns the existing job (200) instead of creating another."""
    timeout_s = wait_bound(settings, wait_s)
    job, created = await jobs.submit(body)
    if created:
        on_submit()
    else:
        response.status_code = 200
    if wait:
        job = await jobs.wait_final(job.id, timeout_s)
    return job


@router.get("", response_model=JobList)
async def list_jobs(
    jobs: JobsDep,
    *,
    state: JobState | None = None,
    kind: JobKind | None = None,
    label: Annotated[list[str], Query(description="Filter `key:value`; repeat to AND them.")] = [],  # noqa: B006
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: str | None = None,
) -> JobList:
    """Jobs, newest first, filtered by state, kind (job or grade) and labels."""
    labels: dict[str, str] = {}
    for item in label:
        key, sep, value = item.partition(":")
        if not sep or not label_key_ok(key):
            raise InvalidRequest(f"label filter {item!r} must look like key:value")
        labels[key] = value
    try:
        page = await jobs.find(JobQuery(state=state, kind=kind, labels=labels, limit=limit, cursor=cursor))
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from exc
    return JobList(jobs=page.jobs, next_cursor=page.next_cursor)


@router.get("/{job_id}", response_model=Job)
async def get_job(job_id: str, jobs: JobsDep) -> Job:
    """One job, with live figures while it runs."""
    return await jobs.get(job_id)


@router.delete("/{job_id}", response_model=Job)
async def kill_job(
    job_id: str,
    jobs: JobsDep,
    settings: SettingsDep,
    grace_s: Annotated[float | None, Query(ge=0, le=3600, description="SIGTERM-to-SIGKILL delay.")] = None,
) -> Job:
    """Cancel a queued job, or stop a running one and answer once it has ended. 409 if it had ended."""
    return await jobs.kill(job_id, settings.kill_grace_s if grace_s is None else grace_s)


@router.get("/{job_id}/logs", response_class=StreamingResponse, responses={200: {"content": {"text/plain": {}}}})
async def job_output(
    job_id: str,
    jobs: JobsDep,
    peers: PeersDep,
    request: Request,
    *,
    stream: Literal["stdout", "stderr", "both", "build"] = "both",
    tail: Annotated[int | None, Query(ge=0, description="Only the last N lines of each stream.")] = None,
    follow: Annotated[bool, Query(description="Stream new output live until the job ends.")] = False,
    grep: Annotated[
        str | None,
        Query(description=f"Only lines matching this regular expression (RE2, at most {MAX_PATTERN_CHARS} chars)."),
    ] = None,
    since: Annotated[
        str | None, Query(description="Only lines written at or after: RFC 3339, unix seconds, or `10m` ago.")
    ] = None,
    until: Annotated[str | None, Query(description="Only lines written at or before (as `since`).")] = None,
) -> StreamingResponse:
    """The job's output as text; with `follow=true`, streamed live until the job ends. `grep`, `since` and
    `until` keep whole lines (then `tail` counts those), live too."""
    try:
        only = log_filter(grep, since, until)
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from exc
    job = await jobs.get(job_id)  # a 404 now, not halfway through a stream
    holder = None if job.state.is_final else peers.holder(job, request)
    if holder is not None:  # its live output is on the worker that runs it
        return await peers.forward(request, holder)
    streams = list(PROGRAM_STREAMS) if stream == "both" else [Stream(stream)]
    chunks = job_logs(jobs, job_id, streams, tail=tail, follow=follow, only=only)
    return StreamingResponse(chunks, media_type="text/plain; charset=utf-8")


@router.get("/{job_id}/artifacts", response_model=list[ArtifactInfo])
async def list_artifacts(
    job_id: str, jobs: JobsDep, artifacts: ArtifactsDep, peers: PeersDep, request: Request
) -> list[ArtifactInfo] | Response:
    """The files the job left under out/ in its working directory."""
    holder = peers.holder(await jobs.get(job_id), request)
    if holder is not None:  # kept where it ran
        return await peers.forward(request, holder)
    found = await asyncio.to_thread(artifacts.listing, job_id)
    return [ArtifactInfo(path=item.path, size=item.size) for item in found]


@router.get("/{job_id}/artifacts/{path:path}", response_class=FileResponse)
async def get_artifact(
    job_id: str, path: str, request: Request, *, jobs: JobsDep, artifacts: ArtifactsDep, peers: PeersDep
) -> Response:
    """One artifact's bytes."""
    holder = peers.holder(await jobs.get(job_id), request)
    if holder is not None:
        return await peers.forward(request, holder)
    return FileResponse(artifacts.path(job_id, path), media_type="application/octet-stream")
