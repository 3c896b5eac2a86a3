"""The Fluster dialect's pure parts: a RunJob as a hatchway job (sources/fluster_request.py), a job as a JobStatus
(sources/fluster.py), and FetchLogs' filter (sources/fluster_logs.py), checked against the real worker's rules."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cloudpickle
import pytest
from pydantic import ValidationError

from hatchway.fluster import runner
from hatchway.fluster.proto import cluster_pb2 as pb
from hatchway.models import (
    JobRequest,
    JobSpec,
    JobState,
    JobSummary,
    Reason,
    ResolvedLimits,
    Resources,
    RunInfo,
    Stream,
)
from hatchway.output.line_times import LineTimes
from hatchway.settings.fluster import FlusterConfig
from hatchway.sources.fluster import job_status
from hatchway.sources.fluster_logs import Entry, entries, filtered
from hatchway.sources.fluster_request import (
    RUNNER_FILE,
    Refusal,
    job_request,
    memory_mb,
    needs_build_network,
    runner_source,
)
from tests.fakes.fluster_jobs import serialized_entrypoint

CONFIG = FlusterConfig(controller_url="http://10.0.0.5:10000", base_image="hatchway-test/fluster-python:latest")


def _run(**fields: Any) -> pb.Worker.RunJobRequest:
    return pb.Worker.RunJobRequest(
        job_id="train/step-1", attempt_id=2, serialized_entrypoint=b"\x80\x05pickle", **fields
    )


@pytest.mark.parametrize(
    ("text", "mb"),
    [("8g", 8192), ("8G", 8192), ("128m", 128), ("1024", 1024), ("512k", 1), ("1.5g", 1536), ("2gb", 2048), ("", None)],
)
def test_memory_reads_fluster_sizes_in_mib(text: str, mb: int | None) -> None:
    assert memory_mb(text) == mb


def test_memory_that_is_not_a_size_is_refused() -> None:
    with pytest.raises(Refusal, match="not a size"):
        memory_mb("lots")


def test_a_run_job_becomes_the_runner_with_the_entrypoint_as_a_file() -> None:
    request = job_request(
        _run(
            environment=pb.EnvironmentConfig(env_vars={"FLUSTER_NAMESPACE": "ns", "FLUSTER_JOB_ID": "spoofed"}),
            resources=pb.ResourceSpec(cpu=2, memory="1g"),
            timeout_seconds=30,
            ports=["actor", "http"],
            bundle_gcs_path="file:///bundles/b.zip",
        ),
        config=CONFIG,
        worker_id="w-1",
        host_network=True,
        bundle_url="file:///bundles/b.zip",
    )
    assert request.image == CONFIG.base_image
    assert request.command == ["python3", f"/workdir/{RUNNER_FILE}"]
    assert request.workdir == "/workdir"
    assert base64.b64decode(request.files[runner.ENTRYPOINT_FILE]) == b"\x80\x05pickle"
    assert "def main()" in request.files[RUNNER_FILE]
    assert request.bundle_url == "file:///bundles/b.zip"
    assert (request.limits.cpus, request.limits.memory_mb, request.limits.timeout_s) == (2.0, 1024, 30.0)
    assert request.network == "host" and request.ports == ["actor", "http"]
    assert request.env == {
        "FLUSTER_NAMESPACE": "ns",
        "FLUSTER_JOB_ID": "train/step-1",  # the worker's variables win over the request's
        "FLUSTER_ATTEMPT_ID": "2",
        "FLUSTER_WORKER_ID": "w-1",
        "FLUSTER_CONTROLLER_ADDRESS": "http://10.0.0.5:10000",
        "FLUSTER_BIND_HOST": "0.0.0.0",
        "FLUSTER_BUNDLE_GCS_PATH": "file:///bundles/b.zip",
        "PYTHONPATH": "/workdir",
    }


def test_pip_packages_are_an_image_built_on_the_base_with_the_build_network() -> None:
    config = CONFIG.model_copy(update={"build_network": True})
    run = _run(environment=pb.EnvironmentConfig(pip_packages=["numpy==2.0", "x; rm -rf /"]))
    request = job_request(run, config=config, worker_id="w", host_network=True, bundle_url=None)
    assert request.image is None and request.build is not None and needs_build_network(request)
    assert request.build.dockerfile == (
        f"FROM {CONFIG.base_image}\n"
        "RUN PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --no-cache-dir --no-input "
        "--disable-pip-version-check -- numpy==2.0 'x; rm -rf /'\n"
    )
    plain = job_request(_run(), config=config, worker_id="w", host_network=True, bundle_url=None)
    assert plain.image == CONFIG.base_image and not needs_build_network(plain)


def test_unset_resources_leave_the_worker_defaults() -> None:
    request = job_request(_run(), config=CONFIG, worker_id="w", host_network=False, bundle_url=None)
    assert request.limits.model_dump(exclude_none=True) == {}
    assert request.network == "none" and request.env["FLUSTER_BIND_HOST"] == "127.0.0.1"
    assert "FLUSTER_BUNDLE_GCS_PATH" not in request.env


@pytest.mark.parametrize(
    ("fields", "host_network", "words"),
    [
        ({"environment": pb.EnvironmentConfig(pip_packages=["numpy", "torch"])}, True, "numpy, torch"),
        ({"environment": pb.EnvironmentConfig(extras=["tpu"])}, True, "extras \\(tpu\\)"),
        ({"ports": ["actor"]}, False, "ports actor need the host network"),
        ({"environment": pb.EnvironmentConfig(env_vars={"HATCHWAY_JOB_ID": "x"})}, True, "HATCHWAY_JOB_ID"),
    ],
)
def test_what_hatchway_cannot_run_is_refused_saying_why(fields: dict[str, Any], host_network: bool, words: str) -> None:
    with pytest.raises(Refusal, match=words):
        job_request(_run(**fields), config=CONFIG, worker_id="w", host_network=host_network, bundle_url=None)


def _job(state: JobState, **fields: Any) -> JobSummary:
    spec = JobSpec(
        image="i",
        command=["python3"],
        env={},
        stdin=None,
        files={},
        workdir="/workdir",
        limits=ResolvedLimits(timeout_s=1, memory_mb=64, cpus=1, pids=64, output_bytes=1),
        network="host",
        priority=0,
        labels={},
    )
    labels = {"fluster.job_id": "train/step-1", "fluster.attempt_id": "3"}
    created = datetime(2026, 1, 1, tzinfo=UTC)
    return JobSummary(
        id="fluster.x", state=state, created_at=created, image="i", labels=labels, priority=0, spec=spec, **fields
    )


def test_a_job_as_a_status() -> None:
    started, finished = datetime(2026, 1, 1, 0, 0, 1, tzinfo=UTC), datetime(2026, 1, 1, 0, 0, 3, tzinfo=UTC)
    status = job_status(
        _job(
            JobState.SUCCEEDED,
            exit_code=0,
            started_at=started,
            finished_at=finished,
            run=RunInfo(ports={"actor": 31001}, image="base", image_cached=True),
            resources=Resources(memory_bytes=3 * 1024 * 1024, peak_memory_bytes=5 * 1024 * 1024, pids=4),
        )
    )
    assert (status.job_id, status.state, status.current_attempt_id) == ("train/step-1", pb.JOB_STATE_SUCCEEDED, 3)
    assert (status.started_at_ms, status.finished_at_ms) == (1767225601000, 1767225603000)
    assert status.exit_code == 0 and not status.error
    assert dict(status.ports) == {"actor": 31001}
    usage = status.resource_usage
    assert (usage.memory_mb, usage.memory_peak_mb, usage.process_count) == (3, 5, 4)
    assert status.build_metrics.image_tag == "base" and status.build_metrics.from_cache


@pytest.mark.parametrize(
    ("state", "fields", "exit_code", "error"),
    [
        (JobState.FAILED, {"reason": Reason.TIMEOUT, "message": "ran past 30 s"}, -1, "Timeout exceeded"),
        (JobState.FAILED, {"reason": Reason.EXIT_CODE, "exit_code": 3}, 3, "Exit code: 3"),
        (JobState.FAILED, {"reason": Reason.REFUSED, "message": "no gs"}, None, "no gs"),
        (JobState.KILLED, {"reason": Reason.KILLED, "message": "killed by a client"}, None, "killed by a client"),
    ],
)
def test_how_a_job_ended_in_the_real_workers_words(
    state: JobState, fields: dict[str, Any], exit_code: int | None, error: str
) -> None:
    status = job_status(_job(state, **fields))
    assert status.state == {JobState.FAILED: pb.JOB_STATE_FAILED, JobState.KILLED: pb.JOB_STATE_KILLED}[state]
    assert status.error == error
    assert (status.exit_code if status.HasField("exit_code") else None) == exit_code


def test_entries_are_every_line_in_time_order() -> None:
    texts = {Stream.STDOUT: "a\nb\n", Stream.STDERR: "e\n", Stream.BUILD: "built\nuntimed\n"}
    times = {Stream.STDOUT: LineTimes([(0, 20), (1, 40)]), Stream.STDERR: LineTimes([(0, 30)])}
    times[Stream.BUILD] = LineTimes([(0, 10)])
    assert entries(texts, times, unknown_ms=5) == [
        Entry(10, "build", "built"),
        Entry(10, "build", "untimed"),  # a line without a time follows the one before it
        Entry(20, "stdout", "a"),
        Entry(30, "stderr", "e"),
        Entry(40, "stdout", "b"),
    ]


LINES = [Entry(ms, "stdout", f"line {ms}") for ms in (100, 200, 200, 300, 400)]


@pytest.mark.parametrize(
    ("filter", "kept"),
    [
        ({}, [100, 200, 200, 300, 400]),
        ({"start_line": 3}, [300, 400]),
        ({"start_line": -2}, [300, 400]),  # a Python slice: the last two
        ({"start_line": -9}, [100, 200, 200, 300, 400]),
        ({"start_ms": 200}, [300, 400]),  # exclusive
        ({"end_ms": 200}, [100, 200, 200]),  # inclusive
        ({"regex": "[13]00$"}, [100, 300]),
        ({"max_lines": 2}, [100, 200]),
        ({"start_line": 1, "start_ms": 100, "end_ms": 300, "max_lines": 2}, [200, 200]),
    ],
)
def test_fetch_logs_filter_as_the_real_worker_applies_it(filter: dict[str, Any], kept: list[int]) -> None:
    assert [e.timestamp_ms for e in filtered(LINES, pb.Worker.FetchLogsFilter(**filter))] == kept


def test_a_pattern_re2_cannot_run_is_refused() -> None:
    with pytest.raises(ValueError, match="RE2"):
        filtered(LINES, pb.Worker.FetchLogsFilter(regex=r"(a)\1"))


def _runner_in(tmp_path: Path, entrypoint: bytes, **env: str) -> subprocess.CompletedProcess[str]:
    """The runner as a job runs it: its own file, in a working directory holding the entrypoint."""
    (tmp_path / ".fluster").mkdir()
    (tmp_path / RUNNER_FILE).write_text(runner_source())
    (tmp_path / runner.ENTRYPOINT_FILE).write_bytes(base64.b64encode(entrypoint))
    clean = {key: value for key, value in os.environ.items() if not key.startswith(("HATCHWAY_", "FLUSTER_"))}
    return subprocess.run(
        [sys.executable, RUNNER_FILE], cwd=tmp_path, env={**clean, **env}, capture_output=True, text=True, timeout=60
    )


def test_the_runner_calls_the_entrypoint_with_a_stand_in_class_and_keeps_the_result(tmp_path: Path) -> None:
    entry = serialized_entrypoint(os.getenv, "FLUSTER_PORT_ACTOR")
    done = _runner_in(tmp_path, entry, HATCHWAY_PORT_ACTOR="31007")
    assert done.returncode == 0, done.stderr
    assert cloudpickle.loads((tmp_path / "_result.pkl").read_bytes()) == "31007"
    assert (tmp_path / "out" / "_result.pkl").read_bytes() == (tmp_path / "_result.pkl").read_bytes()


def test_the_runner_fails_with_the_traceback_on_stderr(tmp_path: Path) -> None:
    done = _runner_in(tmp_path, serialized_entrypoint(int, "not a number"))
    assert done.returncode == 1
    assert done.stderr.startswith("Traceback (most recent call last):")
    assert done.stderr.rstrip().endswith("ValueError: invalid literal for int() with base 10: 'not a number'")
    assert not (tmp_path / "_result.pkl").exists()


@pytest.mark.parametrize(("field", "value"), [("build_network", "host"), ("build_context", "files")])
def test_no_client_can_ask_for_a_build_network_or_context(field: str, value: str) -> None:
    with pytest.raises(ValidationError, match=field):
        JobRequest.model_validate({"build": {"dockerfile": "FROM x\n"}, "command": ["true"], field: value})
