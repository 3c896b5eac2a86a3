"""The worker-agent system's Job Protocol v1 on hatchway's own paths: `POST /jobs`, `GET /jobs/{job_id}` and
`DELETE /jobs/{job_id}`, at the root, where that system's masters post and poll (its dashboard hard-codes the
root paths of `/info` and `/health` too, so a prefix would not do).

How one path serves both APIs, without changing hatchway's for its own clients:
- `POST /jobs`: a body that is a job of the protocol (`agent_jobs.is_agent_job`: a key only its jobs have) is
  answered in the protocol's words (202, 400, 409); hatchway's own API refuses every such body, so nothing it
  accepted is taken from it. Any other body goes to hatchway's route untouched.
- A master's job is stored as a hatchway job of origin `agent`, its id `agent.<job_id>.<digest>`. `GET` and
  `DELETE /jobs/{job_id}` answer in the protocol's words when `job_id` is such a job's id at its master; any
  other id is hatchway's (hatchway's own clients, its dashboard and command line use hatchway ids, so they see
  hatchway's shape even for a master's jobs). An id neither knows gets 404 with both shapes' fields.
- The two never claim one id: a master's `job_id` that names a hatchway job gets 409, and so does a hatchway
  client's `id` that names a master's job.

This middleware sits inside the token check (`api/auth.py` goes by method and path: a master needs `submit` to
post and `admin` to cancel where tokens are configured) and answers itself: hatchway's exception handlers do not
see it, so it maps errors to answers here.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import unquote

from fastapi import FastAPI
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hatchway.api.agent_jobs import (
    AgentJob,
    Rejected,
    admit,
    agent_job_id,
    is_agent_job,
    protocol_state,
    record,
    rejection,
)
from hatchway.api.deps import ApiServices
from hatchway.api.errors import error_response
from hatchway.errors import JobAlreadyFinished, JobConflict, JobNotFound, ShuttingDown
from hatchway.jobs.service import job_not_found
from hatchway.models import Job, JobState
from hatchway.settings import AGENT_SOURCE

log = logging.getLogger(__name__)

_ONE_JOB = re.compile(rb"^/jobs/([^/]+)$")
# Worth parsing a body for: a key a protocol job has, or hatchway's `id` (checked against the master's ids).
_KEYS = (b'"protocol_version"', b'"job_id"', b'"task"', b'"runtime"', b'"id"')


class AgentProtocol:
    """ASGI middleware: the protocol's requests answered from the job service, every other request passed on."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        services: ApiServices,
        on_submit: Callable[[], None],
        routes: Mapping[str, BaseRoute],
    ) -> None:
        self._app = app
        self._jobs = services.jobs
        self._kill_grace_s = services.settings.kill_grace_s
        self._on_submit = on_submit
        self._routes = routes
        """Route templates by path, set on the requests answered here so that metrics count them by template."""
        self._kills: set[asyncio.Task[None]] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        method = scope["method"]
        if method == "POST" and scope["path"] == "/jobs":
            await self._post(scope, receive, send)
            return
        one = _ONE_JOB.match(scope.get("raw_path") or scope["path"].encode()) if method in ("GET", "DELETE") else None
        if one is not None:
            # From the raw path, so that a master's id holding a `/` (sent as %2F) is found too.
            job_id = unquote(one.group(1).decode("latin-1"))
            job = await self._job_of_master(job_id)
            if job is not None:
                answer = (200, record(job)) if method == "GET" else await self._cancel(job)
                await self._answer(scope, receive, send, "/jobs/{job_id}", answer)
                return
            if await self._jobs.state_of(job_id) is None:
                await self._not_found(scope, receive, send, job_id)
                return
        await self._app(scope, receive, send)

    async def _post(self, scope: Scope, receive: Receive, send: Send) -> None:
        body, complete = await _read_body(receive)
        if not complete:
            return  # the client went away while sending
        parsed = _parsed(body)
        if not isinstance(parsed, dict) or not is_agent_job(parsed):
            chosen = parsed.get("id") if isinstance(parsed, dict) else None
            if isinstance(chosen, str) and await self._jobs.state_of(agent_job_id(chosen)) is not None:
                conflict = JobConflict(
                    f"id {chosen!r} is a job a master posted in the worker-agent protocol "
                    f"(GET /jobs/{chosen} answers for it); choose another id"
                )
                self._route(scope, "/jobs")
                await error_response(conflict.status, conflict.code, str(conflict))(scope, receive, send)
                return
            await self._app(scope, _replaying(body, receive), send)
            return
        try:
            admitted = admit(parsed, self._jobs.policy, sent_as_json=_sent_as_json(scope))
            answer = await self._create(admitted)
        except Rejected as exc:
            answer = (exc.status, exc.answer())
        except ShuttingDown as exc:
            answer = (503, rejection(parsed.get("job_id"), "SHUTTING_DOWN", str(exc)))
        await self._answer(scope, receive, send, "/jobs", answer)

    async def _create(self, taken: AgentJob) -> tuple[int, dict[str, Any]]:
        exists = (
            409,
            rejection(taken.job_id, "JOB_ID_ALREADY_EXISTS", f"Job with id {taken.job_id} already exists"),
        )
        if await self._jobs.state_of(taken.job_id) is not None:  # a hatchway job answers at /jobs/{job_id}
            return exists
        try:
            job, created = await self._jobs.enqueue(
                taken.hatchway_id, taken.spec, taken.warnings, origin=AGENT_SOURCE, external_id=taken.job_id
            )
        except JobConflict:
            return exists
        if not created:
            return exists
        self._on_submit()
        return 202, {"accepted": True, "job_id": taken.job_id, "state": protocol_state(job.state)}

    async def _cancel(self, job: Job) -> tuple[int, dict[str, Any]]:
        """As the protocol's worker answers a `DELETE`; unlike it, a running job is stopped too (SIGTERM, then
        SIGKILL after `kill_grace_s`), after the answer, as the protocol's document describes it."""
        job_id = job.external_id or job.id
        if job.state.is_final:
            return 200, {"job_id": job_id, "state": protocol_state(job.state), "note": "Job has already ended"}
        if job.state is JobState.QUEUED:
            try:
                ended = await self._jobs.kill(job.id, self._kill_grace_s)  # at once, unless it just started
            except JobAlreadyFinished:
                ended = await self._jobs.get(job.id)
            return 200, {"job_id": job_id, "state": protocol_state(ended.state), "note": "Job cancelled before start"}
        task = asyncio.create_task(self._kill(job.id), name=f"agent-cancel-{job.id}")
        self._kills.add(task)
        task.add_done_callback(self._kills.discard)
        return 202, {"job_id": job_id, "state": protocol_state(job.state), "note": "Cancellation requested"}

    async def _kill(self, job_id: str) -> None:
        try:
            await self._jobs.kill(job_id, self._kill_grace_s)
        except (JobAlreadyFinished, JobNotFound):
            pass  # it ended on its own meanwhile
        except Exception:
            log.exception("cancelling a job failed", extra={"event": "agent_cancel_failed", "job_id": job_id})

    async def _job_of_master(self, job_id: str) -> Job | None:
        """The job a master posted as `job_id`, if there is one."""
        try:
            job = await self._jobs.get(agent_job_id(job_id))
        except JobNotFound:
            return None
        return job if job.origin == AGENT_SOURCE else None

    async def _not_found(self, scope: Scope, receive: Receive, send: Send, job_id: str) -> None:
        """hatchway's 404 with the protocol's `{job_id, state: "not_found"}` beside, for either kind of client."""
        missing = job_not_found(job_id)
        body = {"error": {"code": missing.code, "message": str(missing)}, "job_id": job_id, "state": "not_found"}
        await self._answer(scope, receive, send, "/jobs/{job_id}", (missing.status, body))

    async def _answer(
        self, scope: Scope, receive: Receive, send: Send, template: str, answer: tuple[int, dict[str, Any]]
    ) -> None:
        self._route(scope, template)
        status, body = answer
        await JSONResponse(body, status_code=status)(scope, receive, send)

    def _route(self, scope: Scope, template: str) -> None:
        route = self._routes.get(template)
        if route is not None:
            scope["route"] = route


