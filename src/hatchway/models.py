"""Domain values: what a client asks for, the normalised spec a job runs with, and the job itself.

Everything here is validated once, at the edge (HTTP, CLI); inside the service these are trusted values.
"""

from __future__ import annotations

import posixpath
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, computed_field, field_validator, model_validator

from hatchway.fields import (
    CallbackUrl,
    CleanStr,
    EnvName,
    JobId,
    LabelKey,
    LabelValue,
    Placement,
    PortName,
    RelativePath,
    Runtime,
)
from hatchway.judge.report import GradeReport
from hatchway.judge.request import GradeSpec

RESERVED_ENV_PREFIX = "HATCHWAY_"
_FORBIDDEN_WORKDIRS = ("/proc", "/sys", "/dev", "/tmp", "/.hatchway")


class JobState(StrEnum):
    """Where a job is in its life. The last three are final."""

    QUEUED = "queued"
    BUILDING = "building"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    KILLED = "killed"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATES


FINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.KILLED})
ACTIVE_STATES = frozenset({JobState.BUILDING, JobState.RUNNING})


class Reason(StrEnum):
    """Why a job ended; a succeeded job has no reason."""

    EXIT_CODE = "exit_code"
    """The command exited with a non-zero code (see `exit_code`)."""
    TIMEOUT = "timeout"
    """The job ran past `limits.timeout_s` and the worker stopped it."""
    MEMORY_LIMIT = "memory_limit"
    """The kernel killed the job for using more than `limits.memory_mb`."""
    OUTPUT_LIMIT = "output_limit"
    """stdout or stderr went past `limits.output_bytes`; the worker stopped the job."""
    DISK_LIMIT = "disk_limit"
    """The job filled its disk (`limits.disk_mb`: the working directory and /tmp together) and failed."""
    KILLED = "killed"
    """A client killed the running job (DELETE /jobs/{id})."""
    CANCELLED = "cancelled"
    """A client killed the job before it started; it never ran."""
    IMAGE_NOT_FOUND = "image_not_found"
    """The image is not on the worker and the registry says it does not exist."""
    IMAGE_PULL_FAILED = "image_pull_failed"
    """The image is not on the worker and pulling it failed (registry unreachable, timeout, access)."""
    BUILD_FAILED = "build_failed"
    """Building the job's image from its Dockerfile failed; see the `build` log stream."""
    BAD_BUNDLE = "bad_bundle"
    """The job's bundle could not be used: download, checksum, or a hostile or broken archive."""
    ENGINE_ERROR = "engine_error"
    """The container engine failed; `message` has its words."""
    REFUSED = "refused"
    """Its source handed out an item hatchway cannot run (malformed, or asking for what this worker does not
    allow); it never ran, and the source is told why."""
    WORKER_RESTART = "worker_restart"
    """The worker restarted while the job ran and its container was gone, so the result is lost."""
    WORKER_LOST = "worker_lost"
    """The worker running the job stopped renewing its lease in the fleet (died, or cut off from the store) and
    another worker took its jobs over: the job's container is on the lost worker, so its result is lost."""
    SHUTDOWN = "shutdown"
    """The worker shut down and the job did not finish within the shutdown grace period."""


class Stream(StrEnum):
    """An output stream of a job."""

    STDOUT = "stdout"
    STDERR = "stderr"
    BUILD = "build"
    """What building the job's image printed."""


PROGRAM_STREAMS = (Stream.STDOUT, Stream.STDERR)


def _workdir(value: str) -> str:
    if not value.startswith("/") or "\x00" in value:
        raise ValueError("workdir must be an absolute path")
    normal = "/" + posixpath.normpath(value).lstrip("/")  # normpath keeps a leading "//"
    if normal == "/" or any(normal == d or normal.startswith(d + "/") for d in _FORBIDDEN_WORKDIRS):
        raise ValueError(f"workdir {value!r} is reserved; use a directory such as /workspace")
    return normal


