"""Workers of a fleet in one process, on fake engines and one PostgreSQL store: a survivor takes a silent worker's
jobs over by recovery's rules; the silent one, heard again, touches nothing it lost, stops its containers and comes
back as a new generation; a worker that stops cleanly is marked stopped; of two processes given one id, the older
one stops; any worker lists the fleet (GET /workers) and counts its load (`?scope=fleet`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from hatchway.api.app import create_app
from hatchway.api.deps import ApiServices
from hatchway.engines.fake import FakeEngine, FakeProgram
from hatchway.engines.fake_images import FakeImages
from hatchway.models import Job, JobRequest, JobState, Reason
from hatchway.output.events import EventType
from hatchway.store.fleet import LeaseLost, WorkerHealth
from hatchway.store.postgres import PostgresStore
from hatchway.worker.worker import Worker
from tests.postgres_db import fresh_schema
from tests.unit.test_runner import fake_worker

pytestmark = pytest.mark.postgres

LEASE_S = 1.0


class GatedImages(FakeImages):
    """Images whose pull waits for `gate`: a job on one stays claimed and not started (`building`)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.waiting = asyncio.Event()

    async def ensure(self, image: str) -> bool:
        if image.startswith("slow"):
            self.waiting.set()
            await self.gate.wait()
        return await super().ensure(image)


@pytest.fixture
async def url() -> AsyncIterator[str]:
    async with fresh_schema() as found:
        yield found


@pytest.fixture
async def fleet(tmp_path: Path, url: str) -> AsyncIterator[Callable[..., Awaitable[Worker]]]:
    """Start workers on the one store; every one is shut down at the end."""
    started: list[Worker] = []

    async def start(
        worker_id: str, engine: FakeEngine, images: FakeImages | None = None, on_fatal: Any = None, **settings: Any
    ) -> Worker:
        data_dir = tmp_path / f"{worker_id}-{len(started)}"
        data_dir.mkdir()
        worker = fake_worker(
            data_dir,
            engine,
            images,
            store=PostgresStore(url),
            worker_id=worker_id,
            worker_lease_s=LEASE_S,
            **settings,
        )
        await worker.start(on_fatal=on_fatal)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        if not worker.services.stopping.is_set():  # not shut down by the test itself
            await worker.shutdown()


