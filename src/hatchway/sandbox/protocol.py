"""The wire protocol of the sandbox supervisor (`supervisor/`, C): requests hatchway writes to its stdin, result lines
it writes to its stdout.

A request is a sequence of NUL-terminated fields ended by an empty field (so ``b"\\0\\0"`` closes the last one). The
first field is the verb:

- ``ping`` is answered with ``{"pong":true}``.
- ``run`` takes ``key=value`` fields: ``id``, ``cpu_ms``, ``wall_ms``, ``mem_bytes``, ``procs``, ``fsize_bytes``,
  ``stack_bytes`` (0 or absent means no limit; for the stack, the limit the container started with), ``uid`` and
  ``gid`` (required, never 0), ``stdin``, ``stdout``, ``stderr`` (paths inside the container; /dev/null by
  default), ``cwd`` or ``scratch=1`` (a fresh private directory as cwd and ``TMPDIR``), ``env=NAME=VALUE``
  (repeated; the program gets exactly these) and ``arg=...`` (repeated; argv, the first is the program, looked up
  in the request's ``PATH`` or ``/usr/local/bin:/usr/bin:/bin``).

Output files are created (truncated) by the supervisor, mode 0600, before it drops privileges; the program never
runs as root, has no capabilities and inherits no descriptor but 0, 1 and 2.

Every request gets exactly one JSON line back. A run result has a ``status``; a request the supervisor could not
accept gets ``{"error": "..."}`` instead, and the supervisor keeps serving. At start it prints
``{"ready":true,"version":1,"mode":"cgroup"|"proc"}``, or ``{"ready":false,"error":"..."}`` and exits.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from hatchway.errors import HatchwayError

PROTOCOL_VERSION = 1
"""The version the supervisor announces in its ready line; both sides change it together."""

DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
"""Where the supervisor looks for a program named without a slash when the request's environment has no PATH."""


class ProtocolError(HatchwayError):
    """The supervisor sent something that is not a valid answer: garbage, a wrong version, or it failed to start."""


class RequestRejected(ProtocolError):
    """The supervisor understood the line but refused the request (``{"error": ...}``); the message says why."""


class RunStatus(StrEnum):
    """How a run ended."""

    EXITED = "exited"
    """The program (its main process) exited; `exit_code` is set."""
    SIGNALED = "signaled"
    """A signal ended the program (a limit's SIGKILL included); `signal` is set."""
    EXEC_FAILED = "exec_failed"
    """The program could not be started; `exit_code` is 127 (not found) or 126 (found, not executable)."""
    SETUP_FAILED = "setup_failed"
    """The supervisor could not prepare the run (a stdout path it cannot create, a cgroup it cannot make)."""


class SupervisorMode(StrEnum):
    """How the supervisor confines and measures runs."""

    CGROUP = "cgroup"
    """A fresh cgroup v1 per run: the kernel enforces memory and processes, counters are the run's alone."""
    PROC = "proc"
    """No cgroups (gVisor): CPU from rusage, memory sampled from /proc, processes by RLIMIT_NPROC."""


@dataclass(frozen=True)
class Ready:
    """The supervisor's first line: it is serving, with this protocol version and mode."""

    version: int
    mode: SupervisorMode


def _to_ms(seconds: float | None, name: str) -> int:
    if seconds is None:
        return 0
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{name} must be a positive number of seconds or None, not {seconds!r}")
    return max(1, math.ceil(seconds * 1000))


def _positive(value: int | None, name: str) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer or None, not {value!r}")
    return value


def _no_nul(value: str, name: str) -> None:
    if "\0" in value:
        raise ValueError(f"{name} contains a NUL character: {value!r}")