class Limits(BaseModel):
    """Resource limits a client may ask for; absent fields take the worker's defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    timeout_s: float | None = Field(default=None, gt=0, description="Wall-clock limit in seconds.")
    memory_mb: int | None = Field(default=None, ge=6, description="Memory limit; swap is not allowed.")
    cpus: float | None = Field(default=None, gt=0, description="CPU quota in cores, e.g. 0.5.")
    pids: int | None = Field(default=None, ge=1, description="Maximum number of processes and threads.")
    output_bytes: int | None = Field(default=None, ge=0, description="Cap on each of stdout and stderr.")
    disk_mb: int | None = Field(default=None, ge=1, description="Space for the working directory and /tmp together.")


class ResolvedLimits(BaseModel):
    """Limits with every value decided: what the container really runs with."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    timeout_s: float = Field(gt=0, description="Wall-clock limit in seconds.")
    memory_mb: int = Field(ge=6, description="Memory limit in MB; swap is not allowed.")
    cpus: float = Field(gt=0, description="CPU quota in cores, e.g. 0.5.")
    pids: int = Field(ge=1, description="Maximum number of processes and threads.")
    output_bytes: int = Field(ge=0, description="Cap on each of stdout and stderr.")
    # A default: specs stored before the disk limit existed had 1 GiB.
    disk_mb: int = Field(default=1024, ge=1, description="Space for the working directory and /tmp together, in MB.")


class BuildSpec(BaseModel):
    """An image built for the job from a Dockerfile; the result is cached by a hash of its inputs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dockerfile: str = Field(min_length=1, max_length=256 * 1024, description="The Dockerfile's text.")
    files: dict[RelativePath, str] = Field(
        default_factory=dict, description="Build context: relative path -> text (a bundle's files are added too)."
    )


class JobRequest(BaseModel):
    """The body of POST /jobs: what a client asks to run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: JobId | None = Field(
        default=None, description="Client-chosen id; resubmitting the same id returns the existing job."
    )
    image: CleanStr | None = Field(
        default=None, min_length=1, max_length=512, description="Required unless `build` is given."
    )
    build: BuildSpec | None = Field(default=None, description="Build the image from a Dockerfile instead.")
    command: list[CleanStr] | CleanStr = Field(
        min_length=1, description="Argument list, or one string run with /bin/sh -c."
    )
    env: dict[EnvName, CleanStr] = Field(default_factory=dict)
    stdin: str | None = None
    files: dict[RelativePath, str] = Field(
        default_factory=dict, description="Relative path -> text, written into the working directory."
    )
    bundle_url: Annotated[str, Field(pattern=r"^(https?|file)://", max_length=4096)] | None = Field(
        default=None, description="A .tar.gz, .tar or .zip unpacked into the working directory (http, https, file)."
    )
    bundle_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = None
    workdir: Annotated[str, AfterValidator(_workdir)] = "/workspace"
    limits: Limits = Field(default_factory=Limits)
    network: Literal["none", "host"] = "none"
    runtime: Runtime = Field(
        default="auto", description="docker (runc), gvisor (runsc), or auto: the worker's configured default."
    )
    ports: list[PortName] = Field(
        default_factory=list, max_length=32, description="Names of host ports to allocate; needs network host."
    )
    priority: int = Field(default=0, ge=-1_000_000, le=1_000_000, description="Higher runs first.")
    labels: dict[LabelKey, LabelValue] = Field(default_factory=dict)
    placement: Placement = Field(
        default_factory=dict,
        description="Run only on a worker whose labels include all these (see docs/jobs.md, Placement).",
    )
    callback_url: CallbackUrl | None = Field(
        default=None,
        description="POSTed the job's JSON once it has ended (http or https; see docs/jobs.md, Callbacks).",
    )

    @field_validator("command")
    @classmethod
    def _program_named(cls, value: list[str] | str) -> list[str] | str:
        program = value[0] if isinstance(value, list) else value
        if not program.strip():
            raise ValueError("the command must name a program (it is empty or blank)")
        return value

    @field_validator("env")
    @classmethod
    def _not_reserved(cls, value: dict[str, str]) -> dict[str, str]:
        reserved = sorted(name for name in value if name.startswith(RESERVED_ENV_PREFIX))
        if reserved:
            raise ValueError(f"{', '.join(reserved)}: names starting with {RESERVED_ENV_PREFIX} are set by the worker")
        return value

    @field_validator("ports")
    @classmethod
    def _unique_ports(cls, value: list[str]) -> list[str]:
        if len({name.upper() for name in value}) != len(value):
            raise ValueError("port names must be unique (case-insensitively)")
        return value

    @model_validator(mode="after")
    def _image_or_build(self) -> JobRequest:
        if (self.image is None) == (self.build is None):
            raise ValueError("give exactly one of `image` and `build`")
        if self.bundle_sha256 is not None and self.bundle_url is None:
            raise ValueError("bundle_sha256 needs bundle_url")
        if self.ports and self.network != "host":
            raise ValueError('ports need network "host"')
        return self


