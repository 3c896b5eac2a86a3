"""The settings of hatchway as a worker of Fluster's cluster controller (issue 19; docs/fluster-plan.md): one
`fluster` block, off unless it names the controller."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator


class FlusterConfig(BaseModel):
    """Serve Fluster's `WorkerService` over Connect RPC and register with its controller."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    controller_url: str = Field(
        pattern=r"^https?://",
        description="The controller's base URL (its ControllerService); setting it turns the block on: registration, "
        "state reports, and "
        "FLUSTER_CONTROLLER_ADDRESS in jobs.",
    )
    worker_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        description="The id the controller knows this worker by; the worker's own worker_id if not given.",
    )
    advertise_address: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9.\-\[\]:]+:[0-9]{1,5}$",
        description="`host:port` where the controller reaches this worker's WorkerService; the API's host and port "
        "if not given.",
    )
    port_range: tuple[int, int] = Field(
        default=(30000, 40000),
        description="Ports a job's named ports are taken from (FLUSTER_PORT_<NAME>), from the first up to the "
        "second, exclusive, as the real worker does.",
    )
    base_image: str = Field(
        default="python:3.11-slim",
        min_length=1,
        description="The image a job's environment is built on: Python of the clients' version, with cloudpickle.",
    )
    build_network: bool = Field(
        default=False,
        description="Give a job's environment build the host's network, to install from an index what its bundle's "
        "pyproject.toml declares (dependencies, asked extras) and its pip_packages; off, a job that needs packages "
        "fails, naming them.",
    )
    gs_command: list[str] | None = Field(
        default=None,
        description="A command that copies a gs:// bundle to a local file (`{url}` and `{path}` are replaced), "
        "e.g. [gcloud, storage, cp, '{url}', '{path}']; without it a gs:// bundle fails its job clearly.",
    )
    rpc_timeout_s: float = Field(default=5.0, gt=0, le=300, description="Each call to the controller, at most.")
    register_retry_s: float = Field(
        default=5.0, gt=0, description="How long to wait before registering again after a refusal or failure."
    )
    heartbeat_s: float = Field(default=10.0, gt=0, description="How often to register again once accepted.")
    token: SecretStr | None = Field(
        default=None,
        description="Sent as a bearer token to the controller, if it asks for one (the real one does not).",
    )

    @field_validator("port_range")
    @classmethod
    def _sane_range(cls, value: tuple[int, int]) -> tuple[int, int]:
        low, high = value
        if not 1024 <= low < high <= 65536:
            raise ValueError(f"expected 1024 <= first < second <= 65536, got {low}, {high}")
        return value

    @field_validator("gs_command")
    @classmethod
    def _copies_somewhere(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not any("{path}" in part for part in value):
            raise ValueError("the command must name where the bundle goes: `{path}` in one of its words")
        return value