@dataclass(frozen=True, kw_only=True)
class RunRequest:
    """One program to run under limits. None means "no limit"; paths are inside the container.

    Validated on construction (so `encode` cannot fail): a value with NUL, an empty argv, uid or gid 0, a limit
    that is not positive, or both `cwd` and `scratch` raise ValueError.
    """

    argv: tuple[str, ...]
    uid: int
    gid: int
    id: str = ""
    env: Mapping[str, str] = field(default_factory=dict)
    cpu_time_s: float | None = None
    wall_time_s: float | None = None
    memory_bytes: int | None = None
    processes: int | None = None
    file_size_bytes: int | None = None
    stack_bytes: int | None = None
    """None: the stack limit the container starts with."""
    stdin_path: str | None = None
    stdout_path: str | None = None
    stderr_path: str | None = None
    cwd: str | None = None
    scratch: bool = False

    def __post_init__(self) -> None:
        # A frozen copy: the caller's dict changing later must not change what was validated.
        object.__setattr__(self, "argv", tuple(self.argv))
        object.__setattr__(self, "env", MappingProxyType(dict(self.env)))
        if not self.argv or not self.argv[0]:
            raise ValueError("argv needs at least the program, and it must not be empty")
        for position, arg in enumerate(self.argv):
            _no_nul(arg, f"argv[{position}]")
        for name, value in self.env.items():
            if not name or "=" in name:
                raise ValueError(f"environment variable name {name!r} is empty or contains '='")
            _no_nul(name, "an environment variable name")
            _no_nul(value, f"environment variable {name}")
        for ident, label in ((self.uid, "uid"), (self.gid, "gid")):
            if isinstance(ident, bool) or not isinstance(ident, int) or not 0 < ident < 2**32 - 1:
                raise ValueError(f"{label} must be an id between 1 and 2**32-2 (never root), not {ident!r}")
        _no_nul(self.id, "id")
        for path, label in (
            (self.stdin_path, "stdin_path"),
            (self.stdout_path, "stdout_path"),
            (self.stderr_path, "stderr_path"),
            (self.cwd, "cwd"),
        ):
            if path is not None:
                if not path:
                    raise ValueError(f"{label} is empty; use None for the default")
                _no_nul(path, label)
        if self.cwd is not None and self.scratch:
            raise ValueError("cwd and scratch exclude each other: with scratch the scratch directory is the cwd")
        _to_ms(self.cpu_time_s, "cpu_time_s")
        _to_ms(self.wall_time_s, "wall_time_s")
        _positive(self.memory_bytes, "memory_bytes")
        _positive(self.processes, "processes")
        _positive(self.file_size_bytes, "file_size_bytes")
        _positive(self.stack_bytes, "stack_bytes")

    def encode(self) -> bytes:
        """The request as the supervisor reads it: NUL-terminated fields, closed by an empty field."""
        fields = [
            "run",
            f"id={self.id}",
            f"uid={self.uid}",
            f"gid={self.gid}",
            f"cpu_ms={_to_ms(self.cpu_time_s, 'cpu_time_s')}",
            f"wall_ms={_to_ms(self.wall_time_s, 'wall_time_s')}",
            f"mem_bytes={_positive(self.memory_bytes, 'memory_bytes')}",
            f"procs={_positive(self.processes, 'processes')}",
            f"fsize_bytes={_positive(self.file_size_bytes, 'file_size_bytes')}",
            f"stack_bytes={_positive(self.stack_bytes, 'stack_bytes')}",
        ]
        for key, path in (
            ("stdin", self.stdin_path),
            ("stdout", self.stdout_path),
            ("stderr", self.stderr_path),
            ("cwd", self.cwd),
        ):
            if path is not None:
                fields.append(f"{key}={path}")
        if self.scratch:
            fields.append("scratch=1")
        fields.extend(f"env={name}={value}" for name, value in self.env.items())
        fields.extend(f"arg={arg}" for arg in self.argv)
        return b"".join(f.encode() + b"\0" for f in fields) + b"\0"


