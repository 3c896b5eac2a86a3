"""The grader pool's API on hatchway: its clients' POST /grade and /submit, GET /submit/{id}, POST /grade/batch,
the `stats`, `workers` and `config` of GET /workers/status, and, with `grader_pool_worker`, its workers' POST
/grade (the orchestrator's call, answered with the result).

POST /grade serves two dialects on one path. `PoolDialect`, an ASGI middleware inside the token check, reads a
POST /grade body and sends one in the pool's dialect (`grader_pool.is_pool_body`: it holds `testCases`,
`metadata` or `userId`) to this module's route instead; hatchway's own bodies reach api/grades.py untouched.
The translation itself is in grading/grader_pool.py.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Body, FastAPI, Response
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hatchway.api.deps import GradesDep, OnSubmitDep, SettingsDep
from hatchway.api.jobs import WaitFlag, WaitSeconds, wait_bound
from hatchway.api.schemas import PoolConfig, PoolStats, PoolWorker
from hatchway.errors import RequestError
from hatchway.grading import grader_pool
from hatchway.grading.service import GradeService
from hatchway.settings import Settings

router = APIRouter(tags=["grader pool"])

POOL_GRADE_PATH = "/grader-pool/grade"
"""Where PoolDialect sends a pool's POST /grade (not in the OpenAPI document: its clients call POST /grade)."""

PoolBody = Annotated[dict[str, Any], Body(description="The grader pool's submission (docs/compatibility.md).")]


class PoolDialect:
    """Sends a POST /grade whose JSON body is in the pool's dialect to POOL_GRADE_PATH; anything else, and every
    other request, passes unchanged. The body is read once and handed on as it came."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"].rstrip("/") != "/grade":
            await self.app(scope, receive, send)
            return
        received: list[Message] = []
        body = b""
        while True:
            message = await receive()
            received.append(message)
            if message["type"] != "http.request":
                break
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None  # hatchway's route says what is wrong with it
        if grader_pool.is_pool_body(parsed):
            scope = {**scope, "path": POOL_GRADE_PATH, "raw_path": POOL_GRADE_PATH.encode()}

        async def replay() -> Message:
            return received.pop(0) if received else await receive()

        await self.app(scope, replay, send)


def install_grader_pool(app: FastAPI) -> None:
    """Serve the pool's routes, and send its POST /grade bodies to them. Call before the token check is
    installed, so that the check (outside) sees the path the client asked for."""
    app.include_router(router)
    app.add_middleware(PoolDialect)


@router.post(POOL_GRADE_PATH, include_in_schema=False)
async def pool_grade(
    body: PoolBody,
    grades: GradesDep,
    settings: SettingsDep,
    *,
    on_submit: OnSubmitDep,
    wait: WaitFlag = False,
    wait_s: WaitSeconds = None,
) -> JSONResponse:
    """POST /grade in the pool's dialect: a client's submission, or with `grader_pool_worker` the orchestrator's
    call to a worker, answered once graded."""
    if settings.grader_pool_worker:
        return await _as_worker(body, grades, settings, on_submit)
    return await submit(body, grades, settings, on_submit=on_submit, wait=wait, wait_s=wait_s)


@router.post("/submit", status_code=201)
async def submit(
    body: PoolBody,
    grades: GradesDep,
    settings: SettingsDep,
    *,
    on_submit: OnSubmitDep,
    wait: WaitFlag = False,
    wait_s: WaitSeconds = None,
) -> JSONResponse:
    """Queue a grading sent as the grader pool's clients send it; answers `jobId`, `status`, `message`,
    `submittedAt` beside hatchway's fields (see docs/compatibility.md, "The grader worker pool")."""
    timeout_s = wait_bound(settings, wait_s)
    request = grader_pool.to_grade_request(grader_pool.parse_submission(body), settings.grade_max_limits)
    result, created = await grades.submit(request, dialect=grader_pool.DIALECT)
    if created:
        on_submit()
    if wait:
        await grades.wait_final(result.id, timeout_s)
    job = await grades.job(result.id)
    message = None if job.state.is_final else grader_pool.SUBMITTED
    return JSONResponse(grader_pool.answer(job, message=message), status_code=201 if created else 200)


@router.get("/submit/{job_id}")
async def get_submission(job_id: str, grades: GradesDep) -> JSONResponse:
    """A grading as the grader pool's clients read it (also GET /grade/{id} for one submitted in its dialect)."""
    return JSONResponse(grader_pool.answer(await grades.job(job_id)))


