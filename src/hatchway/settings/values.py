"""The values the settings are made of: limits, pools, job sources, API tokens and their roles, the URLs of the
services a worker talks to, and the names and constants they share (the `Settings` object is in settings/worker.py)."""

from __future__ import annotations

import os
import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from hatchway.judge.limits import GradeLimits, RequestedGradeLimits
from hatchway.models import Limits, ResolvedLimits

ENV_PREFIX = "HATCHWAY_"
RuntimeName = Literal["docker", "gvisor"]
RUNTIMES: tuple[RuntimeName, ...] = ("docker", "gvisor")
TOKEN_MIN_LENGTH = 16
CAPABILITIES = (
    "AUDIT_CONTROL", "AUDIT_READ", "AUDIT_WRITE", "BLOCK_SUSPEND", "BPF", "CHECKPOINT_RESTORE", "CHOWN",
    "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "IPC_LOCK", "IPC_OWNER", "KILL", "LEASE",
    "LINUX_IMMUTABLE", "MAC_ADMIN", "MAC_OVERRIDE", "MKNOD", "NET_ADMIN", "NET_BIND_SERVICE", "NET_BROADCAST",
    "NET_RAW", "PERFMON", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_ADMIN", "SYS_BOOT", "SYS_CHROOT",
    "SYS_MODULE", "SYS_NICE", "SYS_PACCT", "SYS_PTRACE", "SYS_RAWIO", "SYS_RESOURCE", "SYS_TIME",
    "SYS_TTY_CONFIG", "SYSLOG", "WAKE_ALARM",
)  # fmt: skip
"""Linux's capabilities by name, as `build_capabilities` takes them (with or without CAP_)."""
API_SOURCE = "api"
"""The HTTP API's name among the job sources (`GET /sources`); no configured source may take it."""
AGENT_SOURCE = "agent"
"""The origin of the jobs a master of the worker-agent system posts in its Job Protocol (api/agent_protocol.py):
their ids are `agent.<the master's job_id>.<digest>`, a namespace no configured source may take."""
ORIGIN = re.compile(r"^https?://[a-z0-9.-]+(:[0-9]{1,5})?$|^https?://\[[0-9a-f:.]+\](:[0-9]{1,5})?$")


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "hatchway"


class DefaultLimits(ResolvedLimits):
    """Limits a job gets when it asks for none; setting one key keeps the others' defaults."""

    timeout_s: float = Field(default=60.0, gt=0)
    memory_mb: int = Field(default=256, ge=6)
    cpus: float = Field(default=1.0, gt=0)
    pids: int = Field(default=256, ge=1)
    output_bytes: int = Field(default=1024 * 1024, ge=0)
    disk_mb: int = Field(default=1024, ge=1)


class MaxLimits(ResolvedLimits):
    """The most a job may ask for; setting one key keeps the others' defaults."""

    timeout_s: float = Field(default=24 * 3600.0, gt=0)
    memory_mb: int = Field(default=16 * 1024, ge=6)
    cpus: float = Field(
        default_factory=lambda: float(os.cpu_count() or 1), gt=0, json_schema_extra={"shown_default": "all CPUs"}
    )
    pids: int = Field(default=4096, ge=1)
    output_bytes: int = Field(default=64 * 1024 * 1024, ge=0)
    disk_mb: int = Field(default=64 * 1024, ge=1)


class GradeMaxLimits(GradeLimits):
    """The most a grading may ask for; setting one key keeps the others' defaults."""

    time_limit_s: float = Field(default=30.0, gt=0)
    wall_limit_s: float = Field(default=120.0, gt=0)
    memory_mb: int = Field(default=4096, ge=6)
    output_bytes: int = Field(default=64 * 1024 * 1024, ge=0)
    processes: int = Field(default=1024, ge=1)
    compile_timeout_s: float = Field(default=300.0, gt=0)
    compile_memory_mb: int = Field(default=8192, ge=6)
    compile_disk_mb: int = Field(default=8192, ge=8)


