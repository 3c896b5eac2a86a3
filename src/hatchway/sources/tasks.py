"""`kind: tasks`: the queue-pull worker's queue service.

`GET {url}/tasks/next` hands out `{"eval_id", "code", "engine"}` (or 204, 404 or an empty body: nothing to do);
the code runs as a Python program in the source's profile image, on `engine` (docker or gvisor). Its result goes
to `POST {url}/tasks/{eval_id}/complete` (it ran: any exit code) or `/fail` (it could not run to its end: a
timeout, a limit, the engine, a malformed task). Claiming and reporting are `PulledSource`'s.
"""

from __future__ import annotations

import logging
from typing import Any

from hatchway.errors import RuntimeUnavailable
from hatchway.jobs.service import JobService
from hatchway.models import Job, JobRequest, JobState, Reason
from hatchway.settings import SourceConfig
from hatchway.sources.pulled import ItemRefused, PulledSource, Report

log = logging.getLogger(__name__)


class TasksSource(PulledSource):
    """Pulls tasks from a queue service and reports each one's result exactly once."""

    kind = "tasks"
    claim_method = "GET"
    claim_path = "/tasks/next"
    item_name = "task"

    def __init__(self, config: SourceConfig, *, worker_id: str, image: str) -> None:
        super().__init__(config, worker_id=worker_id)
        self._image = image

    def _external_id(self, item: dict[str, Any]) -> str | None:
        eval_id = item.get("eval_id")
        return str(eval_id) if isinstance(eval_id, str | int) and str(eval_id) else None

    async def _take(self, jobs: JobService, external_id: str, item: dict[str, Any]) -> str:
        code, engine = item.get("code"), item.get("engine") or self._config.runtime
        if not isinstance(code, str):
            raise ItemRefused("the task has no code (a string)")
        if engine not in ("docker", "gvisor"):
            raise ItemRefused(f"the task asks for the unknown engine {engine!r} (docker or gvisor)")
        try:
            job, _ = await jobs.submit(
                self._request(external_id, code, engine), origin=self.name, external_id=external_id
            )
        except RuntimeUnavailable:
            if engine != "gvisor" or not self._config.gvisor_fallback:
                raise
            log.warning(
                "gVisor does not work here; task %s runs on docker", external_id, extra={"event": "source_fallback"}
            )
            job, _ = await jobs.submit(
                self._request(external_id, code, "docker"), origin=self.name, external_id=external_id
            )
        return job.id

    def _refused_image(self) -> str | None:
        return self._image

    def _request(self, eval_id: str, code: str, runtime: str) -> JobRequest:
        return JobRequest.model_validate(
            {
                "image": self._image,
                "command": ["python3", "main.py"],
                "files": {"main.py": code},
                "runtime": runtime,
                "limits": self._config.limits.model_dump(exclude_none=True),
                "labels": self._labels(eval_id),
            }
        )

    def _report(self, job: Job) -> Report:
        """`complete` if its program ran to its end (any exit code), else `fail`."""
        eval_id = job.external_id or ""
        if job.state == JobState.SUCCEEDED or job.reason == Reason.EXIT_CODE:
            return Report(
                "POST",
                f"/tasks/{eval_id}/complete",
                {
                    "eval_id": eval_id,
                    "output": job.stdout,
                    "stderr": job.stderr,
                    "exit_code": job.exit_code,
                    "duration_s": job.duration_s,
                    "engine": job.engine,
                    "worker_id": self._worker_id,
                },
            )
        reason = job.reason.value if job.reason is not None else job.state.value
        return Report(
            "POST",
            f"/tasks/{eval_id}/fail",
            {
                "eval_id": eval_id,
                "error": job.message or f"the job ended {job.state.value}: {reason}",
                "reason": reason,
                "output": job.stdout,
                "worker_id": self._worker_id,
            },
        )
