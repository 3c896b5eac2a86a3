"""The worker-agent system's Job Protocol v1 as its own worker speaks it: a master's job checked the way that
worker checks it, the hatchway job it becomes, and a hatchway job told back in the protocol's words. Pure: the HTTP
side is `api/agent_protocol.py`; docs/compatibility.md says what differs and why.

Taken from that worker's code (worker-agent/node/src), not from its documents alone: api.js checks a job in a
fixed order, each failure a 400 with a code, a job id it holds a 409; executor.js runs
`docker run --rm -i [--memory <memory_mb>m] [-e K=V]... IMAGE [cmd...]` with the whole job, as `JSON.stringify`
writes it, on stdin, and stops it after `max_runtime_seconds` (10 when absent or 0); scheduler.js ends a job
`finished` (exit 0) or `failed` with TIMEOUT, DOCKER_ERROR or NON_ZERO_EXIT; its timestamps are
`Date.toISOString()` (UTC, milliseconds, `Z`). `mode: "build"` is reserved by the protocol, without fields, and
refused by that worker; so it is here.
"""

from __future__ import annotations

import contextlib
import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from hatchway.errors import RequestError
from hatchway.jobs.policy import Policy
from hatchway.jobs.service import source_job_id
from hatchway.models import Job, JobRequest, JobSpec, JobState, Reason
from hatchway.settings import AGENT_SOURCE

PROTOCOL_VERSION = 1
DEFAULT_TIMEOUT_S = 10.0
"""What the protocol's worker gives a job whose `max_runtime_seconds` is absent or 0."""
MAX_JOB_ID_CHARS = 256
_MARKERS = ("protocol_version", "job_id", "task")
_ABSENT = object()
_IMAGE_COMMAND = ["(the image's own command)"]
"""Stands in for an empty `cmd` while the policy admits the job (hatchway's requests need a command); the spec
then gets the empty command back, which the engine leaves to the image."""
_FIELDS = {
    "image": "runtime.image",
    "command": "runtime.cmd",
    "env": "runtime.env",
    "limits.timeout_s": "runtime.limits.max_runtime_seconds",
    "limits.memory_mb": "runtime.limits.memory_mb",
    "labels": "task.type",
}
_STATES = {
    JobState.QUEUED: "queued",
    JobState.BUILDING: "running",  # the protocol's worker is `running` while `docker run` pulls the image
    JobState.RUNNING: "running",
    JobState.SUCCEEDED: "finished",
    JobState.FAILED: "failed",
    JobState.KILLED: "failed",
}
_DOCKER_ERRORS = (Reason.IMAGE_NOT_FOUND, Reason.IMAGE_PULL_FAILED, Reason.ENGINE_ERROR)


class Rejected(RequestError):
    """A master's job this worker does not take: the protocol's rejection, always a 400 as its worker answers
    it. `code` is the protocol's, or for what only hatchway checks, hatchway's own code in capitals."""

    status = 400

    def __init__(self, code: str, message: str, *, job_id: Any) -> None:
        super().__init__(message)
        self.code = code
        self.job_id = job_id
        """The body's `job_id` as it was, whatever it was (null without one), as the rejection carries it."""

    def answer(self) -> dict[str, Any]:
        return rejection(self.job_id, self.code, str(self))


@dataclass(frozen=True)
class AgentJob:
    """A master's job this worker takes: its id at the master and what it runs as."""

    job_id: str
    spec: JobSpec
    warnings: list[str]

    @property
    def hatchway_id(self) -> str:
        return agent_job_id(self.job_id)


def agent_job_id(job_id: str) -> str:
    """The hatchway id of the master's job `job_id`: in the protocol's own namespace (`agent.`), so it never
    meets an id a hatchway client chose."""
    return source_job_id(AGENT_SOURCE, job_id)


def is_agent_job(body: object) -> bool:
    """Whether a `POST /jobs` body is a job of this protocol: a JSON object with a key only its jobs have
    (`protocol_version`, `job_id`, `task`), or a `runtime` object (hatchway's `runtime` is a string). hatchway's own
    API refuses every such body (422), so taking them costs its clients nothing."""
    if not isinstance(body, dict):
        return False
    return any(key in body for key in _MARKERS) or isinstance(body.get("runtime"), dict)