@router.post("/grade/batch")
async def grade_batch(body: PoolBody, grades: GradesDep, settings: SettingsDep, on_submit: OnSubmitDep) -> Response:
    """Queue a batch (a tournament's submissions): each is a grading `{batchJobId}_{id}`, labelled `batch` and
    `tournament`. Answers at once, with what was queued and what was refused and why."""
    batch = grader_pool.parse_batch(body)
    batch_id = f"batch_{int(time.time() * 1000)}_{uuid.uuid4().hex[:8]}"
    labels = {"batch": batch_id}
    if batch.tournament_id is not None:
        labels["tournament"] = str(batch.tournament_id)
    jobs: list[dict[str, Any]] = []
    for position, item in enumerate(batch.submissions, start=1):
        own = item.get("metadata")
        merged = {**item, "metadata": {**batch.metadata, **(own if isinstance(own, dict) else {})}}
        job_id = f"{batch_id}_{item.get('id', position)}"
        try:
            submission = grader_pool.parse_submission(merged)
            request = grader_pool.to_grade_request(submission, settings.grade_max_limits, job_id=job_id, labels=labels)
            result, created = await grades.submit(request, dialect=grader_pool.DIALECT)
        except RequestError as exc:
            jobs.append({"jobId": None, "id": item.get("id"), "status": "failed", "error": str(exc)})
            continue
        if created:
            on_submit()
        jobs.append({"jobId": result.id, "id": item.get("id"), "status": "queued", "error": None})
    successful = sum(job["status"] == "queued" for job in jobs)
    return JSONResponse(
        {
            "batchJobId": batch_id,
            "total": len(jobs),
            "successful": successful,
            "failed": len(jobs) - successful,
            "status": "processing",
            "metadata": batch.metadata,
            "jobs": jobs,
        }
    )


async def _as_worker(body: dict[str, Any], grades: GradeService, settings: Settings, on_submit: Any) -> JSONResponse:
    """The pool's worker: grade, and answer with the result (200, `{error, status: failed}` for what it cannot
    grade, as its worker answers)."""
    try:
        request = grader_pool.to_grade_request(grader_pool.parse_submission(body), settings.grade_max_limits)
        result, created = await grades.submit(request, dialect=grader_pool.DIALECT)
    except RequestError as exc:
        return JSONResponse(grader_pool.worker_refusal(str(exc)))
    if created:
        on_submit()
    await grades.wait_final(result.id, settings.max_wait_s)
    return JSONResponse(grader_pool.worker_answer(await grades.job(result.id)))


@dataclass(frozen=True)
class PoolMember:
    """A worker whose slots the pool's answer lists: each slot is one of the pool's workers."""

    worker_id: str
    slots: int
    busy: int
    endpoint: str | None


def pool_view(*, members: list[PoolMember], capabilities: list[str], settings: Settings) -> dict[str, Any]:
    """The pool's `stats`, `workers` and `config` for GET /workers/status: each slot of these workers is one of its
    workers, of type `grader_rust` (the type its orchestrator sends every language hatchway runs to), reached at
    its worker's address."""
    workers: list[PoolWorker] = []
    for member in members:
        busy = min(member.busy, member.slots)
        statuses = ["busy"] * busy + ["ready"] * (member.slots - busy)
        workers += [
            PoolWorker.model_validate(
                {
                    "id": f"{member.worker_id}/{slot}",
                    "type": "grader_rust",
                    "status": status,
                    "endpoint": member.endpoint,
                    "createdAt": None,
                    "lastUsedAt": None,
                    "capabilities": capabilities,
                }
            )
            for slot, status in enumerate(statuses, start=1)
        ]
    statuses = [worker.status for worker in workers]
    return {
        "stats": PoolStats.model_validate(
            {
                "total": len(workers),
                "byType": {"grader_rust": len(workers)},
                "byStatus": {status: statuses.count(status) for status in ("ready", "busy") if status in statuses},
            }
        ),
        "workers": workers,
        "config": PoolConfig.model_validate(
            {
                "maxWorkers": len(workers),
                "workerTimeout": settings.max_wait_s,
                "healthCheckInterval": None,
                "dockerImage": None,
                "firecrackerEnabled": False,
            }
        ),
    }