async def until(what: str, check: Callable[[], Awaitable[bool]], timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        assert time.monotonic() < deadline, f"never happened: {what}"
        await asyncio.sleep(0.02)  # polling the shared store: another worker's change wakes nothing here


async def state(worker: Worker, job_id: str) -> Job:
    job = await worker.parts.store.get(job_id)
    assert job is not None
    return job


async def finished_events(worker: Worker, job_id: str) -> list[tuple[EventType, JobState, str | None]]:
    batch = await worker.parts.store.events_after(0, limit=1000, job_id=job_id)
    return [(event.type, event.state, event.worker_id) for event in batch.events if event.state.is_final]


async def test_a_survivor_takes_a_silent_worker_over_and_the_silent_one_touches_nothing_it_lost(
    fleet: Callable[..., Awaitable[Worker]],
) -> None:
    engine_a, images_a = FakeEngine(worker_id="a"), GatedImages()
    engine_a.programs["forever"] = FakeProgram(runs_until_stopped=True)
    silent = await fleet("a", engine_a, images_a)
    ran, _ = await silent.jobs.submit(JobRequest(image="img", command=["forever"]))
    await asyncio.wait_for(engine_a.started(ran.id), 10)
    claimed, _ = await silent.jobs.submit(JobRequest(image="slow/img", command=["forever"]))
    await asyncio.wait_for(images_a.waiting.wait(), 10)
    assert (await state(silent, claimed.id)).state == JobState.BUILDING

    # Its lease is no longer renewed (as a worker paused with SIGSTOP); its jobs go on in its engine meanwhile.
    heard = asyncio.Event()
    renew = silent.parts.store.renew_lease

    async def silenced(*args: Any) -> LeaseLost | None:
        await heard.wait()
        return await renew(*args)

    silent.parts.store.renew_lease = silenced  # type: ignore[method-assign]
    engine_b = FakeEngine(worker_id="b")
    engine_b.programs["forever"] = FakeProgram(stdout=b"ran on b\n", runs_until_stopped=True)
    survivor = await fleet("b", engine_b)

    async def taken_over() -> bool:
        return (await state(survivor, ran.id)).state.is_final and (await state(survivor, claimed.id)).state == (
            JobState.RUNNING
        )

    await until("the survivor took the silent worker's jobs over", taken_over)
    lost = await state(survivor, ran.id)
    assert (lost.state, lost.reason, lost.worker_id) == (JobState.FAILED, Reason.WORKER_LOST, "a")
    assert (await state(survivor, claimed.id)).worker_id == "b", "its claimed job went back and b runs it"
    listed = {worker.id: worker for worker in await survivor.parts.store.workers()}
    assert (listed["a"].health, listed["a"].reclaimed_by) == (WorkerHealth.EXPIRED, "b")

    # The silent worker's own work goes on, unaware: its job ends, and its claimed job, ready to start, is found
    # no longer its own before its process starts (JobStore.mark_launching). The store takes nothing of it: the
    # job b runs stays b's, and runs nowhere else.
    engine_a.exit(ran.id, exit_code=0, stdout=b"too late\n")
    images_a.gate.set()
    await until("the silent worker gave up its jobs", lambda: _none_left(silent))
    assert engine_a.starts(claimed.id) == 0
    assert await state(survivor, ran.id) == lost
    assert (await state(survivor, claimed.id)).state == JobState.RUNNING
    engine_b.exit(claimed.id)
    again = await survivor.jobs.wait_final(claimed.id, 10)
    assert (again.state, again.worker_id, again.stdout) == (JobState.SUCCEEDED, "b", "ran on b\n")

    heard.set()  # heard again: it learns its lease was taken over, and comes back as a new generation
    await until("the silent worker came back", lambda: _generation(silent, 2))
    assert silent.parts.lease.lost == [LeaseLost.RECLAIMED]
    assert engine_a.sandboxes == {}, "its containers are gone"
    for job_id in (ran.id, claimed.id):
        assert len(await finished_events(survivor, job_id)) == 1, "each job ended once"
    listed = {worker.id: worker for worker in await survivor.parts.store.workers()}
    assert (listed["a"].health, listed["a"].generation, listed["a"].reclaimed_at) == (WorkerHealth.ALIVE, 2, None)
    for engine in (engine_a, engine_b):  # whichever claims it
        engine.programs["true"] = FakeProgram(stdout=b"ran\n")
    after, _ = await silent.jobs.submit(JobRequest(image="img", command=["true"]))
    assert (await silent.jobs.wait_final(after.id, 10)).state == JobState.SUCCEEDED, "the fleet goes on"


async def _running(worker: Worker, job_id: str) -> bool:
    return (await state(worker, job_id)).state == JobState.RUNNING


async def _none_left(worker: Worker) -> bool:
    return not worker.parts.dispatcher.controls


async def _generation(worker: Worker, generation: int) -> bool:
    return worker.parts.lease.generation == generation and not worker.parts.scheduler.paused


async def test_a_worker_that_stops_cleanly_is_marked_stopped_and_not_taken_over(
    fleet: Callable[..., Awaitable[Worker]],
) -> None:
    leaving = await fleet("a", FakeEngine(worker_id="a"))
    staying = await fleet("b", FakeEngine(worker_id="b"))
    await leaving.shutdown()
    (listed,) = [worker for worker in await staying.parts.store.workers() if worker.id == "a"]
    assert listed.health == WorkerHealth.STOPPED and listed.stopped_at is not None
    assert await staying.parts.store.reclaim_expired("b") == []


async def test_of_two_processes_given_one_worker_id_the_older_stops(
    fleet: Callable[..., Awaitable[Worker]],
) -> None:
    told_to_stop = asyncio.Event()
    older = await fleet("w", FakeEngine(worker_id="w"), on_fatal=told_to_stop.set)
    newer = await fleet("w", FakeEngine(worker_id="w"))
    await asyncio.wait_for(told_to_stop.wait(), 10)
    assert older.parts.lease.lost == [LeaseLost.SUPERSEDED] and older.parts.lease.generation is None
    await older.shutdown()
    (listed,) = await newer.parts.store.workers()
    assert (listed.health, listed.generation) == (WorkerHealth.ALIVE, 2), "the older one's stop leaves it be"


async def test_any_worker_shows_the_fleet_and_its_load(fleet: Callable[..., Awaitable[Worker]]) -> None:
    engine_b = FakeEngine(worker_id="b")
    engine_b.programs["forever"] = FakeProgram(runs_until_stopped=True)
    asked = await fleet("a", FakeEngine(worker_id="a"), max_concurrent_jobs=2, labels={"zone": "x"})
    busy = await fleet("b", engine_b, max_concurrent_jobs=3, advertise_url="http://b.example:8080")
    asked.parts.scheduler.paused = True  # the job is b's to run
    job, _ = await busy.jobs.submit(JobRequest(image="img", command=["forever"]))
    await until("b runs the job", lambda: _running(busy, job.id))
    transport = httpx.ASGITransport(app=create_app(ApiServices.of(asked.parts)))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:9000") as client:
        listed = (await client.get("/workers")).json()
        assert [(item["id"], item["health"], item["slots"], item["running"]) for item in listed] == [
            ("a", "alive", 2, 0),
            ("b", "alive", 3, 1),
        ]
        assert (listed[0]["labels"], listed[1]["address"]) == ({"zone": "x"}, "http://b.example:8080")
        assert listed[0]["runtimes"] == ["docker"] and listed[0]["generation"] == 1

        mine = (await client.get("/health")).json()
        assert (mine["scope"], mine["running"], mine["max_concurrent_jobs"], mine["fleet"]) == ("worker", 0, 2, None)
        whole = (await client.get("/health", params={"scope": "fleet"})).json()
        assert (whole["scope"], whole["running"], whole["max_concurrent_jobs"]) == ("fleet", 1, 5)
        assert [item["id"] for item in whole["fleet"]] == ["a", "b"]

        status = (await client.get("/workers/status", params={"scope": "fleet"})).json()
        assert (status["max_workers"], status["busy"], status["idle"]) == (5, 1, 4)
        assert status["stats"] == {"total": 5, "byType": {"grader_rust": 5}, "byStatus": {"ready": 4, "busy": 1}}
        endpoints = [(item["id"], item["status"], item["endpoint"]) for item in status["workers"]]
        assert endpoints[2:] == [
            ("b/1", "busy", "http://b.example:8080"),
            ("b/2", "ready", "http://b.example:8080"),
            ("b/3", "ready", "http://b.example:8080"),
        ]
        assert endpoints[0][0] == "a/1" and endpoints[0][2] is not None and endpoints[0][2].startswith("http://")
        alone = (await client.get("/workers/status")).json()
        slots = [item["id"] for item in alone["workers"]]
        assert (alone["scope"], alone["max_workers"], alone["busy"], slots) == ("worker", 2, 0, ["a/1", "a/2"])
        assert (await client.get("/health", params={"scope": "everything"})).status_code == 422
    engine_b.exit(job.id)


async def test_a_source_s_free_slots_are_the_fleet_s(fleet: Callable[..., Awaitable[Worker]]) -> None:
    """The queue is the fleet's, so are the slots a pulled source claims for: every live worker's, less every job
    queued, building or running anywhere (counting only its own, a source in a fleet claimed too little)."""
    engine_a, engine_b = FakeEngine(worker_id="a"), FakeEngine(worker_id="b")
    for engine in (engine_a, engine_b):
        engine.programs["forever"] = FakeProgram(runs_until_stopped=True)
    a = await fleet("a", engine_a, max_concurrent_jobs=2)
    b = await fleet("b", engine_b, max_concurrent_jobs=3, labels={"side": "b"})
    assert await a.jobs.free_slots() == 5 and await b.jobs.free_slots() == 5
    on_b = JobRequest(image="img", command=["forever"], placement={"side": "b"})
    running, _ = await b.jobs.submit(on_b)
    await until("b runs it", lambda: _running(a, running.id))
    assert (await state(a, running.id)).worker_id == "b", "placed there"
    assert await a.jobs.free_slots() == 4
    await b.shutdown()  # stopped cleanly (its job stopped with it): its slots are no longer the fleet's
    assert await a.jobs.free_slots() == 2


async def _running(worker: Worker, job_id: str) -> bool:
    return (await state(worker, job_id)).state == JobState.RUNNING
