"""The one settings object, read once at start-up from an optional YAML file and HATCHWAY_* variables.

Environment variables win over the file. Nested keys use a double underscore:
``HATCHWAY_DEFAULT_LIMITS__TIMEOUT_S=30`` sets ``default_limits.timeout_s``.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from hatchway.judge.limits import GradeLimits
from hatchway.judge.profiles import ProfileOverrides
from hatchway.settings.fluster import FlusterConfig
from hatchway.settings.values import (
    CAPABILITIES,
    ENV_PREFIX,
    ORIGIN,
    RUNTIMES,
    TOKEN_MIN_LENGTH,
    ApiToken,
    DefaultLimits,
    GradeMaxLimits,
    MaxLimits,
    PoolConfig,
    RedisUrl,
    RuntimeName,
    SourceConfig,
    StoreUrl,
    default_data_dir,
)


class Settings(BaseSettings):
    """Everything the worker is configured with."""

    # hide_input_in_errors: a rejected value may be an API token, and no error message shows one.
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", frozen=True, hide_input_in_errors=True
    )

    worker_id: str = Field(
        default_factory=socket.gethostname,
        min_length=1,
        max_length=128,
        description="This worker's name: in labels, logs, the store and the controller.",
        json_schema_extra={"shown_default": "the host name"},
    )
    host: str = Field(
        default="127.0.0.1", description="Address the API listens on; another than loopback needs api_tokens."
    )
    port: int = Field(default=8080, ge=0, le=65535, description="Port the API listens on.")
    data_dir: Path = Field(
        default_factory=default_data_dir,
        description="The SQLite file, job disks, live output, artifacts and caches.",
        json_schema_extra={"shown_default": "`$XDG_DATA_HOME/hatchway`, else `~/.local/share/hatchway`"},
    )
    store_url: StoreUrl | None = Field(
        default=None,
        description="Where jobs are kept: a PostgreSQL database that a fleet of workers shares (docs/fleet.md). "
        "Unset, one worker keeps them in SQLite under data_dir.",
    )
    docker_url: str | None = Field(default=None, description="Docker Engine address; DOCKER_HOST if unset.")
    api_tokens: list[ApiToken] = Field(
        default_factory=list,
        description="Bearer tokens the API accepts; with none, the API is open (see docs/security.md).",
    )
    allow_unauthenticated: bool = Field(
        default=False, description="Serve without api_tokens on an address that is not loopback."
    )
    api_allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Host names (comma-separated) the API answers besides loopback ones, its listen address and "
        "advertise_url's host; checked without api_tokens, or with them once given; `*`: any (see docs/api.md).",
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Web origins (`http://host:port`, comma-separated; `*`: any) whose pages may call the API from "
        "a browser, such as the worker-agent dashboard's (see docs/security.md); none by default.",
    )

    max_concurrent_jobs: int = Field(default=4, ge=1, le=1024, description="Jobs and gradings running at once.")
    allowed_images: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["*"], description="Glob patterns; an image matching none is refused."
    )
    allow_host_network: bool = Field(default=False, description='Let jobs ask for network "host".')
    run_as_user: str = Field(default="65534:65534", min_length=1, description="uid:gid jobs run as.")
    max_input_bytes: int = Field(default=32 * 1024 * 1024, ge=0, description="Cap on stdin plus files.")

    default_limits: DefaultLimits = Field(default_factory=DefaultLimits)
    max_limits: MaxLimits = Field(default_factory=MaxLimits)

    default_runtime: RuntimeName = Field(default="docker", description='What a job asking for runtime "auto" gets.')
    allowed_runtimes: Annotated[list[RuntimeName], NoDecode] = Field(
        default_factory=lambda: list(RUNTIMES), description="Runtimes jobs may ask for (comma-separated)."
    )
    gvisor_fallback: bool = Field(
        default=False, description="Run a job that asked for gvisor on docker when gvisor is unavailable."
    )
    gvisor_runtime: str = Field(default="runsc", description="The Docker runtime name gVisor is registered as.")
    redis_url: RedisUrl | None = Field(
        default=None,
        description="The queue-pull platform's event bus (Redis pub/sub) for every tasks source that names none.",
    )
    controller_url: str | None = Field(
        default=None, description="A controller to register with and heartbeat to; injected into jobs too."
    )
    heartbeat_interval_s: float = Field(default=10.0, gt=0, description="How often the controller hears from us.")
    advertise_url: str | None = Field(
        default=None,
        description="The address (http://host:port) the other workers of a fleet and the controller reach this "
        "worker at.",
        json_schema_extra={"shown_default": "`http://host:port` (the host name for a wildcard `host`)"},
    )
    labels: dict[str, str] = Field(
        default_factory=dict,
        description="This worker's labels: jobs' placement constraints match them; in the fleet's registry "
        "(GET /workers), and told to the controller.",
    )
    worker_labels: dict[str, str] = Field(
        default_factory=dict, description="The older name of `labels`, merged into it (`labels` wins a key)."
    )
    worker_lease_s: float = Field(
        default=30.0,
        ge=1.0,
        le=3600.0,
        description="A worker's lease in the fleet, renewed every third of it: a worker that has not renewed it "
        "for this long is taken for lost, and another takes its jobs over (docs/fleet.md).",
    )
    port_range: tuple[int, int] = Field(default=(20000, 29999), description="Host ports jobs' `ports` come from.")

    bundle_allowed_urls: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["https://*", "http://*"],
        description="Glob patterns a bundle_url must match; file:// bundles need a pattern of their own.",
    )
    callback_allowed_urls: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["https://*", "http://*"],
        description="Glob patterns a callback_url must match (http and https only).",
    )
    allowed_private_networks: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Networks (CIDRs, comma-separated) bundle, problem and callback URLs may reach although not "
        "public: loopback, private, link-local, CGNAT ... are refused otherwise (see docs/security.md).",
    )
    allowed_private_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Origins (`scheme://host:port`, comma-separated) bundle, problem and callback URLs may reach "
        "whatever address they resolve to; redirects elsewhere are checked again.",
    )
    callback_secret: SecretStr | None = Field(
        default=None,
        description="Signs every callback (X-Hatchway-Signature), 16 characters or more; without it they go unsigned.",
    )
    callback_retry_s: float = Field(
        default=3600.0, ge=0, description="How long after a job ends its callback is retried (0: one attempt)."
    )
    callback_timeout_s: float = Field(default=10.0, gt=0, description="How long one callback attempt may take.")
    bundle_max_bytes: int = Field(default=256 * 1024 * 1024, ge=1, description="Largest bundle download.")
    bundle_timeout_s: float = Field(default=120.0, gt=0, description="Longest a bundle download may take.")
    bundle_max_unpacked_bytes: int = Field(
        default=1024 * 1024 * 1024, ge=1, description="Largest a bundle may be once unpacked (and the job's disk)."
    )
    bundle_max_files: int = Field(default=20_000, ge=1, description="Most files a bundle may hold.")
    build_context_max_bytes: int = Field(
        default=128 * 1024 * 1024,
        ge=1,
        description="Largest a bundle may unpack to when it is a build's context (held in memory, twice, to build).",
    )
    bundle_cache_bytes: int = Field(
        default=4 * 1024**3,
        ge=0,
        description="Disk budget for downloaded bundles and problem archives: beyond it the least recently used "
        "are removed (checked every minute), except those used in the last 10 minutes.",
    )
    image_cache_bytes: int = Field(
        default=20 * 1024**3, ge=0, description="Disk budget for images hatchway built or pulled (LRU)."
    )
    build_timeout_s: float = Field(
        default=600.0, gt=0, description="Longest building a job's image may take (or the job's timeout_s if less)."
    )
    build_capabilities: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Capabilities a build's RUN steps get (comma-separated, e.g. CHOWN,DAC_OVERRIDE,FOWNER,SETUID,"
        "SETGID for package managers); none by default. Each is granted to untrusted code.",
    )
    build_disk_unlimited: bool = Field(
        default=False,
        description="Build images on a worker that cannot limit a build's disk to the job's disk_mb (the engine's "
        "storage is not overlay2 or not reachable); otherwise such a worker refuses builds.",
    )
    artifacts_max_bytes: int = Field(default=64 * 1024 * 1024, ge=0, description="Per job, from out/.")
    artifacts_max_files: int = Field(
        default=1000, ge=0, description="Per job, from out/: the files and directories kept (each an inode for days)."
    )
    artifacts_retention_s: float = Field(
        default=7 * 24 * 3600.0, gt=0, description="How long a job's artifacts are kept after it ends."
    )
    grade_default_limits: GradeLimits = Field(
        default_factory=GradeLimits, description="Limits a grading gets when it asks for none (per test)."
    )
    grade_max_limits: GradeMaxLimits = Field(default_factory=GradeMaxLimits)
    profiles: ProfileOverrides = Field(
        default_factory=dict, description="Language profiles: a built-in one's fields to change, or new ones by name."
    )

    kill_grace_s: float = Field(default=5.0, ge=0, description="SIGTERM-to-SIGKILL delay for kills.")
    shutdown_grace_s: float = Field(default=30.0, ge=0, description="How long running jobs may finish.")
    image_pull_timeout_s: float = Field(default=300.0, gt=0, description="Longest pulling an image may take.")
    max_wait_s: float = Field(default=3600.0, gt=0, description="Longest ?wait=true a client may ask.")
    grader_pool_worker: bool = Field(
        default=False,
        description="Serve as a worker of the grader pool's orchestrator: POST /grade in its dialect answers with "
        "the result once graded, as its workers do (see docs/compatibility.md).",
    )
    events_keep: int = Field(
        default=100_000, ge=1, description="Lifecycle events kept for GET /events to replay (the newest)."
    )
    poll_interval_s: float = Field(
        default=5.0,
        gt=0,
        description="The safety net of the store's wake-ups: how often, though nothing woke them, the scheduler "
        "looks for queued jobs, event streams read on and the worker looks for stops asked of its jobs.",
    )
    log_level: str = Field(default="INFO", description="DEBUG, INFO, WARNING, ERROR or CRITICAL (logs are JSON lines).")

    pools: list[PoolConfig] = Field(
        default_factory=list, description="Pools of started containers (see docs/operations.md)."
    )
    sources: list[SourceConfig] = Field(
        default_factory=list, description="Masters to pull work from (see docs/sources.md)."
    )
    fluster: FlusterConfig | None = Field(
        default=None,
        description="Be a worker of Fluster's cluster controller: its WorkerService over Connect RPC, registration "
        "and state reports (see docs/fluster-plan.md).",
    )
    pool_warm_total: int = Field(
        default=4, ge=0, description="Started containers kept in total for images that ran recently (0: none)."
    )
    pool_warm_size: int = Field(default=1, ge=0, description="Started containers kept per recently run image.")
    pool_warm_idle_s: float = Field(
        default=600.0, gt=0, description="How long a recently run image keeps its pool without a job."
    )

    @model_validator(mode="before")
    @classmethod
    def _older_label_name(cls, data: Any) -> Any:
        """`worker_labels`, as `labels` was called before fleets placed jobs by them, still counts."""
        if isinstance(data, dict):
            older, newer = data.get("worker_labels"), data.get("labels")
            if isinstance(older, dict) and older and (newer is None or isinstance(newer, dict)):
                data = {**data, "labels": {**older, **(newer or {})}}
        return data

    @property
    def address(self) -> str:
        """Where the other workers of a fleet and the controller reach this worker: `advertise_url`, else the
        address it listens on (by the host's name if it listens on every address)."""
        if self.advertise_url:
            return self.advertise_url.rstrip("/")
        host = socket.gethostname() if self.host in ("", "0.0.0.0", "::") else self.host
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    @property
    def peer_token(self) -> str | None:
        """The token this worker shows the other workers of its fleet when it reads from them (a job's live
        output): its first API token, as the workers of a fleet share theirs; None with an open API."""
        return self.api_tokens[0].token.get_secret_value() if self.api_tokens else None

    @field_validator(
        "allowed_images",
        "allowed_runtimes",
        "bundle_allowed_urls",
        "callback_allowed_urls",
        "api_allowed_hosts",
        "allowed_private_networks",
        "allowed_private_origins",
        "build_capabilities",
        mode="before",
    )
    @classmethod
    def _split_patterns(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _web_origins(cls, value: Any) -> Any:
        """Origins as a browser writes them in `Origin` (lower case, no path, no final slash), or `*`."""
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, list):
            return value
        origins = [str(item).strip().rstrip("/").lower() for item in value]
        bad = [origin for origin in origins if origin != "*" and not ORIGIN.match(origin)]
        if bad:
            raise ValueError(f"{bad}: an origin is scheme://host[:port] (http or https, no path), or *")
        return origins

    @field_validator("allowed_private_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for index, network in enumerate(value):
            try:
                ipaddress.ip_network(network)
            except ValueError as exc:
                raise ValueError(f"entry {index}, {network!r}, is not a network such as 10.0.0.0/8: {exc}") from None
        return value

    @field_validator("allowed_private_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        for index, origin in enumerate(value):
            if not re.fullmatch(r"https?://[^/?#@\s]+/?", origin):
                raise ValueError(f"entry {index}, {origin!r}, is not an origin such as http://10.0.0.5:8000")
        return value

    @field_validator("build_capabilities")
    @classmethod
    def _known_capabilities(cls, value: list[str]) -> list[str]:
        names = [name.upper().removeprefix("CAP_") for name in value]
        unknown = [name for name in names if name not in CAPABILITIES]
        if unknown:
            raise ValueError(f"unknown capabilities {', '.join(unknown)}; known are {', '.join(CAPABILITIES)}")
        return sorted(set(names))

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return level

    @field_validator("port_range", mode="before")
    @classmethod
    def _parse_range(cls, value: Any) -> Any:
        if isinstance(value, str):
            low, _, high = value.partition("-")
            return (low.strip(), high.strip())
        return value

    @field_validator("port_range")
    @classmethod
    def _sane_range(cls, value: tuple[int, int]) -> tuple[int, int]:
        low, high = value
        if not 1024 <= low <= high <= 65535:
            raise ValueError("must be LOW-HIGH with 1024 <= LOW <= HIGH <= 65535")
        return value

    @field_validator("callback_secret")
    @classmethod
    def _usable_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value().strip()) < TOKEN_MIN_LENGTH:
            raise ValueError(f"must be at least {TOKEN_MIN_LENGTH} characters long (openssl rand -hex 32 makes one)")
        return value

    @field_validator("api_tokens")
    @classmethod
    def _distinct_tokens(cls, value: list[ApiToken]) -> list[ApiToken]:
        secrets = [token.token.get_secret_value() for token in value]
        for index, secret in enumerate(secrets):
            if secret in secrets[:index]:
                raise ValueError(f"entry {index} repeats the token of entry {secrets.index(secret)}")
        return value

    @model_validator(mode="after")
    def _defaults_within_maximums(self) -> Settings:
        for defaults, maximums in (("default_limits", "max_limits"), ("grade_default_limits", "grade_max_limits")):
            for name, default in getattr(self, defaults).model_dump().items():
                maximum = getattr(getattr(self, maximums), name)
                if default > maximum:
                    raise ValueError(f"{defaults}.{name} ({default}) is above {maximums}.{name} ({maximum})")
        if self.default_runtime not in self.allowed_runtimes:
            raise ValueError(f"default_runtime {self.default_runtime!r} is not in allowed_runtimes")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment first, so a variable overrides the same key in the YAML file (passed as init values).
        return (env_settings, init_settings)
