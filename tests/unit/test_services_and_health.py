"""The worker's background services and engine health, on the in-memory engine."""

from __future__ import annotations

import asyncio
import time

from hatchway.engines.fake import FakeEngine
from hatchway.engines.health import EngineHealth
from hatchway.worker.loops import Services


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


async def test_a_lost_engine_is_pinged_with_backoff_until_it_answers_then_tidied_up_and_probed() -> None:
    engine = FakeEngine("docker")
    health = EngineHealth({"docker": engine}, worker_id="w", retry_s=(0.01, 0.04))
    tidied: list[bool] = []

    async def tidy() -> None:
        tidied.append(health.answering.is_set())

    health.on_back = tidy
    await health.probe()
    engine.works = False
    health.lost("connection refused")
    health.lost("connection refused")  # one watch, however many report it
    assert not health.answering.is_set()
    began = time.monotonic()
    await asyncio.sleep(0.3)
    # 0.01 + 0.02 + 0.04 + 0.04 ... s apart: a handful of pings, not a busy loop.
    assert 3 <= engine.pings <= 0.3 / 0.04 + 4, engine.pings
    engine.works = True
    async with asyncio.timeout(5):
        await health.answering.wait()
    assert time.monotonic() - began < 1
    assert tidied == [False], "what the outage left is tidied up once, before work goes on"
    assert health.ok == {"docker": True}
    await health.settle()


async def test_a_probe_that_finds_no_engine_marks_it_lost() -> None:
    engine = FakeEngine("docker")
    engine.works = False
    health = EngineHealth({"docker": engine}, worker_id="w", retry_s=(0.01, 0.04))
    await health.probe()
    assert not health.answering.is_set() and health.ok == {"docker": False}
    engine.works = True
    async with asyncio.timeout(5):
        await health.answering.wait()
    assert health.ok == {"docker": True}
    await health.settle()
