"""Grading limits: what a client may ask for, the values a grading runs with, and the arithmetic between them
(defaults, maximums, a wall limit derived from a CPU limit, one test's own limits)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, model_validator

from hatchway.errors import LimitTooHigh


class GradeLimitTooHigh(LimitTooHigh, ValueError):
    """A grading limit (request-wide or one test's) is above the configured maximum; the message names each one.

    A `LimitTooHigh`, so the API answers 422, and a `ValueError` for callers that validate values generically.
    """


class TestLimits(Protocol):
    """What `resolve_limits` reads of one inline test: its name and its own limits."""

    @property
    def name(self) -> str: ...
    @property
    def time_limit_s(self) -> float | None: ...
    @property
    def memory_mb(self) -> int | None: ...


class RequestedGradeLimits(BaseModel):
    """Limits a client may ask for; absent fields take the worker's defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    time_limit_s: float | None = Field(default=None, gt=0, allow_inf_nan=False, description="CPU seconds per test.")
    wall_limit_s: float | None = Field(
        default=None, gt=0, allow_inf_nan=False, description="Wall seconds per test; 3 x time_limit_s + 1 if absent."
    )
    memory_mb: int | None = Field(default=None, ge=6, description="Memory per test, in MB.")
    output_bytes: int | None = Field(default=None, ge=0, description="Cap on what one test may print.")
    processes: int | None = Field(default=None, ge=1, description="Processes and threads a test may have at once.")
    compile_timeout_s: float | None = Field(
        default=None, gt=0, allow_inf_nan=False, description="Wall-clock seconds the compile step may take."
    )
    compile_memory_mb: int | None = Field(default=None, ge=6, description="Memory for the compile step, in MB.")
    compile_disk_mb: int | None = Field(
        default=None, ge=8, description="Disk for the compile step (the submission and what it writes), in MB."
    )


class GradeLimits(BaseModel):
    """Grading limits with every value decided. The defaults are the documented ones.

    A missing `wall_limit_s` is derived from `time_limit_s` as 3 x CPU + 1, so a program that waits or sleeps is
    stopped without cutting short one that is merely slow.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    time_limit_s: float = Field(default=2.0, gt=0, allow_inf_nan=False, description="CPU seconds per test.")
    wall_limit_s: float = Field(
        default=7.0, gt=0, allow_inf_nan=False, description="Wall-clock seconds per test (3 x CPU + 1 if not given)."
    )
    memory_mb: int = Field(default=256, ge=6, description="Memory per test, in MB.")
    output_bytes: int = Field(default=1024 * 1024, ge=0, description="Output a test may print.")
    processes: int = Field(default=64, ge=1, description="Processes and threads a test may have at once.")
    compile_timeout_s: float = Field(
        default=30.0, gt=0, allow_inf_nan=False, description="Wall-clock seconds the compile step may take."
    )
    compile_memory_mb: int = Field(default=1024, ge=6, description="Memory for the compile step, in MB.")
    compile_disk_mb: int = Field(
        default=256, ge=8, description="Disk for the compile step (the submission and what it writes), in MB."
    )

    @model_validator(mode="before")
    @classmethod
    def _derive_wall(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("wall_limit_s") is None and data.get("time_limit_s") is not None:
            return {**data, "wall_limit_s": default_wall_s(data["time_limit_s"])}
        return data


def default_wall_s(time_limit_s: float) -> float:
    """The wall limit that goes with a CPU limit when none is asked for: 3 x CPU + 1 seconds."""
    return 3 * time_limit_s + 1


def resolve_limits(
    requested: RequestedGradeLimits,
    defaults: GradeLimits,
    maximums: GradeLimits,
    *,
    tests: Sequence[TestLimits] = (),
) -> GradeLimits:
    """The limits a grading runs with: what was asked for, else the defaults.

    Raises `GradeLimitTooHigh` naming every requested value above its maximum, including the per-test
    `time_limit_s` and `memory_mb` of `tests`. A wall limit derived from a requested CPU limit is capped at the
    maximum wall limit instead of being refused, since the client did not ask for it.
    """
    asked = requested.model_dump(exclude_none=True)
    too_high = [
        f"limits.{name} = {value} is above the maximum {getattr(maximums, name)}"
        for name, value in asked.items()
        if value > getattr(maximums, name)
    ]
    for test in tests:
        for name in ("time_limit_s", "memory_mb"):
            value = getattr(test, name)
            if value is not None and value > getattr(maximums, name):
                too_high.append(f"test {test.name!r} {name} = {value} is above the maximum {getattr(maximums, name)}")
    if too_high:
        raise GradeLimitTooHigh("; ".join(too_high))
    values = defaults.model_dump() | asked
    if "wall_limit_s" not in asked and "time_limit_s" in asked:
        values["wall_limit_s"] = min(default_wall_s(asked["time_limit_s"]), maximums.wall_limit_s)
    return GradeLimits(**values)


def limits_for_test(
    limits: GradeLimits, maximums: GradeLimits, *, time_limit_s: float | None, memory_mb: int | None
) -> GradeLimits:
    """The limits one test runs with, given its own `time_limit_s` and `memory_mb` (None: the request's).

    A test's own CPU limit also widens its wall limit to 3 x CPU + 1 when that is more, up to the maximum, so a
    test given more CPU time is not cut short by the request-wide wall limit. The values must already have passed
    `resolve_limits`.
    """
    update: dict[str, Any] = {}
    if time_limit_s is not None:
        wall = max(limits.wall_limit_s, min(default_wall_s(time_limit_s), maximums.wall_limit_s))
        update |= {"time_limit_s": time_limit_s, "wall_limit_s": wall}
    if memory_mb is not None:
        update["memory_mb"] = memory_mb
    return GradeLimits.model_validate(limits.model_dump() | update)
