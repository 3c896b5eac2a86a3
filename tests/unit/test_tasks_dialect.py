"""The queue-pull dialect's pure parts: how a job's end is put in the platform's words, what a task's code runs as,
which timeouts are taken, and what the queue service is told."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from hatchway.judge.profiles import DEFAULT_PROFILES
from hatchway.models import Job, JobState, Reason, utcnow
from hatchway.settings import SourceConfig
from hatchway.sources.pulled import ItemRefused
from hatchway.sources.task_events import redacted
from hatchway.sources.task_outcome import TaskStatus, error_of, exit_code_of, ran, status_of
from hatchway.sources.tasks import TasksSource, _command, _timeout


def ended(make_job: Callable[..., Job], state: JobState, reason: Reason | None, **fields: Any) -> Job:
    now = utcnow()
    values = {"state": state, "reason": reason, "started_at": now, "finished_at": now, "external_id": "e1"}
    return make_job(**(values | fields))


ENDS = [
    # state, reason, exit code -> completion status, exit code on the bus
    ((JobState.SUCCEEDED, None, 0), (TaskStatus.COMPLETED, 0)),
    ((JobState.FAILED, Reason.EXIT_CODE, 3), (TaskStatus.FAILED, 3)),
    ((JobState.FAILED, Reason.TIMEOUT, 137), (TaskStatus.TIMEOUT, 124)),
    ((JobState.FAILED, Reason.MEMORY_LIMIT, 137), (TaskStatus.ERROR, 137)),
    ((JobState.KILLED, Reason.SHUTDOWN, None), (TaskStatus.ERROR, -1)),
]


@pytest.mark.parametrize(("end", "said"), ENDS)
def test_a_run_s_end_in_the_platform_s_words(
    make_job: Callable[..., Job], end: tuple[JobState, Reason | None, int | None], said: tuple[TaskStatus, int]
) -> None:
    state, reason, exit_code = end
    job = ended(make_job, state, reason, exit_code=exit_code)
    assert ran(job) and (status_of(job), exit_code_of(job)) == said


def test_a_task_that_never_ran_or_whose_result_is_lost_did_not_run(make_job: Callable[..., Job]) -> None:
    refused = ended(make_job, JobState.FAILED, Reason.REFUSED, started_at=None, message="no profile")
    lost = ended(make_job, JobState.FAILED, Reason.WORKER_RESTART)
    lost_worker = ended(make_job, JobState.FAILED, Reason.WORKER_LOST)
    assert not ran(refused) and not ran(lost) and not ran(lost_worker)
    assert error_of(refused) == "no profile"
    assert error_of(lost) == "the job ended failed: worker_restart"


def test_a_timeout_is_said_as_the_platform_s_worker_says_it(make_job: Callable[..., Job]) -> None:
    job = ended(make_job, JobState.FAILED, Reason.TIMEOUT)
    assert error_of(job) == f"Timeout after {job.spec.limits.timeout_s:g} seconds"


def test_the_queue_service_gets_the_platform_s_fields_and_hatchway_s_beside(make_job: Callable[..., Job]) -> None:
    config = SourceConfig(name="queue", kind="tasks", url="http://127.0.0.1:1")
    source = TasksSource(config, worker_id="w1", profiles=DEFAULT_PROFILES, languages={})
    crashed = ended(make_job, JobState.FAILED, Reason.EXIT_CODE, exit_code=1, stderr="Traceback\n")
    report = source._report(crashed)
    assert (report.method, report.path) == ("POST", "/tasks/e1/complete")
    said = report.body["output"]
    assert (said["id"], said["status"], said["output"]) == ("e1", "failed", "Traceback\n"), "stdout, else stderr"
    assert "error" not in said, "output or error, as the platform's worker sends them"
    timed_out = source._report(ended(make_job, JobState.FAILED, Reason.TIMEOUT, stdout="tick\n"))
    assert "output" not in timed_out.body["output"] and timed_out.body["output"]["stdout"] == "tick\n"
    refused = source._report(ended(make_job, JobState.FAILED, Reason.REFUSED, started_at=None, message="why"))
    assert (refused.path, refused.body) == ("/tasks/e1/fail", {"error": "why", "reason": "refused", "worker_id": "w1"})


def test_a_task_s_code_is_compiled_or_checked_then_run_as_its_profile_says() -> None:
    assert _command(DEFAULT_PROFILES["python"]) == [
        "/bin/sh",
        "-c",
        "python3 -m py_compile -- main.py && exec python3 /box/main.py",
    ]
    go = _command(DEFAULT_PROFILES["go"])[2]
    assert go.startswith("env CGO_ENABLED=0 ") and go.endswith(" go build -o main -- main.go && exec /box/main")
    java = DEFAULT_PROFILES["java"].model_copy(update={"compile": None})
    assert _command(java) == DEFAULT_PROFILES["java"].run_argv(), "no compile step: the run command alone"


@pytest.mark.parametrize("given", [0, -1, True, "5", float("inf"), float("nan"), [3]])
def test_a_timeout_that_is_not_a_positive_number_of_seconds_is_refused(given: object) -> None:
    with pytest.raises(ItemRefused, match="timeout must be a positive number"):
        _timeout(given)


def test_a_timeout_is_taken_as_given_or_left_to_the_source() -> None:
    assert (_timeout(2), _timeout(0.5), _timeout(None)) == (2, 0.5, None)


def test_a_redis_password_is_never_shown() -> None:
    assert redacted("redis://:s3cret@10.0.0.1:6379/0") == "redis://:***@10.0.0.1:6379/0"
    assert redacted("redis://user:s3cret@host/1") == "redis://user:***@host/1"
    assert redacted("redis://127.0.0.1:6379") == "redis://127.0.0.1:6379"
