"""How a job ended, decided from what happened to it: the pure part of the runner."""

from __future__ import annotations

from typing import TypedDict

from hatchway.engines.base import ExitStatus
from hatchway.errors import HatchwayError
from hatchway.models import PROGRAM_STREAMS, JobState, Outcome, Reason, Stream
from hatchway.output.capture import OutputCapture


class CapturedOutput(TypedDict):
    """The job's output as an outcome records it."""

    stdout: str
    stderr: str
    stdout_truncated: bool
    stderr_truncated: bool


def captured(capture: OutputCapture) -> CapturedOutput:
    """What `capture` kept of the job's stdout and stderr, and whether either was cut."""
    truncated = capture.truncated
    return CapturedOutput(
        stdout=capture.text(Stream.STDOUT),
        stderr=capture.text(Stream.STDERR),
        stdout_truncated=truncated[Stream.STDOUT],
        stderr_truncated=truncated[Stream.STDERR],
    )


_STOPPED_BECAUSE = {
    Reason.TIMEOUT: "the job's time ran out",
    Reason.KILLED: "the job was killed",
    Reason.SHUTDOWN: "the worker shut down",
    Reason.OUTPUT_LIMIT: "the job's output went past its limit",
}


def cut_off(reason: Reason, lost: HatchwayError, capture: OutputCapture) -> Outcome:
    """How a job ends that was to be stopped (time out, kill, shutdown) while the engine did not answer."""
    because = _STOPPED_BECAUSE.get(reason, "the job was to be stopped")
    state = JobState.KILLED if reason in (Reason.KILLED, Reason.SHUTDOWN) else JobState.FAILED
    message = f"{lost}, and {because} before it answered again; its container is removed once the engine is back"
    return Outcome(state=state, reason=reason, message=message, **captured(capture))


def decide(status: ExitStatus, stopped_for: Reason | None, capture: OutputCapture, *, disk_full: bool) -> Outcome:
    """How a job ended: why the worker stopped it (if it did) first, then its output, memory and disk limits,
    then its exit code."""
    truncated = capture.truncated
    state: JobState
    reason: Reason | None
    message = None
    if stopped_for in (Reason.KILLED, Reason.SHUTDOWN):
        state, reason = JobState.KILLED, stopped_for
    elif stopped_for is not None:
        state, reason = JobState.FAILED, stopped_for
    elif any(truncated[stream] for stream in PROGRAM_STREAMS):
        state, reason = JobState.FAILED, Reason.OUTPUT_LIMIT
    elif status.oom_killed:
        state, reason = JobState.FAILED, Reason.MEMORY_LIMIT
    elif disk_full and status.exit_code != 0:
        # It failed with its disk full: a write past the limit is the likeliest cause by far.
        state, reason = JobState.FAILED, Reason.DISK_LIMIT
        message = "the job filled its disk: its working directory and /tmp reached limits.disk_mb"
    elif status.exit_code == 0:
        state, reason = JobState.SUCCEEDED, None
    else:
        state, reason = JobState.FAILED, Reason.EXIT_CODE
    return Outcome(state=state, reason=reason, message=message, exit_code=status.exit_code, **captured(capture))
