"""`kind: tasks`: the queue-pull worker's queue service.

`GET {url}/tasks/next` answers `null` (200) when the queue is empty (204, 404 and an empty body are taken too),
else a task: `{"eval_id", "code", "language", "engine", "timeout"}`. The code runs in the language profile its
`language` maps to (through the source's `languages` over the built-in map; a task that names none gets the
source's `profile`), on `engine` (docker or gvisor), stopped after its own `timeout` seconds (the source's limits
otherwise). A language with no profile, an unknown engine or a task without code is refused.

Every run that produced a result goes to `POST {url}/tasks/{eval_id}/complete` as the platform's worker sends it,
`{"output": {"id", "status", "output" | "error", ...}}`, `status` saying how it ended (`task_outcome`), with
hatchway's own fields beside (`exit_code`, `stdout`, `stderr`, `duration_s`, `engine`, `worker_id`, `reason`). A
task that could not run at all goes to `POST {url}/tasks/{eval_id}/fail` as `{"error": ...}` (with `reason` and
`worker_id`). The queue service answers a report for a task it does not know with 404 or `{"status":
"not_found"}`: the report is then done. With an event bus (`redis_url`), each task's lifecycle is published there
too (`task_events`). Claiming and reporting are `PulledSource`'s.
"""

from __future__ import annotations

import asyncio
import logging
import shlex
from collections.abc import Mapping
from typing import Any

from hatchway.errors import RuntimeUnavailable
from hatchway.jobs.service import JobService
from hatchway.judge.profiles import Profile
from hatchway.models import Job, JobRequest, Limits
from hatchway.settings import SourceConfig
from hatchway.sources.base import SourceStatus
from hatchway.sources.pulled import ItemRefused, PulledSource, Report
from hatchway.sources.task_events import TaskEvents
from hatchway.sources.task_outcome import TaskStatus, error_of, ran, status_of

log = logging.getLogger(__name__)

ENGINES = ("docker", "gvisor")
WORKDIR = "/box"
"""Where a task's code is written and compiled, as a profile's commands expect (`/box/{main}`)."""


