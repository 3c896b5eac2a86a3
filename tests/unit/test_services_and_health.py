"""The worker's background services and engine health, on the in-memory engine."""

from __future__ import annotations

import asyncio

from hatchway.engines.fake import FakeEngine
from hatchway.health import EngineHealth
from hatchway.services import Services


async def test_a_service_that_dies_asks_the_worker_to_stop() -> None:
    services = Services(worker_id="w")
    fatal = asyncio.Event()
    services.on_fatal = fatal.set

    async def crashes() -> None:
        raise RuntimeError("lost the database")

    services.start("doomed", crashes())
    await asyncio.wait_for(fatal.wait(), 5)
    await services.stop()


async def test_services_that_end_because_the_worker_stops_are_no_failure() -> None:
    services = Services(worker_id="w")
    fatal = asyncio.Event()
    services.on_fatal = fatal.set

    async def until_stopped() -> None:
        await services.stopping.wait()

    async def forever() -> None:
        await asyncio.Event().wait()

    services.start("loop", until_stopped())
    services.start("waiter", forever())
    assert services.names == ["loop", "waiter"]
    await services.stop()
    assert services.names == [] and not fatal.is_set()


async def test_health_records_which_engines_work_and_docker_is_always_admitted() -> None:
    docker, gvisor = FakeEngine("docker"), FakeEngine("gvisor")
    gvisor.works = False
    health = EngineHealth({"docker": docker, "gvisor": gvisor}, worker_id="w")
    assert health.available_runtimes() == {"docker"}, "before any probe, docker jobs may queue"
    await health.probe()
    assert health.ok == {"docker": True, "gvisor": False} and not health.all_ok
    gvisor.works = True
    health.recheck()
    health.recheck()  # one probe at a time
    await health.settle()
    assert health.ok == {"docker": True, "gvisor": True}
    assert health.available_runtimes() == {"docker", "gvisor"}