JobKind = Literal["job", "grade"]


class JobSpec(BaseModel):
    """A normalised request: the command is an argument list and every limit is decided."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: JobKind = Field(default="job", description="job: one command; grade: compile once, then judge tests.")
    image: str | None
    build: BuildSpec | None = None
    command: list[str]
    image_defaults: bool = Field(
        default=False,
        description="Run as `docker run IMAGE [command]` does: an empty command is the image's own (ENTRYPOINT and "
        "CMD), the working directory is the image's WORKDIR (the job's writable directory is still mounted at "
        "`workdir`), and never in a pool. The worker-agent protocol's jobs are so.",
    )
    env: dict[str, str]
    stdin: str | None
    files: dict[str, str]
    bundle_url: str | None = None
    bundle_sha256: str | None = None
    workdir: str
    limits: ResolvedLimits
    network: Literal["none", "host"]
    runtime: Literal["docker", "gvisor"] = "docker"
    build_network: Literal["none", "host"] = Field(
        default="none",
        description="The network its image build's steps have: none, unless a job source the operator allows it "
        "gives its builds the host's (Fluster's fluster.build_network). No client can ask for it.",
    )
    build_context: Literal["bundle", "files"] = Field(
        default="bundle",
        description="What its image build's context holds: the job's bundle and the build's files, or the build's "
        "files alone (Fluster's environment images, which depend on what a bundle declares, not on its code, so "
        "that one image serves every bundle declaring the same). No client can ask for it.",
    )
    ports: list[str] = Field(default_factory=list)
    priority: int
    labels: dict[str, str]
    placement: dict[str, str] = Field(
        default_factory=dict, description="Only a worker whose labels include all these runs it."
    )
    grade: GradeSpec | None = Field(default=None, description="For a grade: what to compile and judge, and how.")
    callback_url: str | None = Field(default=None, description="Where the job's final state is POSTed.")


class Resources(BaseModel):
    """What the job uses or used, where the engine can tell (null otherwise); live while it runs."""

    model_config = ConfigDict(frozen=True)

    memory_bytes: int | None = None
    peak_memory_bytes: int | None = None
    cpu_s: float | None = None
    pids: int | None = None


class RunInfo(BaseModel):
    """How the worker prepared and started the job, recorded when it starts running."""

    model_config = ConfigDict(frozen=True)

    engine: str | None = Field(default=None, description="The engine the job really ran on: docker or gvisor.")
    image: str | None = Field(default=None, description="The image it ran, e.g. the tag of a built image.")
    image_cached: bool | None = Field(default=None, description="Whether the image was already there.")
    bundle_cached: bool | None = None
    prepare_s: float | None = Field(default=None, description="Seconds spent preparing: image, bundle, files.")
    ports: dict[str, int] = Field(default_factory=dict, description="Port name -> allocated host port.")
    warnings: list[str] = Field(default_factory=list)
    pooled: bool = Field(default=False, description="Whether a started container from a pool ran it.")
    sandbox: str | None = Field(default=None, description="The pooled container it ran in (its label), if one did.")


class CallbackState(StrEnum):
    """Where the delivery of a job's callback stands."""

    PENDING = "pending"
    """Not delivered yet: the job has not ended, or the receiver has not answered 2xx and the retry window is open."""
    DELIVERED = "delivered"
    """The receiver answered 2xx."""
    FAILED = "failed"
    """Given up: the receiver refused it (a 4xx other than 408 and 429), or kept failing past `callback_retry_s`."""


