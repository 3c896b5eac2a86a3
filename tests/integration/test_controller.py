"""Registration with a controller against a fake one on 127.0.0.1: retried until accepted, heartbeats with
counts and changed jobs, and registering again when the controller forgets the worker."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from hatchway.models import JobRequest
from hatchway.worker.bootstrap import build_worker
from tests.conftest import BUSYBOX
from tests.fakes.controller import controller
from tests.integration.conftest import make_settings

pytestmark = pytest.mark.docker


async def test_register_heartbeat_and_register_again(tmp_path: Path, worker_id: str) -> None:
    with controller(refuse_registrations=1) as fake:
        settings = make_settings(
            tmp_path,
            worker_id,
            controller_url=fake.url,
            heartbeat_interval_s=0.3,
            worker_labels={"zone": "test"},
        )
        worker = build_worker(settings)
        # The first registration is refused: the next comes after the 5 s backoff step.
        worker.parts.controller._backoff.failures = 0
        await worker.start()
        try:
            [registration] = await asyncio.to_thread(fake.wait, "registrations", 1, 20)
            assert registration["worker_id"] == worker_id and registration["labels"] == {"zone": "test"}
            resources = registration["resources"]
            assert "docker" in resources["runtimes"] and "python" in resources["profiles"]
            assert resources["cpus"] >= 1 and resources["memory_bytes"] > 0

            job, _ = await worker.jobs.submit(JobRequest(image=BUSYBOX, command="echo hi"))
            await worker.jobs.wait_final(job.id, 60)
            beats = await asyncio.to_thread(fake.wait, "heartbeats", 3)
            told = {entry["id"]: entry["state"] for beat in fake.heartbeats for entry in beat["jobs"]}
            assert told.get(job.id) == "succeeded", fake.heartbeats
            assert all({"running", "queued"} <= set(beat) for beat in beats)

            fake.forget(worker_id)
            again = await asyncio.to_thread(fake.wait, "registrations", 2, 20)
            assert again[-1]["worker_id"] == worker_id
            beats = len(fake.heartbeats)
            await asyncio.to_thread(fake.wait, "heartbeats", beats + 1)  # and it beats again
            assert worker.parts.controller is not None and worker.parts.controller.status().registered
        finally:
            await worker.shutdown()
