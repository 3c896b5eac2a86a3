"""Factories shared by the unit tests: a policy, requests and queued jobs built the way the service builds them; and
`store`, each of the three job stores in turn (the store contract's tests run on every one)."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from hatchway.jobs.policy import Policy
from hatchway.models import Job, JobRequest, JobState, ResolvedLimits, utcnow
from hatchway.store import JobStore, MemoryStore, SqliteStore
from hatchway.store.postgres import PostgresStore
from tests.postgres_db import fresh_schema

DEFAULT_LIMITS = ResolvedLimits(timeout_s=60, memory_mb=256, cpus=1.0, pids=256, output_bytes=1024 * 1024)
MAX_LIMITS = ResolvedLimits(timeout_s=3600, memory_mb=4096, cpus=4.0, pids=4096, output_bytes=64 * 1024 * 1024)
MAX_INPUT_BYTES = 1000


@pytest.fixture
def make_policy() -> Callable[..., Policy]:
    """Build a `Policy`; keyword arguments override the test defaults."""

    def make(**overrides: Any) -> Policy:
        options: dict[str, Any] = {
            "allowed_images": ["*"],
            "allow_host_network": False,
            "default_limits": DEFAULT_LIMITS,
            "max_limits": MAX_LIMITS,
            "max_input_bytes": MAX_INPUT_BYTES,
        }
        options.update(overrides)
        return Policy(**options)

    return make


@pytest.fixture
def policy(make_policy: Callable[..., Policy]) -> Policy:
    return make_policy()


@pytest.fixture
def make_request() -> Callable[..., JobRequest]:
    """Build a valid `JobRequest`; keyword arguments override any field."""

    def make(**overrides: Any) -> JobRequest:
        fields: dict[str, Any] = {"image": "alpine:3", "command": ["echo", "hi"]}
        fields.update(overrides)
        return JobRequest(**fields)

    return make


@pytest.fixture
def make_job(policy: Policy) -> Callable[..., Job]:
    """Build a queued `Job` whose spec the policy admitted; extra keywords override `Job` fields."""
    counter = itertools.count(1)

    def make(
        *,
        id: str | None = None,
        priority: int = 0,
        labels: dict[str, str] | None = None,
        image: str = "alpine:3",
        **job_fields: Any,
    ) -> Job:
        labels = labels or {}
        spec = policy.admit(JobRequest(image=image, command=["true"], priority=priority, labels=labels)).spec
        fields: dict[str, Any] = {
            "id": id or f"job-{next(counter)}",
            "state": JobState.QUEUED,
            # Whole seconds, so the timestamp survives SQLite's epoch float exactly.
            "created_at": utcnow().replace(microsecond=0),
            "image": image,
            "labels": labels,
            "priority": priority,
            "spec": spec,
        }
        fields.update(job_fields)
        return Job(**fields)

    return make


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[JobStore]:
    if request.param == "postgres":
        async with fresh_schema() as url:
            instance: JobStore = PostgresStore(url)
            yield instance
            await instance.close()
        return
    instance = MemoryStore() if request.param == "memory" else SqliteStore(tmp_path / "db.sqlite")
    yield instance
    await instance.close()
