"""What a Fluster job is in hatchway (issue 19; docs/fluster-plan.md): the contract between the WorkerService that
makes jobs from the controller's RunJob and the reporter that tells the controller of their states.

A Fluster job is a hatchway job whose `origin` is `ORIGIN` and whose `external_id` names the controller's job and
attempt: a retried attempt is a new hatchway job, and the same attempt sent twice is the same job. Its states map
onto the schema's `JobState` one to one; `WORKER_FAILED` and `UNSCHEDULABLE` are the controller's own.
"""

from __future__ import annotations

from hatchway.fluster.proto import cluster_pb2 as pb
from hatchway.models import JobState, JobSummary, Reason

ORIGIN = "fluster"
JOB_LABEL = "fluster.job_id"
"""The label of a Fluster job's hatchway jobs that names the controller's job."""
ATTEMPT_LABEL = "fluster.attempt_id"
"""The label that names its attempt."""
WORKER_LABEL = "fluster.worker_id"
"""The label of a Fluster job naming the worker id (as the controller knows it) whose WorkerService took its RunJob:
its states are reported as that worker's, by that worker's reporter alone, whichever worker of a fleet runs it. A
job without it is reported by the worker whose store is its own (not shared)."""


class Refusal(ValueError):
    """A RunJob hatchway cannot run, and why, in words for the controller's user: the job fails with them (the
    controller is told FAILED, as for any job that cannot start) rather than the RPC (which would make the
    controller dispatch it again and again)."""


_STATES = {
    JobState.QUEUED: pb.JOB_STATE_PENDING,
    JobState.BUILDING: pb.JOB_STATE_BUILDING,
    JobState.RUNNING: pb.JOB_STATE_RUNNING,
    JobState.SUCCEEDED: pb.JOB_STATE_SUCCEEDED,
    JobState.FAILED: pb.JOB_STATE_FAILED,
    JobState.KILLED: pb.JOB_STATE_KILLED,
}


def external_id(job_id: str, attempt_id: int) -> str:
    """The `external_id` of attempt `attempt_id` of the controller's job `job_id`."""
    return f"{job_id}#{attempt_id}"


def fluster_ids(external: str) -> tuple[str, int]:
    """The controller's job id and attempt of an `external_id` made by `external_id`."""
    job_id, _, attempt = external.rpartition("#")
    return job_id, int(attempt)


def fluster_state(state: JobState) -> pb.JobState.ValueType:
    """A hatchway job's state as the controller's schema says it."""
    return _STATES[state]


def fluster_error(job: JobSummary) -> str:
    """Why an ended job did not succeed, in the real worker's words where it has them (a timeout, an exit code)."""
    if job.reason == Reason.TIMEOUT:
        return "Timeout exceeded"
    if job.reason == Reason.EXIT_CODE and job.exit_code is not None:
        return f"Exit code: {job.exit_code}"
    return job.message or (job.reason.value if job.reason is not None else job.state.value)


def fluster_exit_code(job: JobSummary) -> int | None:
    """A job's exit code as the real worker gives it: -1 for one it stopped at its timeout."""
    return -1 if job.reason == Reason.TIMEOUT else job.exit_code