def admit(body: dict[str, Any], policy: Policy, *, sent_as_json: bool) -> AgentJob:
    """The job `body` asks for, under this worker's `policy`. Raises Rejected: first for what the protocol's
    worker refuses, in its order and words, then for what hatchway checks beside (INVALID_RUNTIME for a `cmd`,
    `env` or `limits` it cannot run as meant, and the policy's refusals under hatchway's codes)."""
    given_id = body.get("job_id")

    def reject(code: str, message: str) -> Rejected:
        return Rejected(code, message, job_id=given_id)

    if not sent_as_json:  # its worker reads a body only when it comes as application/json
        raise reject("INVALID_BODY", "Request body must be a JSON object (sent as Content-Type: application/json)")
    version = body.get("protocol_version", _ABSENT)
    if isinstance(version, bool) or not isinstance(version, int | float) or version != PROTOCOL_VERSION:
        raise reject(
            "UNSUPPORTED_PROTOCOL_VERSION",
            f"Unsupported protocol_version: {_js(version)}. Only version {PROTOCOL_VERSION} is supported.",
        )
    if not isinstance(given_id, str) or not given_id:
        raise reject("MISSING_JOB_ID", "job_id must be a non-empty string")
    if len(given_id) > MAX_JOB_ID_CHARS or not given_id.isprintable():
        raise reject(
            "MISSING_JOB_ID",
            f"job_id must be a non-empty string of at most {MAX_JOB_ID_CHARS} printable characters on this worker",
        )
    runtime = body.get("runtime")
    if not isinstance(runtime, dict | list):
        raise reject("MISSING_RUNTIME", "runtime must be provided and must be an object")
    fields: dict[str, Any] = runtime if isinstance(runtime, dict) else {}  # an array is an object without fields
    mode = fields.get("mode", _ABSENT)
    if mode not in ("image", "build"):
        raise reject("BAD_RUNTIME_MODE", f"runtime.mode must be 'image' or 'build', got '{_js(mode)}'")
    if mode == "build":
        raise reject("RUNTIME_NOT_SUPPORTED", "runtime.mode='build' is not supported on this worker")
    image = fields.get("image")
    if not isinstance(image, str) or not image:
        raise reject("MISSING_IMAGE", "runtime.image must be a non-empty string when mode='image'")
    if not policy.image_allowed(image):
        raise reject("IMAGE_NOT_ALLOWED", f"Image '{image}' is not allowed on this worker")
    try:
        command = _command(fields.get("cmd"))
        env = _env(fields.get("env"))
        limits = _limits(fields.get("limits"))
    except ValueError as exc:
        raise reject("INVALID_RUNTIME", str(exc)) from None
    task = body.get("task")
    kind = task.get("type") if isinstance(task, dict) else None
    labels = {"source": AGENT_SOURCE, "external_id": given_id[:200]}
    if isinstance(kind, str) and kind and len(kind) <= 256 and kind.isprintable():
        labels["task_type"] = kind
    try:
        request = JobRequest(
            image=image,
            command=command or _IMAGE_COMMAND,
            env=env,
            # The whole job, as its worker writes it: JSON.stringify's compact form, characters unescaped.
            stdin=json.dumps(body, ensure_ascii=False, separators=(",", ":")),
            limits=limits,
            labels=labels,
        )
    except ValidationError as exc:
        raise reject("INVALID_RUNTIME", _described(exc)) from None
    try:
        admitted = policy.admit(request)
    except RequestError as exc:
        raise reject(exc.code.upper(), str(exc)) from None
    spec = admitted.spec.model_copy(update={"command": command, "image_defaults": True})
    return AgentJob(job_id=given_id, spec=spec, warnings=admitted.warnings)


def rejection(job_id: Any, code: str, message: str) -> dict[str, Any]:
    """The protocol's refusal of a job: also hatchway's error shape (`error.code`, `error.message`)."""
    return {"accepted": False, "job_id": job_id, "state": "rejected", "error": {"code": code, "message": message}}


def record(job: Job) -> dict[str, Any]:
    """The job as the protocol's `GET /jobs/{job_id}` answers it, with hatchway's own figures beside."""
    return {
        "job_id": job.external_id or job.id,
        "state": _STATES[job.state],
        "created_at": timestamp(job.created_at),
        "started_at": timestamp(job.started_at),
        "finished_at": timestamp(job.finished_at),
        # Its worker reports no exit code for a job it stopped at its time limit.
        "exit_code": None if job.reason is Reason.TIMEOUT else job.exit_code,
        "stdout": job.stdout,
        "stderr": job.stderr,
        "error": error_of(job),
        "hatchway_id": job.id,
        "worker_id": job.worker_id,
        "engine": job.engine,
        "reason": job.reason,
        "duration_s": job.duration_s,
        "stdout_truncated": job.stdout_truncated,
        "stderr_truncated": job.stderr_truncated,
    }


