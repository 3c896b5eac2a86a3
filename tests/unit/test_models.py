"""`JobRequest` validation at the edge, and `Job.duration_s`."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from hatchway.models import Job, JobRequest, Limits

MakeRequest = Callable[..., JobRequest]
MakeJob = Callable[..., Job]
T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def rejected(make_request: MakeRequest, field: str, **fields: Any) -> str:
    """The validation message for a request that must be refused, checking it blames `field`."""
    with pytest.raises(ValidationError) as caught:
        make_request(**fields)
    locations = [str(error["loc"][0]) for error in caught.value.errors()]
    assert field in locations, f"expected an error on {field!r}, got {locations}"
    return str(caught.value)


def test_a_minimal_request_takes_the_defaults(make_request: MakeRequest) -> None:
    request = make_request()
    assert (request.id, request.workdir, request.network, request.priority) == (None, "/workspace", "none", 0)
    assert (request.env, request.files, request.labels, request.limits) == ({}, {}, {}, Limits())


def test_unknown_fields_are_rejected(make_request: MakeRequest) -> None:
    assert "Extra inputs are not permitted" in rejected(make_request, "timeout", timeout=5)


def test_unknown_limit_fields_are_rejected(make_request: MakeRequest) -> None:
    with pytest.raises(ValidationError, match="swap_mb"):
        make_request(limits={"swap_mb": 5})


@pytest.mark.parametrize("command", [[], ""], ids=["empty-list", "empty-string"])
def test_an_empty_command_is_rejected(make_request: MakeRequest, command: object) -> None:
    rejected(make_request, "command", command=command)


def test_the_image_is_required_and_non_empty(make_request: MakeRequest) -> None:
    rejected(make_request, "image", image="")


@pytest.mark.parametrize("path", ["/etc/passwd", "..", "../x", "a/../../x", "./../x", ".", "a/..", ""])
def test_file_paths_must_stay_inside_the_working_directory(make_request: MakeRequest, path: str) -> None:
    rejected(make_request, "files", files={path: "text"})


def test_file_paths_are_normalised(make_request: MakeRequest) -> None:
    request = make_request(files={"src/./pkg//main.py": "a", "b/../c.txt": "b"})
    assert request.files == {"src/pkg/main.py": "a", "c.txt": "b"}


@pytest.mark.parametrize(
    "workdir",
    ["/", "/proc", "/proc/self", "/sys", "/dev/shm", "/tmp", "/workspace/../proc", "/./", "workspace", "", "./w"],
)
def test_reserved_or_relative_workdirs_are_rejected(make_request: MakeRequest, workdir: str) -> None:
    rejected(make_request, "workdir", workdir=workdir)


@pytest.mark.parametrize("workdir", ["//", "//proc", "//sys/kernel"])
def test_a_double_slash_does_not_smuggle_in_a_reserved_workdir(make_request: MakeRequest, workdir: str) -> None:
    rejected(make_request, "workdir", workdir=workdir)


@pytest.mark.parametrize(
    ("workdir", "normal"), [("/workspace", "/workspace"), ("/srv/app/", "/srv/app"), ("/a/../b", "/b")]
)
def test_absolute_workdirs_are_normalised(make_request: MakeRequest, workdir: str, normal: str) -> None:
    assert make_request(workdir=workdir).workdir == normal


@pytest.mark.parametrize("name", ["A=B", "=", "", "A\x00"])
def test_env_names_with_equals_or_nul_are_rejected(make_request: MakeRequest, name: str) -> None:
    rejected(make_request, "env", env={name: "v"})


def test_ordinary_env_names_are_accepted(make_request: MakeRequest) -> None:
    assert make_request(env={"PATH": "/bin", "lower_ok": "1"}).env == {"PATH": "/bin", "lower_ok": "1"}


@pytest.mark.parametrize("job_id", ["", "-lead", ".hidden", "a b", "a/b", "a\n", "é", "x" * 129])
def test_ids_outside_the_pattern_are_rejected(make_request: MakeRequest, job_id: str) -> None:
    rejected(make_request, "id", id=job_id)


@pytest.mark.parametrize("job_id", ["a", "Job-1", "build_2024.05.01:3", "0" * 128])
def test_ids_inside_the_pattern_are_accepted(make_request: MakeRequest, job_id: str) -> None:
    assert make_request(id=job_id).id == job_id


@pytest.mark.parametrize("key", ["", "-x", "a b", "a:b", "k" * 64, "a\n"])
def test_label_keys_outside_the_pattern_are_rejected(make_request: MakeRequest, key: str) -> None:
    rejected(make_request, "labels", labels={key: "v"})


@pytest.mark.parametrize("key", ["team", "app.kubernetes.io/name", "a-b_c", "k" * 63])
def test_label_keys_inside_the_pattern_are_accepted(make_request: MakeRequest, key: str) -> None:
    assert make_request(labels={key: "v"}).labels == {key: "v"}


def test_label_values_are_capped_at_256_characters(make_request: MakeRequest) -> None:
    assert make_request(labels={"k": "v" * 256}).labels["k"] == "v" * 256
    rejected(make_request, "labels", labels={"k": "v" * 257})


@pytest.mark.parametrize(
    ("field", "fields"),
    [
        ("image", {"image": "alpine\x00:3"}),
        ("command", {"command": "echo \x00"}),
        ("command", {"command": ["echo", "a\x00b"]}),
        ("env", {"env": {"A": "x\x00"}}),
        ("files", {"files": {"a\x00b": "text"}}),
        ("workdir", {"workdir": "/work\x00space"}),
    ],
)
def test_nul_bytes_are_rejected(make_request: MakeRequest, field: str, fields: dict[str, Any]) -> None:
    rejected(make_request, field, **fields)


@pytest.mark.parametrize("priority", [-1_000_001, 1_000_001])
def test_priority_is_bounded(make_request: MakeRequest, priority: int) -> None:
    rejected(make_request, "priority", priority=priority)


@pytest.mark.parametrize(
    ("field", "value"), [("timeout_s", 0), ("memory_mb", 5), ("cpus", 0), ("pids", 0), ("output_bytes", -1)]
)
def test_limits_below_their_minimum_are_rejected(make_request: MakeRequest, field: str, value: float) -> None:
    rejected(make_request, "limits", limits={field: value})


def test_duration_is_none_before_the_job_starts(make_job: MakeJob) -> None:
    assert make_job().duration_s is None


def test_duration_of_a_finished_job_is_rounded_to_milliseconds(make_job: MakeJob) -> None:
    job = make_job(started_at=T0, finished_at=T0 + timedelta(seconds=2, microseconds=345_678))
    assert job.duration_s == 2.346


def test_duration_of_a_running_job_grows_with_the_clock(make_job: MakeJob) -> None:
    started = datetime.now(UTC) - timedelta(seconds=30)
    before = (datetime.now(UTC) - started).total_seconds()
    duration = make_job(started_at=started).duration_s
    after = (datetime.now(UTC) - started).total_seconds()
    assert duration is not None
    assert round(before, 3) <= duration <= round(after, 3)


def test_duration_is_part_of_the_serialised_job(make_job: MakeJob) -> None:
    job = make_job(started_at=T0, finished_at=T0 + timedelta(seconds=1.5))
    assert job.model_dump()["duration_s"] == 1.5


@pytest.mark.parametrize("command", [[""], ["   ", "x"], "  "])
def test_blank_program_is_rejected(command: list[str] | str) -> None:
    with pytest.raises(ValidationError, match="must name a program"):
        JobRequest(image="x", command=command)