class PoolConfig(BaseModel):
    """A pool of started containers kept ready for plain jobs on one image and runtime."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    image: str = Field(min_length=1, description="The image its containers run; jobs naming it are served from it.")
    runtime: RuntimeName = Field(default="docker", description="The runtime its containers run on.")
    size: int = Field(default=2, ge=0, le=256, description="How many idle containers it keeps ready.")
    reuse_jobs: int = Field(
        default=0, ge=0, description="Jobs a container serves after its first (0: one use, then replaced)."
    )
    disk_mb: int | None = Field(
        default=None, ge=1, description="Each container's disk; jobs asking for more take the cold path."
    )


RedisUrl = Annotated[
    str,
    Field(
        pattern=r"^(redis|rediss|unix)://",
        max_length=4096,
        description="redis://[:password@]host:port/db, rediss:// (TLS) or unix:///path.",
    ),
]

StoreUrl = Annotated[
    str,
    Field(
        pattern=r"^postgres(ql)?://",
        max_length=4096,
        description="postgresql://user[:password]@host:port/database[?options] (libpq's URI form).",
    ),
]


class SourceConfig(BaseModel):
    """A master hatchway pulls work from (see docs/sources.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}$",
        description="Its name: in labels, logs, /sources (not `api`: the HTTP API's, a source too).",
    )
    kind: Literal["tasks", "submissions"] = Field(
        description="tasks: the queue-pull worker's queue service; submissions: the submission judge's master."
    )
    url: str = Field(pattern=r"^https?://", description="The master's base URL.")
    api_key: SecretStr | None = Field(default=None, description="Sent as X-API-Key.")
    poll_interval_s: float = Field(default=2.0, gt=0, description="How long to wait when the master has no work.")
    profile: str = Field(
        default="python", description="tasks: the language profile that runs a task's code when it names no language."
    )
    runtime: Literal["docker", "gvisor"] = Field(default="docker", description="For items that name no engine.")
    gvisor_fallback: bool = Field(
        default=False, description="Run an item that asks for gVisor on docker when gVisor does not work here."
    )
    limits: Limits = Field(default_factory=Limits, description="Limits for the jobs it brings (defaults otherwise).")
    languages: dict[Annotated[str, Field(min_length=1, max_length=64)], str] = Field(
        default_factory=dict,
        description="A submission's `lang` (or `compiler`), a task's `language` -> language profile, over the "
        "built-in map.",
    )
    grade_limits: RequestedGradeLimits = Field(
        default_factory=RequestedGradeLimits,
        description="submissions: limits for its gradings (grade_default_limits otherwise).",
    )
    request_timeout_s: float = Field(default=30.0, gt=0, description="Longest one request to the master may take.")
    points: Literal["passed", "percent"] = Field(
        default="passed",
        description="submissions: what a result's `points` counts: passed (the tests passed, as the submission "
        "judge's own worker counts) or percent (the score in percent of the maximum, 0 to 100).",
    )
    redis_url: RedisUrl | None = Field(
        default=None,
        description="tasks: the queue-pull platform's event bus (Redis pub/sub), where each task's lifecycle and "
        "output are published (the worker's redis_url otherwise; neither: none are).",
    )

    @model_validator(mode="after")
    def _redis_for_tasks(self) -> SourceConfig:
        if self.redis_url is not None and self.kind != "tasks":
            raise ValueError(f"redis_url: only a tasks source publishes events; {self.name!r} is {self.kind}")
        if self.points != "passed" and self.kind != "submissions":
            raise ValueError(f"points: only a submissions source reports points; {self.name!r} is {self.kind}")
        return self

    @field_validator("name")
    @classmethod
    def _not_the_api(cls, value: str) -> str:
        if value == API_SOURCE:
            raise ValueError(f"{API_SOURCE!r} is the HTTP API's name in /sources; give this source another")
        if value == AGENT_SOURCE:
            raise ValueError(f"{AGENT_SOURCE!r} names the worker-agent protocol's jobs; give this source another")
        return value


class Role(StrEnum):
    """What an API token may do. Each role may do everything the ones before it may."""

    READ = "read"
    """Look: every GET (jobs, logs, artifacts, gradings, images, profiles, pools, health details, info, docs)."""
    SUBMIT = "submit"
    """Plus create jobs and gradings."""
    ADMIN = "admin"
    """Plus kill jobs and gradings, import images, and anything else that changes the worker."""

    def allows(self, needed: Role) -> bool:
        """Whether a token with this role may do what needs `needed`."""
        order = list(Role)
        return order.index(self) >= order.index(needed)


class ApiToken(BaseModel):
    """A bearer token the HTTP API accepts, and its role. The secret never shows in a repr, log or error."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    token: SecretStr = Field(description="The secret; or give token_file, a file holding it.")
    role: Role = Field(description="read (GET), submit (plus jobs and gradings) or admin (plus kill, images).")
    name: str | None = Field(
        default=None, min_length=1, max_length=128, description="Who holds it, for logs (never the token itself)."
    )

    @model_validator(mode="before")
    @classmethod
    def _read_token_file(cls, value: Any) -> Any:
        if not isinstance(value, dict) or "token_file" not in value:
            return value
        fields = dict(value)
        path = fields.pop("token_file")
        if "token" in fields:
            raise ValueError("give token or token_file, not both")
        try:
            fields["token"] = Path(str(path)).read_text().strip()
        except OSError as exc:
            raise ValueError(f"token_file: cannot read {path}: {exc.strerror}") from None
        return fields

    @field_validator("token")
    @classmethod
    def _long_enough(cls, value: SecretStr) -> SecretStr:
        secret = value.get_secret_value()
        if len(secret) < TOKEN_MIN_LENGTH:
            raise ValueError(f"must be at least {TOKEN_MIN_LENGTH} characters long")
        if secret != secret.strip() or any(not char.isprintable() for char in secret):
            raise ValueError("must hold no whitespace at either end and no control characters")
        return value

    @property
    def label(self) -> str:
        """How logs name the token's holder."""
        return self.name or f"unnamed {self.role} token"
