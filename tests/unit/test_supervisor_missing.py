"""A worker whose sandbox supervisor is not built (a package installed without a compiler, say) still runs jobs, but
says so loudly: an error line at its start, `/health` degraded with the problem named, and `/info` too."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest

from hatchway.api.app import create_app
from hatchway.api.deps import ApiServices
from hatchway.engines.fake import FakeEngine
from hatchway.errors import SandboxUnavailable
from hatchway.sandbox.binary import supervisor_path
from tests.unit.test_runner import fake_worker


def missing() -> Path:
    raise SandboxUnavailable("the sandbox supervisor is not built (/nowhere/hatchway-supervisor is missing)")


async def health_and_info(tmp_path: Path, supervisor: object) -> tuple[httpx.Response, httpx.Response]:
    worker = fake_worker(tmp_path, FakeEngine(), supervisor=supervisor)
    await worker.start()
    try:
        transport = httpx.ASGITransport(app=create_app(ApiServices.of(worker.parts)))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            return await client.get("/health"), await client.get("/info")
    finally:
        await worker.shutdown()


async def test_a_missing_supervisor_is_logged_at_the_start_and_shown_by_health_and_info(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="hatchway.worker.worker")
    health, info = await health_and_info(tmp_path, missing)
    problems = health.json()["problems"]
    assert len(problems) == 1 and "the sandbox supervisor is not built" in problems[0]
    assert (health.status_code, health.json()["status"], health.json()["accepting"]) == (200, "degraded", True)
    assert info.json()["problems"] == problems
    logged = [record for record in caplog.records if getattr(record, "event", None) == "supervisor_missing"]
    assert [record.getMessage() for record in logged] == problems


async def test_a_built_supervisor_leaves_health_ok(tmp_path: Path) -> None:
    health, info = await health_and_info(tmp_path, supervisor_path)
    assert (health.status_code, health.json()["status"], health.json()["problems"]) == (200, "ok", [])
    assert info.json()["problems"] == []
