"""How a task's job ended, in the queue-pull platform's words: what its queue service and its event bus are told.

The platform's worker reports every run that produced a result as a completion whose `status` says how it ended:
`completed` (exit code 0), `failed` (another exit code), `timeout`, `error` (anything else that stopped it); a
task it could not run at all is a failure (`/fail`, with its error). Its event bus knows three ends: `completed`,
`failed` and `timeout`, with 124 as a timeout's exit code. hatchway maps its own ends onto these here, once, for
the report (`hatchway.sources.tasks`) and the events (`hatchway.sources.task_events`) alike.
"""

from __future__ import annotations

from enum import StrEnum

from hatchway.models import Job, JobState, Reason

TIMEOUT_EXIT_CODE = 124
"""The exit code the platform's event contract gives a timeout (as `timeout(1)` does)."""
NO_EXIT_CODE = -1
"""What the platform's executor says when there is no exit code."""


class TaskStatus(StrEnum):
    """A completion's `status`, as the platform's worker writes it."""

    COMPLETED = "completed"
    FAILED = "failed"
    TIMEOUT = "timeout"
    ERROR = "error"


_LOST = (Reason.WORKER_RESTART, Reason.WORKER_LOST)


def ran(job: Job) -> bool:
    """Whether the task's program ran and its result is known (its output, however it ended): a completion. A
    task refused, one that never started, or one whose result a worker restart or a lost worker lost is a failure
    instead."""
    return job.state.is_final and job.started_at is not None and job.reason not in _LOST


def status_of(job: Job) -> TaskStatus:
    """How a job that ran ended."""
    if job.state == JobState.SUCCEEDED:
        return TaskStatus.COMPLETED
    if job.reason == Reason.EXIT_CODE:
        return TaskStatus.FAILED
    if job.reason == Reason.TIMEOUT:
        return TaskStatus.TIMEOUT
    return TaskStatus.ERROR


def error_of(job: Job) -> str:
    """What went wrong, in a sentence: the words the platform's worker uses for a timeout, else hatchway's own."""
    if job.reason == Reason.TIMEOUT:
        return f"Timeout after {job.spec.limits.timeout_s:g} seconds"
    reason = job.reason.value if job.reason is not None else job.state.value
    return job.message or f"the job ended {job.state.value}: {reason}"


def exit_code_of(job: Job) -> int:
    """The exit code the event bus is told: the program's, 124 for a timeout, -1 when there is none."""
    if job.reason == Reason.TIMEOUT:
        return TIMEOUT_EXIT_CODE
    return NO_EXIT_CODE if job.exit_code is None else job.exit_code