class CallbackStatus(BaseModel):
    """The delivery of a job's final state to its `callback_url`, as far as it has gone."""

    model_config = ConfigDict(frozen=True)

    url: str
    delivery_id: str = Field(description="Sent as X-Hatchway-Delivery, the same on every attempt: deduplicate by it.")
    state: CallbackState = CallbackState.PENDING
    attempts: int = Field(default=0, description="POSTs made so far.")
    last_status: int | None = Field(default=None, description="The HTTP status of the last answer (null: none).")
    last_error: str | None = Field(default=None, description="Why the last attempt failed, if it did.")
    last_attempt_at: datetime | None = None
    next_attempt_at: datetime | None = Field(default=None, description="When a pending delivery is tried again.")
    delivered_at: datetime | None = None


class JobSummary(BaseModel):
    """A job without its output: what a listing returns (`GET /jobs`), since a job's stdout, stderr and build
    output may each hold up to tens of MiB, and a page holds up to 500 jobs."""

    model_config = ConfigDict(frozen=True)

    id: str
    state: JobState
    reason: Reason | None = None
    message: str | None = Field(default=None, description="Human-readable detail on how the job ended.")
    exit_code: int | None = None
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    worker_id: str | None = None
    image: str | None
    labels: dict[str, str]
    priority: int
    resources: Resources = Field(default_factory=Resources)
    run: RunInfo = Field(default_factory=RunInfo)
    grade: GradeReport | None = Field(default=None, description="For a grade: its verdicts, once it has ended.")
    origin: str | None = Field(default=None, description="The job source it came from (null: the HTTP API).")
    external_id: str | None = Field(default=None, description="Its id at that source (a task's or submission's).")
    reported_at: datetime | None = Field(default=None, description="When its result reached its source.")
    callback: CallbackStatus | None = Field(
        default=None, description="The delivery of its final state to `callback_url`, if it has one."
    )
    spec: JobSpec

    @computed_field  # type: ignore[prop-decorator]
    @property
    def kind(self) -> JobKind:
        """job or grade."""
        return self.spec.kind

    @computed_field  # type: ignore[prop-decorator]
    @property
    def engine(self) -> str | None:
        """The engine the job ran on."""
        return self.run.engine

    @computed_field  # type: ignore[prop-decorator]
    @property
    def ports(self) -> dict[str, int]:
        """Port name -> allocated host port."""
        return self.run.ports

    @computed_field  # type: ignore[prop-decorator]
    @property
    def duration_s(self) -> float | None:
        """Seconds the job ran: so far while running, in total once finished."""
        if self.started_at is None:
            return None
        end = self.finished_at or datetime.now(UTC)
        return round((end - self.started_at).total_seconds(), 3)


class Job(JobSummary):
    """A job as the store keeps it and every endpoint but the listing returns it: with its output."""

    stdout: str = ""
    stderr: str = ""
    build_output: str = Field(default="", description="What building the job's image printed (logs stream `build`).")
    launched_at: datetime | None = Field(
        default=None,
        description="When its worker began to start its process (recorded before it could run): a job claimed "
        "but not yet running that has this may have run, so a fleet never runs it again in another worker's place.",
    )

    def summary(self) -> JobSummary:
        """The job without its output."""
        return JobSummary(**{name: getattr(self, name) for name in JobSummary.model_fields})


class Outcome(BaseModel):
    """How a job ended: everything `finish` records at once."""

    model_config = ConfigDict(frozen=True)

    state: JobState
    reason: Reason | None = None
    message: str | None = None
    exit_code: int | None = None
    stdout: str = ""
    stderr: str = ""
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    build_output: str = ""
    resources: Resources = Field(default_factory=Resources)
    grade: GradeReport | None = None
    output_times: dict[Stream, list[int]] = Field(default_factory=dict)
    """When each line was written, per stream: `LineTimes.encode()` (see output/line_times.py)."""


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


def from_epoch(value: float | None) -> datetime | None:
    """A stored epoch timestamp as an aware datetime."""
    return None if value is None else datetime.fromtimestamp(value, UTC)


def to_epoch(value: datetime | None) -> float | None:
    """An aware datetime as an epoch timestamp for storage."""
    return None if value is None else value.timestamp()


def new_job_id() -> str:
    """A fresh, unique job id."""
    return uuid.uuid4().hex


# Grading's values are built from the values above; importing them here completes JobSpec, Job and Outcome.
