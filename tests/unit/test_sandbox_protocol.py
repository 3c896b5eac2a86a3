"""The supervisor protocol's Python half: request encoding and validation, result and ready-line parsing."""

from __future__ import annotations

import json
from typing import Any

import pytest

from hatchway.sandbox.protocol import (
    PROTOCOL_VERSION,
    ProtocolError,
    RequestRejected,
    RunRequest,
    RunStatus,
    SupervisorMode,
    encode_ping,
    parse_pong,
    parse_ready,
    parse_result,
)


def make_request(**overrides: Any) -> RunRequest:
    values: dict[str, Any] = {"argv": ("prog",), "uid": 1000, "gid": 1000}
    values.update(overrides)
    return RunRequest(**values)


def result_line(**overrides: Any) -> bytes:
    obj: dict[str, Any] = {
        "id": "t1",
        "status": "exited",
        "exit_code": 0,
        "signal": None,
        "cpu_us": 1500,
        "wall_us": 2_000_000,
        "memory_bytes": 4096,
        "oom_killed": False,
        "cpu_exceeded": False,
        "wall_exceeded": False,
        "output_exceeded": False,
        "error": None,
    }
    obj.update(overrides)
    return json.dumps(obj).encode()


def fields(encoded: bytes) -> list[str]:
    assert encoded.endswith(b"\0\0")
    return encoded[:-2].decode().split("\0")


def test_a_full_request_encodes_every_field_once_and_ends_with_an_empty_field() -> None:
    request = RunRequest(
        argv=("python3", "-c", "print(1)"),
        uid=65534,
        gid=65533,
        id="test-7",
        env={"PATH": "/usr/bin", "A": "b=c"},
        cpu_time_s=1.5,
        wall_time_s=0.0001,
        memory_bytes=256 << 20,
        processes=32,
        file_size_bytes=1 << 20,
        stack_bytes=64 << 20,
        stdin_path="/in",
        stdout_path="/out",
        stderr_path="/err",
        scratch=True,
    )
    assert fields(request.encode()) == [
        "run",
        "id=test-7",
        "uid=65534",
        "gid=65533",
        "cpu_ms=1500",
        "wall_ms=1",  # rounded up: a limit never becomes "none"
        f"mem_bytes={256 << 20}",
        "procs=32",
        f"fsize_bytes={1 << 20}",
        f"stack_bytes={64 << 20}",
        "stdin=/in",
        "stdout=/out",
        "stderr=/err",
        "scratch=1",
        "env=PATH=/usr/bin",
        "env=A=b=c",
        "arg=python3",
        "arg=-c",
        "arg=print(1)",
    ]


def test_absent_limits_are_sent_as_zero_and_absent_paths_are_left_out() -> None:
    assert fields(make_request(cwd="/work").encode()) == [
        "run",
        "id=",
        "uid=1000",
        "gid=1000",
        "cpu_ms=0",
        "wall_ms=0",
        "mem_bytes=0",
        "procs=0",
        "fsize_bytes=0",
        "stack_bytes=0",
        "cwd=/work",
        "arg=prog",
    ]


def test_non_ascii_values_are_sent_as_utf8() -> None:
    assert "arg=héllo".encode() in make_request(argv=("prog", "héllo")).encode()