class TasksSource(PulledSource):
    """Pulls tasks from a queue service and reports each one's result exactly once."""

    kind = "tasks"
    claim_method = "GET"
    claim_path = "/tasks/next"
    item_name = "task"

    def __init__(
        self,
        config: SourceConfig,
        *,
        worker_id: str,
        profiles: Mapping[str, Profile],
        languages: Mapping[str, str],
        events: TaskEvents | None = None,
    ) -> None:
        super().__init__(config, worker_id=worker_id)
        self._profiles = dict(profiles)
        self._languages = dict(languages)
        self._events = events

    async def run(self, jobs: JobService, stop: asyncio.Event) -> None:
        if self._events is None:
            await super().run(jobs, stop)
            return
        async with self._events.running():
            await super().run(jobs, stop)

    def status(self) -> SourceStatus:
        status = super().status()
        return status if self._events is None else status.model_copy(update={"events": self._events.bus.status()})

    def _external_id(self, item: dict[str, Any]) -> str | None:
        eval_id = item.get("eval_id")
        return str(eval_id) if isinstance(eval_id, str | int) and str(eval_id) else None

    async def _take(self, jobs: JobService, external_id: str, item: dict[str, Any]) -> str:
        code, engine = item.get("code"), item.get("engine") or self._config.runtime
        if not isinstance(code, str):
            raise ItemRefused("the task has no code (a string)")
        if engine not in ENGINES:
            raise ItemRefused(f"the task asks for the unknown engine {engine!r} (docker or gvisor)")
        profile = self._profile(item.get("language"))
        timeout = _timeout(item.get("timeout"))
        limits = self._limits(jobs, profile, timeout)
        try:
            job, created = await jobs.submit(
                self._request(external_id, code, profile, engine, limits), origin=self.name, external_id=external_id
            )
        except RuntimeUnavailable:
            if engine != "gvisor" or not self._config.gvisor_fallback:
                raise
            log.warning(
                "gVisor does not work here; task %s runs on docker", external_id, extra={"event": "source_fallback"}
            )
            job, created = await jobs.submit(
                self._request(external_id, code, profile, "docker", limits), origin=self.name, external_id=external_id
            )
        if created and self._events is not None:
            self._events.taken(jobs, job.id, external_id, timeout if timeout is not None else job.spec.limits.timeout_s)
        return job.id

    def _profile(self, language: object) -> Profile:
        """The profile a task's `language` maps to (the source's `profile` when it names none)."""
        if language is None or language == "":
            name = self._config.profile
        elif not isinstance(language, str):
            raise ItemRefused(f"the task's language must be a string, got {type(language).__name__}")
        else:
            name = self._languages.get(language.lower(), language.lower())
        profile = self._profiles.get(name)
        if profile is None:
            raise ItemRefused(
                f"the task's language {language!r} has no language profile on this worker (it has: "
                f"{', '.join(sorted(self._profiles))}); map it to one with the source's `languages`"
            )
        return profile

    def _limits(self, jobs: JobService, profile: Profile, timeout_s: float | None) -> Limits:
        """The source's limits, the task's own timeout over them, and the profile's runtime overhead added to the
        memory limit (the JVM's, say) as when it grades."""
        update: dict[str, float | int] = {}
        if timeout_s is not None:
            update["timeout_s"] = timeout_s
        if profile.extra_memory_mb:
            memory_mb = self._config.limits.memory_mb or jobs.policy.default_limits.memory_mb
            update["memory_mb"] = profile.memory_limit_mb(memory_mb)
        return self._config.limits.model_copy(update=update)

    def _refused_image(self) -> str | None:
        profile = self._profiles.get(self._config.profile)
        return None if profile is None else profile.image

    def _request(self, eval_id: str, code: str, profile: Profile, runtime: str, limits: Limits) -> JobRequest:
        return JobRequest.model_validate(
            {
                "image": profile.image,
                "command": _command(profile),
                "env": profile.env,
                "files": {profile.source_name: code},
                "workdir": WORKDIR,
                "runtime": runtime,
                "limits": limits.model_dump(exclude_none=True),
                "labels": {**self._labels(eval_id), "language": profile.name},
            }
        )

    def _job_ended(self, job: Job) -> None:
        if self._events is not None:
            self._events.ended(job)

    def _report(self, job: Job) -> Report:
        eval_id = job.external_id or ""
        reason = job.reason.value if job.reason is not None else None
        if not ran(job):
            return Report(
                "POST",
                f"/tasks/{eval_id}/fail",
                {"error": error_of(job), "reason": reason, "worker_id": self._worker_id},
            )
        status = status_of(job)
        said: dict[str, Any] = {"id": eval_id, "status": status.value}
        if status in (TaskStatus.COMPLETED, TaskStatus.FAILED):
            said["output"] = job.stdout or job.stderr  # as the platform's worker fills it
        else:
            said["error"] = error_of(job)
        said |= {
            "exit_code": job.exit_code,
            "stdout": job.stdout,
            "stderr": job.stderr,
            "duration_s": job.duration_s,
            "engine": job.engine,
            "worker_id": self._worker_id,
            "reason": reason,
        }
        return Report("POST", f"/tasks/{eval_id}/complete", {"output": said})


def _timeout(value: object) -> float | None:
    """A task's own `timeout`, in seconds; None when it gives none."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < float("inf"):
        raise ItemRefused(f"the task's timeout must be a positive number of seconds, got {value!r}")
    return value


def _command(profile: Profile) -> list[str]:
    """The profile's run command, after its compile step (a syntax check for interpreted languages) if it has one."""
    run = profile.run_argv()
    compile_argv = profile.compile_argv()
    if compile_argv is None:
        return run
    compile_env = [f"{name}={value}" for name, value in profile.compile_env.items()]
    compile_step = shlex.join(["env", *compile_env, *compile_argv] if compile_env else compile_argv)
    return ["/bin/sh", "-c", f"{compile_step} && exec {shlex.join(run)}"]