@dataclass(frozen=True)
class RunResult:
    """What one run did, measured for that run alone."""

    id: str
    status: RunStatus
    exit_code: int | None
    signal: int | None
    cpu_s: float
    """CPU time of every process of the run, user and system."""
    wall_s: float
    """From just before exec to the end of the main process: the supervisor's setup (joining the run's cgroups can
    wait milliseconds for the kernel after a pause) is not the program's time. The wall limit counts from there."""
    memory_bytes: int
    """Peak memory: the run's cgroup peak (cgroup mode), or the largest of the main process's peak RSS and the
    sampled sum over the run's processes (proc mode)."""
    oom_killed: bool
    cpu_exceeded: bool
    wall_exceeded: bool
    output_exceeded: bool
    """Killed by SIGXFSZ, or stdout or stderr reached the file size limit."""
    error: str | None
    """Why a run failed to start, or a clean-up problem (the status then still says how it ended). Clean-up that
    happens after the answer (scratch, wiped directories, the run's cgroups) reports a failure in the next run's
    answer, which is `setup_failed` if the sandbox is no longer usable."""


def encode_ping() -> bytes:
    """The ping request."""
    return b"ping\0\0"


def _load(line: bytes) -> dict[str, Any]:
    try:
        value = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"the supervisor sent a line that is not JSON: {line[:200]!r}") from exc
    if not isinstance(value, dict):
        raise ProtocolError(f"the supervisor sent JSON that is not an object: {line[:200]!r}")
    return value


def _get(obj: dict[str, Any], key: str, kind: type | tuple[type, ...], *, nullable: bool = False) -> Any:
    if key not in obj:
        raise ProtocolError(f"the supervisor's answer lacks {key!r}: {obj!r}")
    value = obj[key]
    if value is None and nullable:
        return None
    # bool is an int subclass; a flag in a number field (or the reverse) is a bug on the other side.
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ProtocolError(f"the supervisor's {key!r} is {value!r}, not of the expected type")
    return value


def parse_ready(line: bytes) -> Ready:
    """The supervisor's first line. Raises ProtocolError if it failed to start or speaks another version."""
    obj = _load(line)
    if obj.get("ready") is not True:
        reason = obj.get("error")
        raise ProtocolError(f"the supervisor did not start: {reason}" if reason else f"not a ready line: {obj!r}")
    version = _get(obj, "version", int)
    if version != PROTOCOL_VERSION:
        raise ProtocolError(f"the supervisor speaks protocol {version}, hatchway speaks {PROTOCOL_VERSION}")
    mode = _get(obj, "mode", str)
    try:
        return Ready(version=version, mode=SupervisorMode(mode))
    except ValueError as exc:
        raise ProtocolError(f"the supervisor runs in an unknown mode {mode!r}") from exc


def parse_pong(line: bytes) -> None:
    """Check the answer to a ping."""
    obj = _load(line)
    _raise_if_rejected(obj)
    if obj.get("pong") is not True:
        raise ProtocolError(f"expected a pong, got {obj!r}")


def _raise_if_rejected(obj: dict[str, Any]) -> None:
    if "status" not in obj and "pong" not in obj and isinstance(obj.get("error"), str):
        raise RequestRejected(f"the supervisor rejected the request: {obj['error']}")


def parse_result(line: bytes) -> RunResult:
    """The answer to a run request. Raises RequestRejected if the supervisor refused it, ProtocolError on garbage."""
    obj = _load(line)
    _raise_if_rejected(obj)
    status = _get(obj, "status", str)
    try:
        run_status = RunStatus(status)
    except ValueError as exc:
        raise ProtocolError(f"the supervisor reports an unknown status {status!r}") from exc
    return RunResult(
        id=_get(obj, "id", str),
        status=run_status,
        exit_code=_get(obj, "exit_code", int, nullable=True),
        signal=_get(obj, "signal", int, nullable=True),
        cpu_s=_get(obj, "cpu_us", int) / 1e6,
        wall_s=_get(obj, "wall_us", int) / 1e6,
        memory_bytes=_get(obj, "memory_bytes", int),
        oom_killed=_get(obj, "oom_killed", bool),
        cpu_exceeded=_get(obj, "cpu_exceeded", bool),
        wall_exceeded=_get(obj, "wall_exceeded", bool),
        output_exceeded=_get(obj, "output_exceeded", bool),
        error=_get(obj, "error", str, nullable=True),
    )