@pytest.mark.parametrize(
    "overrides",
    [
        {"argv": ("a\0b",)},
        {"argv": ("prog", "x\0")},
        {"env": {"A": "x\0y"}},
        {"env": {"A\0": "x"}},
        {"id": "a\0"},
        {"stdout_path": "/tmp/\0"},
        {"cwd": "/\0"},
    ],
)
def test_a_nul_anywhere_is_refused(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="NUL"):
        make_request(**overrides)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"argv": ()}, "argv"),
        ({"argv": ("",)}, "argv"),
        ({"uid": 0}, "uid"),
        ({"gid": 0}, "gid"),
        ({"uid": -1}, "uid"),
        ({"uid": 2**32 - 1}, "uid"),
        ({"uid": True}, "uid"),
        ({"env": {"": "x"}}, "name"),
        ({"env": {"A=B": "x"}}, "name"),
        ({"cpu_time_s": 0}, "cpu_time_s"),
        ({"wall_time_s": -1.0}, "wall_time_s"),
        ({"wall_time_s": float("inf")}, "wall_time_s"),
        ({"memory_bytes": 0}, "memory_bytes"),
        ({"processes": -5}, "processes"),
        ({"file_size_bytes": 0}, "file_size_bytes"),
        ({"stdout_path": ""}, "stdout_path"),
        ({"cwd": "/w", "scratch": True}, "exclude"),
    ],
)
def test_invalid_requests_are_refused_with_the_field_named(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_request(**overrides)


def test_a_request_does_not_change_when_the_callers_dict_does() -> None:
    env = {"A": "1"}
    request = make_request(env=env)
    env["B"] = "2"
    assert dict(request.env) == {"A": "1"}
    with pytest.raises(TypeError):
        request.env["C"] = "3"  # type: ignore[index]


def test_ping_encoding_and_pong() -> None:
    assert encode_ping() == b"ping\0\0"
    parse_pong(b'{"pong":true}\n')
    with pytest.raises(ProtocolError):
        parse_pong(b'{"pong":false}')
    with pytest.raises(RequestRejected, match="unknown verb"):
        parse_pong(b'{"error":"unknown verb pin"}')


def test_a_result_line_is_parsed_into_seconds_and_enums() -> None:
    result = parse_result(result_line(status="signaled", exit_code=None, signal=9, wall_exceeded=True) + b"\n")
    assert result.id == "t1"
    assert result.status is RunStatus.SIGNALED
    assert result.exit_code is None
    assert result.signal == 9
    assert result.cpu_s == pytest.approx(0.0015)
    assert result.wall_s == pytest.approx(2.0)
    assert result.memory_bytes == 4096
    assert result.wall_exceeded and not result.oom_killed
    assert result.error is None


def test_an_exec_failure_keeps_its_error() -> None:
    result = parse_result(result_line(status="exec_failed", exit_code=127, error="exec x: ENOENT"))
    assert result.status is RunStatus.EXEC_FAILED
    assert result.exit_code == 127
    assert result.error == "exec x: ENOENT"


def test_a_refused_request_raises_request_rejected() -> None:
    with pytest.raises(RequestRejected, match="uid and gid must not be 0"):
        parse_result(b'{"error":"uid and gid must not be 0"}\n')


@pytest.mark.parametrize(
    "line",
    [
        b"",
        b"not json",
        b"\xff\xfe",
        b"[1, 2]",
        b'{"pong":true}',
        result_line(status="vanished"),
        result_line(cpu_us=True),
        result_line(cpu_us=1.5),
        result_line(oom_killed=0),
        result_line(exit_code="0"),
        result_line(error=5),
        json.dumps({"id": "x", "status": "exited"}).encode(),
    ],
)
def test_garbage_raises_protocol_error(line: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_result(line)


def test_the_ready_line() -> None:
    ready = parse_ready(b'{"ready":true,"version":1,"mode":"cgroup"}\n')
    assert ready.version == PROTOCOL_VERSION
    assert ready.mode is SupervisorMode.CGROUP
    assert parse_ready(b'{"ready":true,"version":1,"mode":"proc"}').mode is SupervisorMode.PROC


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b'{"ready":false,"error":"--cgroup /x: No such file"}', "did not start: --cgroup /x"),
        (b'{"ready":true,"version":2,"mode":"proc"}', "protocol 2"),
        (b'{"ready":true,"version":1,"mode":"jail"}', "unknown mode"),
        (b'{"pong":true}', "not a ready line"),
        (b"", "not JSON"),
    ],
)
def test_a_bad_ready_line_says_what_is_wrong(line: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        parse_ready(line)
