"""`kind: tasks`: the queue-pull worker's queue service.

`GET {url}/tasks/next` hands out `{"eval_id", "code", "engine"}` (or 204, 404 or an empty body: nothing to do);
the code runs as a Python program in the source's profile image, on `engine` (docker or gvisor). Its result goes
to `POST {url}/tasks/{eval_id}/complete` (it ran: any exit code) or `/fail` (it could not run to its end: a
timeout, a limit, the engine, a malformed task). The result is the job's stored final state, sent until the
master answers 2xx: exactly one report per item, across retries and restarts.
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import datetime
from typing import Any

import httpx

from hatchway.errors import HatchwayError, RuntimeUnavailable
from hatchway.models import Job, JobRequest, JobState, Reason, utcnow
from hatchway.service import JobService
from hatchway.settings import SourceConfig
from hatchway.sources.base import Backoff, SourceStatus, pause

log = logging.getLogger(__name__)

_GONE = (404, 409, 410)  # the master does not know the item, or has its result: nothing more to send
_RESCAN_S = 5.0


class MasterError(Exception):
    """The master could not be reached, or answered with an error (retried with a backoff)."""


class TasksSource:
    """Pulls tasks from a queue service and reports each one's result exactly once."""

    kind = "tasks"

    def __init__(self, config: SourceConfig, *, worker_id: str, image: str) -> None:
        self.name = config.name
        self._config = config
        self._worker_id = worker_id
        self._image = image
        self._headers = {} if config.api_key is None else {"X-API-Key": config.api_key.get_secret_value()}
        self._claim_backoff = Backoff(f"asking {config.name} for work")
        self._report_backoff = Backoff(f"reporting to {config.name}")
        self._ended = asyncio.Event()
        self._done_claiming = asyncio.Event()
        self._last_poll_at: datetime | None = None
        self._claims = self._sent = self._errors = self._pending = 0
        self._last_error: str | None = None
        self._watchers: set[asyncio.Task[None]] = set()

    def status(self) -> SourceStatus:
        backoff = max(self._claim_backoff.delay_s, self._report_backoff.delay_s)
        return SourceStatus(
            name=self.name,
            kind=self.kind,
            url=self._config.url,
            last_poll_at=self._last_poll_at,
            claims=self._claims,
            reports_sent=self._sent,
            reports_pending=self._pending,
            errors=self._errors,
            backoff_s=backoff,
            last_error=self._last_error,
        )

    async def run(self, jobs: JobService, stop: asyncio.Event) -> None:
        async with httpx.AsyncClient(base_url=self._config.url, timeout=self._config.request_timeout_s) as http:
            reporter = asyncio.create_task(self._report_loop(jobs, http), name=f"source-{self.name}-reports")
            try:
                await self._claim_loop(jobs, http, stop)
                self._done_claiming.set()
                await reporter
            finally:
                reporter.cancel()
                for watcher in self._watchers:
                    watcher.cancel()

    # Claiming

    async def _claim_loop(self, jobs: JobService, http: httpx.AsyncClient, stop: asyncio.Event) -> None:
        while not stop.is_set():
            got_work = False
            async with jobs.slot(stop) as free:
                if not free:
                    return
                try:
                    task = await self._next(http)
                except MasterError as exc:
                    self._note_error(str(exc))
                    wait_s = self._claim_backoff.failed(str(exc), source=self.name)
                else:
                    self._claim_backoff.succeeded()
                    wait_s = 0.0
                    if task is not None:
                        got_work = True
                        await self._take(jobs, task)
            if wait_s:
                await pause(stop, wait_s)
            elif not got_work:
                await pause(stop, self._config.poll_interval_s)

    async def _next(self, http: httpx.AsyncClient) -> dict[str, Any] | None:
        self._last_poll_at = utcnow()
        try:
            answer = await http.get("/tasks/next", headers=self._headers)
        except httpx.HTTPError as exc:
            raise MasterError(f"{self._config.url} cannot be reached: {exc!r}") from exc
        if answer.status_code in (204, 404) or (answer.status_code == 200 and not answer.content.strip()):
            return None
        if answer.status_code in (401, 403):
            raise MasterError(f"{self._config.url} refused the API key ({answer.status_code}): check api_key")
        if answer.status_code != 200:
            raise MasterError(f"{self._config.url} answered {answer.status_code} to GET /tasks/next")
        try:
            task = answer.json()
        except json.JSONDecodeError:
            task = None
        if not isinstance(task, dict):
            self._note_error(f"{self._config.url} handed out something that is not a JSON object")
            return None
        return task

    async def _take(self, jobs: JobService, task: dict[str, Any]) -> None:
        eval_id, code, engine = task.get("eval_id"), task.get("code"), task.get("engine") or self._config.runtime
        if not isinstance(eval_id, str | int) or not str(eval_id):
            self._note_error(f"a task without an eval_id cannot be reported: {str(task)[:200]}")
            return
        eval_id = str(eval_id)
        self._claims += 1
        problem = None
        if not isinstance(code, str):
            problem = "the task has no code (a string)"
        elif engine not in ("docker", "gvisor"):
            problem = f"the task asks for the unknown engine {engine!r} (docker or gvisor)"
        if problem is not None or not isinstance(code, str):
            await self._refuse(jobs, eval_id, problem or "the task has no code")
            return
        try:
            job = await self._submit(jobs, eval_id, code, engine)
        except HatchwayError as exc:  # not allowed here, gVisor unavailable, too large ...
            await self._refuse(jobs, eval_id, str(exc))
            return
        watcher = asyncio.create_task(self._watch(jobs, job), name=f"source-{self.name}-watch")
        self._watchers.add(watcher)
        watcher.add_done_callback(self._watchers.discard)

    def _request(self, eval_id: str, code: str, runtime: str) -> JobRequest:
        return JobRequest.model_validate(
            {
                "image": self._image,
                "command": ["python3", "main.py"],
                "files": {"main.py": code},
                "runtime": runtime,
                "limits": self._config.limits.model_dump(exclude_none=True),
                "labels": {"source": self.name, "external_id": eval_id[:200]},
            }
        )

    async def _submit(self, jobs: JobService, eval_id: str, code: str, engine: str) -> Job:
        def request(runtime: str) -> JobRequest:
            return self._request(eval_id, code, runtime)

        try:
            job, _ = await jobs.submit(request(engine), origin=self.name, external_id=eval_id)
        except RuntimeUnavailable:
            if engine != "gvisor" or not self._config.gvisor_fallback:
                raise
            log.warning(
                "gVisor does not work here; task %s runs on docker", eval_id, extra={"event": "source_fallback"}
            )
            job, _ = await jobs.submit(request("docker"), origin=self.name, external_id=eval_id)
        return job

    async def _watch(self, jobs: JobService, job: Job) -> None:
        while not (await jobs.wait_final(job.id, 3600)).state.is_final:
            pass
        self._ended.set()

    async def _refuse(self, jobs: JobService, eval_id: str, error: str) -> None:
        """Keep the item as a refused job: its `fail` report is stored and sent like any other."""
        log.warning("task %s refused: %s", eval_id, error, extra={"event": "source_item_refused", "source": self.name})
        await jobs.refuse(self.name, eval_id, self._request(eval_id, "", self._config.runtime), error)
        self._ended.set()

    # Reporting

    async def _report_loop(self, jobs: JobService, http: httpx.AsyncClient) -> None:
        while True:
            self._ended.clear()
            pending = await jobs.unreported(self.name)
            self._pending = len(pending)
            failed = False
            for job in pending:
                if not await self._send(http, job.external_id or "", _report_of(job, self._worker_id)):
                    failed = True
                    break
                await jobs.mark_reported(job.id)
                self._sent += 1
                self._pending -= 1
            if self._done_claiming.is_set() and not self._pending and not self._watchers:
                return
            wait_s = self._report_backoff.delay_s if failed else _RESCAN_S
            await pause(None, wait_s, wake=None if failed else self._ended)

    async def _send(self, http: httpx.AsyncClient, eval_id: str, report: tuple[str, dict[str, Any]]) -> bool:
        """POST one report; True once the master has it."""
        verb, body = report
        path = f"/tasks/{eval_id}/{verb}"
        try:
            answer = await http.post(path, json=body, headers=self._headers)
        except httpx.HTTPError as exc:
            self._note_error(f"{self._config.url} cannot be reached: {exc!r}")
            self._report_backoff.failed(self._last_error or "", source=self.name)
            return False
        if answer.is_success or answer.status_code in _GONE:
            if not answer.is_success:
                log.warning(
                    "the master answered %s to %s; the report is dropped",
                    answer.status_code,
                    path,
                    extra={"event": "source_report_dropped", "source": self.name},
                )
            self._report_backoff.succeeded()
            return True
        self._note_error(f"{self._config.url} answered {answer.status_code} to POST {path}")
        self._report_backoff.failed(self._last_error or "", source=self.name)
        return False

    def _note_error(self, error: str) -> None:
        self._errors += 1
        self._last_error = error


def _report_of(job: Job, worker_id: str) -> tuple[str, dict[str, Any]]:
    """What the master is told of a job: `complete` if its program ran to its end (any exit code), else `fail`."""
    eval_id = job.external_id or ""
    if job.state == JobState.SUCCEEDED or job.reason == Reason.EXIT_CODE:
        return "complete", {
            "eval_id": eval_id,
            "output": job.stdout,
            "stderr": job.stderr,
            "exit_code": job.exit_code,
            "duration_s": job.duration_s,
            "engine": job.engine,
            "worker_id": worker_id,
        }
    reason = job.reason.value if job.reason is not None else job.state.value
    return "fail", {
        "eval_id": eval_id,
        "error": job.message or f"the job ended {job.state.value}: {reason}",
        "reason": reason,
        "output": job.stdout,
        "worker_id": worker_id,
    }