def protocol_state(state: JobState) -> str:
    return _STATES[state]


def error_of(job: Job) -> dict[str, str] | None:
    """Why a job failed, as `{code, message}`: the protocol worker's codes where they mean the same (NON_ZERO_EXIT,
    TIMEOUT, DOCKER_ERROR, CANCELLED), else hatchway's reason in capitals (MEMORY_LIMIT, OUTPUT_LIMIT, ...)."""
    if job.state not in (JobState.FAILED, JobState.KILLED):
        return None
    reason = job.reason
    if reason is Reason.EXIT_CODE:
        return {"code": "NON_ZERO_EXIT", "message": f"Job exited with code {job.exit_code}"}
    if reason is Reason.TIMEOUT:
        return {"code": "TIMEOUT", "message": "Job exceeded max_runtime_seconds"}
    if reason in _DOCKER_ERRORS:
        return {"code": "DOCKER_ERROR", "message": job.message or "Docker failed to run the job"}
    if reason is Reason.CANCELLED:
        return {"code": "CANCELLED", "message": "Job was cancelled before it started running"}
    if reason is Reason.KILLED:
        return {"code": "CANCELLED", "message": "Job was cancelled while it was running"}
    code = reason.value.upper() if reason is not None else "RUNTIME_ERROR"
    return {"code": code, "message": job.message or f"Job failed ({code})"}


def timestamp(value: datetime | None) -> str | None:
    """As `Date.toISOString()` writes it: `2026-01-02T03:04:05.678Z`."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _command(value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(_scalar(part) for part in value):
        raise ValueError("runtime.cmd must be an array of strings (or numbers)")
    return [_js_string(part) for part in value]


def _env(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(item is None or _scalar(item) for item in value.values()):
        raise ValueError("runtime.env must be an object of strings (or numbers or booleans)")
    return {name: _js_string(item) for name, item in value.items() if item is not None}  # null: not set, as there


def _limits(value: Any) -> dict[str, float | int]:
    """hatchway's limits for the job's: `max_runtime_seconds` is `timeout_s` (10 s without one), `memory_mb` is
    itself (in whole MB; the worker's default without one). The others take the worker's defaults."""
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise ValueError("runtime.limits must be an object")
    limits: dict[str, float | int] = {}
    timeout_s = _positive(value.get("max_runtime_seconds"), "runtime.limits.max_runtime_seconds")
    limits["timeout_s"] = timeout_s or DEFAULT_TIMEOUT_S
    memory_mb = _positive(value.get("memory_mb"), "runtime.limits.memory_mb")
    if memory_mb is not None:
        limits["memory_mb"] = math.ceil(memory_mb)
    return limits


def _positive(value: Any, name: str) -> float | None:
    """A limit as its worker reads it, `Number(value)`, with what it treats as absent (0, "", null, false) as
    None; what it would run without a limit or fail on (not a number, not above 0) is refused here."""
    if value is None or value is False or value in (0, ""):
        return None
    number = math.nan
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            number = float(value.strip())
    elif _number(value):
        number = float(value)
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f"{name} must be a number above 0, got {json.dumps(value)}")
    return number


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _scalar(value: Any) -> bool:
    return isinstance(value, str | int | float)


def _js_string(value: Any) -> str:
    """`String(value)` in JavaScript, for the strings, numbers and booleans a job's `cmd` and `env` hold."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return str(int(value))
    return str(value)


def _js(value: Any) -> str:
    """A value as a JavaScript template literal shows it, for messages worded as the protocol's worker words them."""
    if value is _ABSENT:
        return "undefined"
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "[object Object]"
    if isinstance(value, list):
        return ",".join("" if item is None else _js(item) for item in value)
    return _js_string(value)


def _described(exc: ValidationError) -> str:
    """A validation error in the protocol's field names."""
    parts = []
    for error in exc.errors():
        location = [str(part) for part in error.get("loc", ())]
        field = ".".join(location)
        for ours, theirs in _FIELDS.items():
            if field == ours or field.startswith(f"{ours}."):
                field = theirs + field[len(ours) :]
                break
        parts.append(f"{field}: {error.get('msg', '')}")
    return "; ".join(parts)
