"""The worker-agent protocol's translation (api/agent_jobs.py): a master's job checked as that system's worker
checks it (order, codes and words from its api.js), the spec it runs as (its executor's `docker run`), and a
hatchway job told back as its `GET /jobs/{job_id}` answers."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from hatchway.api.agent_jobs import Rejected, admit, agent_job_id, error_of, is_agent_job, record, timestamp
from hatchway.jobs.policy import Policy
from hatchway.models import Job, JobState, Reason

IMAGE = "hatchway-test/busybox"


def job(**fields: Any) -> dict[str, Any]:
    """A valid job of the protocol, as its sample job is; keyword arguments replace top-level fields."""
    body: dict[str, Any] = {
        "protocol_version": 1,
        "job_id": "job-123",
        "task": {"type": "debug_echo", "payload": {"message": "Hello from ProcessorCluster!"}},
        "runtime": {
            "mode": "image",
            "image": IMAGE,
            "cmd": ["cat"],
            "env": {"EXAMPLE_ENV": "test123"},
            "limits": {"memory_mb": 256, "max_runtime_seconds": 10},
        },
    }
    body.update(fields)
    return body


def runtime(**fields: Any) -> dict[str, Any]:
    """A valid job whose runtime has `fields` replaced (None: removed)."""
    body = job()
    for key, value in fields.items():
        if value is None:
            body["runtime"].pop(key)
        else:
            body["runtime"][key] = value
    return body


@pytest.fixture
def agent_policy(make_policy: Callable[..., Policy]) -> Policy:
    return make_policy(allowed_images=["hatchway-test/*"], max_input_bytes=100_000)


@pytest.mark.parametrize(
    ("body", "code", "message"),
    [
        (job(protocol_version=2), "UNSUPPORTED_PROTOCOL_VERSION", "Unsupported protocol_version: 2. Only version 1"),
        (job(protocol_version="1"), "UNSUPPORTED_PROTOCOL_VERSION", "protocol_version: 1. Only"),
        (job(protocol_version=True), "UNSUPPORTED_PROTOCOL_VERSION", "protocol_version: true."),
        (job(protocol_version=None), "UNSUPPORTED_PROTOCOL_VERSION", "protocol_version: null."),
        ({"job_id": "x"}, "UNSUPPORTED_PROTOCOL_VERSION", "protocol_version: undefined."),
        (job(job_id=""), "MISSING_JOB_ID", "job_id must be a non-empty string"),
        (job(job_id=123), "MISSING_JOB_ID", "job_id must be a non-empty string"),
        (job(job_id="x" * 257), "MISSING_JOB_ID", "at most 256 printable characters"),
        (job(job_id="a\nb"), "MISSING_JOB_ID", "printable"),
        (job(runtime=None), "MISSING_RUNTIME", "runtime must be provided and must be an object"),
        (job(runtime="docker"), "MISSING_RUNTIME", "runtime must be provided"),
        (job(runtime=[]), "BAD_RUNTIME_MODE", "got 'undefined'"),  # an array is an object there
        (runtime(mode=None), "BAD_RUNTIME_MODE", "runtime.mode must be 'image' or 'build', got 'undefined'"),
        (runtime(mode="docker"), "BAD_RUNTIME_MODE", "got 'docker'"),
        (runtime(mode="build"), "RUNTIME_NOT_SUPPORTED", "runtime.mode='build' is not supported on this worker"),
        (runtime(image=None), "MISSING_IMAGE", "runtime.image must be a non-empty string when mode='image'"),
        (runtime(image=""), "MISSING_IMAGE", "runtime.image must be a non-empty string"),
        (runtime(image="alpine:latest"), "IMAGE_NOT_ALLOWED", "Image 'alpine:latest' is not allowed on this worker"),
        (runtime(cmd="echo hi"), "INVALID_RUNTIME", "runtime.cmd must be an array of strings"),
        (runtime(cmd=["echo", {"a": 1}]), "INVALID_RUNTIME", "runtime.cmd must be an array of strings"),
        (runtime(env=["A=1"]), "INVALID_RUNTIME", "runtime.env must be an object"),
        (runtime(env={"A": {"b": 1}}), "INVALID_RUNTIME", "runtime.env must be an object"),
        (runtime(env={"HATCHWAY_X": "1"}), "INVALID_RUNTIME", "runtime.env: Value error, HATCHWAY_X"),
        (runtime(env={"A=B": "1"}), "INVALID_RUNTIME", "runtime.env.A=B"),
        (runtime(limits=[1]), "INVALID_RUNTIME", "runtime.limits must be an object"),
        (runtime(limits={"memory_mb": -5}), "INVALID_RUNTIME", "runtime.limits.memory_mb must be a number above 0"),
        (runtime(limits={"memory_mb": "lots"}), "INVALID_RUNTIME", 'got "lots"'),
        (runtime(limits={"memory_mb": 4}), "INVALID_RUNTIME", "runtime.limits.memory_mb: Input should be greater"),
        (runtime(limits={"max_runtime_seconds": "NaN"}), "INVALID_RUNTIME", "max_runtime_seconds must be a number"),
        (runtime(limits={"max_runtime_seconds": -1}), "INVALID_RUNTIME", "max_runtime_seconds must be a number"),
        (runtime(limits={"max_runtime_seconds": 1e9}), "LIMIT_TOO_HIGH", "limits.timeout_s = 1000000000.0 is above"),
        (job(task={"payload": "x" * 200_000}), "INPUT_TOO_LARGE", "this worker takes at most 100000"),
    ],
)
def test_a_job_is_refused_with_the_code_and_words_of_the_protocol_s_worker(
    agent_policy: Policy, body: dict[str, Any], code: str, message: str
) -> None:
    with pytest.raises(Rejected) as refused:
        admit(body, agent_policy, sent_as_json=True)
    assert (refused.value.code, refused.value.status) == (code, 400)
    assert message in str(refused.value), str(refused.value)
    answer = refused.value.answer()
    assert answer == {
        "accepted": False,
        "job_id": body.get("job_id"),  # whatever it was, as the worker echoes `job?.job_id ?? null`
        "state": "rejected",
        "error": {"code": code, "message": str(refused.value)},
    }


def test_a_body_not_sent_as_json_is_invalid_body_before_anything_else(agent_policy: Policy) -> None:
    """Its worker reads only application/json bodies (express.json()); any other is no body at all."""
    with pytest.raises(Rejected) as refused:
        admit(job(protocol_version=7), agent_policy, sent_as_json=False)
    assert refused.value.code == "INVALID_BODY"
    assert str(refused.value).startswith("Request body must be a JSON object")


def test_the_checks_run_in_the_order_of_the_protocol_s_worker(agent_policy: Policy) -> None:
    """A job wrong in every way is refused for the first thing its worker checks, then the next, and so on."""
    body: dict[str, Any] = {"protocol_version": 0, "job_id": "", "runtime": {"mode": "build", "image": "evil"}}
    seen = []
    for fix in (
        lambda: body.update(protocol_version=1),
        lambda: body.update(job_id="j"),
        lambda: body["runtime"].update(mode="image"),
        lambda: body["runtime"].update(image="hatchway-test/x"),
    ):
        with pytest.raises(Rejected) as refused:
            admit(body, agent_policy, sent_as_json=True)
        seen.append(refused.value.code)
        fix()
    assert seen == ["UNSUPPORTED_PROTOCOL_VERSION", "MISSING_JOB_ID", "RUNTIME_NOT_SUPPORTED", "IMAGE_NOT_ALLOWED"]
    assert admit(body, agent_policy, sent_as_json=True).job_id == "j"


def test_an_accepted_job_runs_as_the_protocol_s_worker_runs_it(agent_policy: Policy) -> None:
    body = job(task={"type": "debug_echo", "payload": {"message": "héllo ✓"}})
    body["runtime"].update(
        cmd=["cat", 3, 2.0], env={"S": "x", "N": 5, "F": 1.5, "B": True, "GONE": None}, limits={"memory_mb": 100.2}
    )
    taken = admit(body, agent_policy, sent_as_json=True)
    spec = taken.spec
    assert (taken.job_id, taken.hatchway_id) == ("job-123", agent_job_id("job-123"))
    assert taken.hatchway_id.startswith("agent.job-123.")
    assert spec.command == ["cat", "3", "2"]  # String() of each part
    assert spec.env == {"S": "x", "N": "5", "F": "1.5", "B": "true"}  # null: not set
    assert (spec.limits.timeout_s, spec.limits.memory_mb) == (10, 101)  # absent: 10 s; whole MB, rounded up
    assert spec.image == IMAGE and spec.image_defaults is True
    assert spec.labels == {"source": "agent", "external_id": "job-123", "task_type": "debug_echo"}
    # The whole job on stdin, compact as JSON.stringify writes it, its characters unescaped.
    assert spec.stdin == json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    assert "héllo ✓" in (spec.stdin or "")


def test_without_cmd_the_image_s_own_command_runs(agent_policy: Policy) -> None:
    explicit_null = job()
    explicit_null["runtime"]["cmd"] = None
    for body in (runtime(cmd=[]), runtime(cmd=None), explicit_null):  # empty, absent, null
        spec = admit(body, agent_policy, sent_as_json=True).spec
        assert (spec.command, spec.image_defaults) == ([], True)


@pytest.mark.parametrize(("given", "timeout_s"), [(None, 10), (0, 10), ("", 10), (False, 10), (2.5, 2.5), ("4", 4)])
def test_max_runtime_seconds_is_the_timeout_and_absent_or_0_is_10_s(
    agent_policy: Policy, given: Any, timeout_s: float
) -> None:
    spec = admit(runtime(limits={"max_runtime_seconds": given}), agent_policy, sent_as_json=True).spec
    assert spec.limits.timeout_s == timeout_s


def test_only_a_body_hatchway_s_api_would_refuse_is_taken_for_the_protocol() -> None:
    assert is_agent_job(job())
    assert is_agent_job({"job_id": "x"}) and is_agent_job({"task": {}}) and is_agent_job({"runtime": {}})
    assert not is_agent_job({"image": IMAGE, "command": ["true"], "runtime": "gvisor", "id": "job-1"})
    assert not is_agent_job(["protocol_version"]) and not is_agent_job(None) and not is_agent_job("job_id")


def finished(make_job: Callable[..., Job], **fields: Any) -> Job:
    created = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    values: dict[str, Any] = {
        "id": agent_job_id("job-9"),
        "external_id": "job-9",
        "origin": "agent",
        "created_at": created,
        "started_at": created + timedelta(seconds=1),
        "finished_at": created + timedelta(seconds=3),
        "state": JobState.SUCCEEDED,
        "exit_code": 0,
        "stdout": "out",
        "worker_id": "w1",
    }
    values.update(fields)
    return make_job(**values)


def test_a_job_is_told_back_in_the_protocol_s_words(make_job: Callable[..., Job]) -> None:
    answer = record(finished(make_job))
    assert answer == {
        "job_id": "job-9",
        "state": "finished",
        "created_at": "2026-01-02T03:04:05.678Z",
        "started_at": "2026-01-02T03:04:06.678Z",
        "finished_at": "2026-01-02T03:04:08.678Z",
        "exit_code": 0,
        "stdout": "out",
        "stderr": "",
        "error": None,
        "hatchway_id": agent_job_id("job-9"),
        "worker_id": "w1",
        "engine": None,
        "reason": None,
        "duration_s": 2.0,
        "stdout_truncated": False,
        "stderr_truncated": False,
    }
    assert timestamp(datetime(2026, 1, 2, 4, 4, 5, tzinfo=UTC).astimezone()) == "2026-01-02T04:04:05.000Z"


@pytest.mark.parametrize(
    ("state", "protocol"),
    [
        (JobState.QUEUED, "queued"),
        (JobState.BUILDING, "running"),
        (JobState.RUNNING, "running"),
        (JobState.SUCCEEDED, "finished"),
        (JobState.FAILED, "failed"),
        (JobState.KILLED, "failed"),
    ],
)
def test_every_state_has_the_protocol_s_name(make_job: Callable[..., Job], state: JobState, protocol: str) -> None:
    assert record(finished(make_job, state=state))["state"] == protocol


@pytest.mark.parametrize(
    "case",
    [
        (JobState.FAILED, Reason.EXIT_CODE, 3, "NON_ZERO_EXIT", "Job exited with code 3"),
        (JobState.FAILED, Reason.TIMEOUT, 137, "TIMEOUT", "Job exceeded max_runtime_seconds"),
        (JobState.FAILED, Reason.IMAGE_NOT_FOUND, None, "DOCKER_ERROR", "hatchway's words"),
        (JobState.FAILED, Reason.ENGINE_ERROR, None, "DOCKER_ERROR", "hatchway's words"),
        (JobState.KILLED, Reason.CANCELLED, None, "CANCELLED", "Job was cancelled before it started running"),
        (JobState.KILLED, Reason.KILLED, 143, "CANCELLED", "Job was cancelled while it was running"),
        (JobState.FAILED, Reason.MEMORY_LIMIT, 137, "MEMORY_LIMIT", "hatchway's words"),
        (JobState.FAILED, Reason.WORKER_RESTART, None, "WORKER_RESTART", "hatchway's words"),
    ],
)
def test_a_failure_says_why_with_the_protocol_s_codes_where_they_mean_the_same(
    make_job: Callable[..., Job], case: tuple[JobState, Reason, int | None, str, str]
) -> None:
    state, reason, exit_code, code, message = case
    failed = finished(make_job, state=state, reason=reason, exit_code=exit_code, message="hatchway's words")
    assert error_of(failed) == {"code": code, "message": message}
    # Its worker reports no exit code for a job it stopped at its time limit; every other one as it was.
    assert record(failed)["exit_code"] == (None if reason is Reason.TIMEOUT else exit_code)
