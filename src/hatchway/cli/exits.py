"""What the `hatchway` command exits with: the one table of exit codes, and the sentence that explains each
ending that is not the job's own exit.

The codes follow what docker(1) and timeout(1) users already know, so that `hatchway run` and
`hatchway submit --wait` can stand in for `docker run` in a script: a job that ran to its end gives its own
exit code; every other ending gets a code of its own, from the range that shells and container tools reserve
(125 and up), and a one-line message on stderr. This module imports nothing heavy: `hatchway run` reads it
before anything else.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from hatchway.errors import HatchwayError


class Exit(IntEnum):
    """The command's own exit codes (a job that ran to its end exits with its own code instead)."""

    OK = 0
    FAILED = 1
    """A client command's request failed: the worker refused it (no such job, a token that may not, a finished
    job to kill), or a grading's verdict is not AC."""
    USAGE = 2
    """The command line or the configuration is wrong (an unknown option, no command, an invalid job)."""
    UNREACHABLE = 69
    """The worker could not be reached (sysexits' EX_UNAVAILABLE): worth retrying, unlike the others."""
    TIMEOUT = 124
    """The job ran past its time limit and was stopped (as timeout(1))."""
    NOT_RUN = 125
    """The job could not run: refused by the worker, or its image, bundle, build or the engine failed, or the
    worker restarted under it (as docker run when the container cannot run)."""
    MEMORY_LIMIT = 137
    """The kernel killed the job for using more memory than its limit (128 + SIGKILL, as docker run for an
    OOM-killed container)."""
    KILLED = 143
    """A client killed the job, or cancelled it before it started, or the worker shut down under it (128 +
    SIGTERM, as after docker stop)."""
    WRITE_LIMIT = 153
    """The job wrote past its output or disk limit (128 + SIGXFSZ, the signal for a file size limit)."""
    INTERRUPTED = 130
    """Interrupted by Ctrl-C (128 + SIGINT)."""


_ENDINGS: dict[str, tuple[Exit, str]] = {
    "timeout": (Exit.TIMEOUT, "timed out after {timeout_s} s"),
    "memory_limit": (Exit.MEMORY_LIMIT, "was killed for using more than its {memory_mb} MB of memory"),
    "output_limit": (Exit.WRITE_LIMIT, "was stopped for writing more than {output_bytes} bytes to one stream"),
    "disk_limit": (Exit.WRITE_LIMIT, "filled its {disk_mb} MB of disk"),
    "killed": (Exit.KILLED, "was killed"),
    "cancelled": (Exit.KILLED, "was cancelled before it started"),
    "shutdown": (Exit.KILLED, "was stopped: the worker shut down"),
    "image_not_found": (Exit.NOT_RUN, "could not run: image not found"),
    "image_pull_failed": (Exit.NOT_RUN, "could not run: pulling its image failed"),
    "build_failed": (Exit.NOT_RUN, "could not run: building its image failed"),
    "bad_bundle": (Exit.NOT_RUN, "could not run: its bundle could not be used"),
    "engine_error": (Exit.NOT_RUN, "could not run: engine error"),
    "refused": (Exit.NOT_RUN, "could not run: refused"),
    "worker_restart": (Exit.NOT_RUN, "was lost: the worker restarted and its container was gone"),
    "worker_lost": (Exit.NOT_RUN, "was lost: the worker running it stopped answering the fleet"),
}
"""reason -> the exit code and what happened, for every way a job ends other than by its own exit."""

_HEX_ID = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True)
class Ending:
    """How the command ends for a job: its exit code, and the line for stderr (None: the job's own exit)."""

    code: int
    message: str | None = None


def job_ending(job: Mapping[str, Any]) -> Ending:
    """The exit code and message for a job as the API shows it (a dict), once it has ended."""
    reason = job.get("reason")
    exit_code = job.get("exit_code")
    if reason is None and job.get("state") == "succeeded":
        return Ending(Exit.OK)
    if reason == "exit_code" and exit_code is not None:
        return Ending(exit_code)
    code, what = _ENDINGS.get(str(reason), (Exit.NOT_RUN, f"ended {job.get('state')} ({reason})"))
    limits = (job.get("spec") or {}).get("limits") or {}
    text = what.format_map({key: _number(limits.get(key)) for key in _LIMITS})
    detail = job.get("message")
    if detail and code in (Exit.NOT_RUN, Exit.WRITE_LIMIT) and detail not in text:
        text = f"{text}: {detail}"
    return Ending(code, f"job {short_id(str(job.get('id', '')))} {text}")


_LIMITS = ("timeout_s", "memory_mb", "output_bytes", "disk_mb")


def _number(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return "?" if value is None else str(value)


def short_id(job_id: str) -> str:
    """A generated id cut to 12 characters, as docker shows container ids; a chosen id as it is."""
    return f"{job_id[:12]}…" if _HEX_ID.fullmatch(job_id) else job_id


class CommandError(HatchwayError):
    """The command cannot go on; `str(error)` says why (printed after `hatchway: `), `code` is its exit code.

    The CLI's own branch of the tree: ClientError (a request failed) and UsageError (a wrong command line)."""

    def __init__(self, message: str, code: int = Exit.FAILED) -> None:
        super().__init__(message)
        self.code = code


class UsageError(CommandError):
    """The command line is wrong: the message says what to change."""

    def __init__(self, message: str) -> None:
        super().__init__(message, Exit.USAGE)