def _parsed(body: bytes) -> Any:
    """The body's JSON where it may be a protocol job or carry hatchway's `id`; None otherwise (not JSON, or not
    worth parsing: hatchway's route reads it as ever)."""
    if not any(key in body for key in _KEYS):
        return None
    try:
        return json.loads(body, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        return None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # NaN and Infinity, which Python's parser takes and JSON has not


def _sent_as_json(scope: Scope) -> bool:
    for name, value in scope.get("headers", ()):
        if name == b"content-type":
            return bytes(value).split(b";")[0].strip().lower() == b"application/json"
    return False


async def _read_body(receive: Receive) -> tuple[bytes, bool]:
    """The whole request body, and False if the client disconnected before the end of it."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"", False
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks), True


def _replaying(body: bytes, receive: Receive) -> Receive:
    """A `receive` that hands the app the body read already, then whatever comes next (a disconnect)."""
    pending = True

    async def replay() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def install_agent_protocol(app: FastAPI, services: ApiServices, on_submit: Callable[[], None]) -> None:
    """Serve the protocol beside hatchway's routes (already included in `app`), inside middleware added later."""
    templates = ("/jobs", "/jobs/{job_id}")
    routes = {path: route for route in app.routes if (path := getattr(route, "path", None)) in templates}
    app.add_middleware(AgentProtocol, services=services, on_submit=on_submit, routes=routes)
