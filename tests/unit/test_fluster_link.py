"""hatchway's side of Fluster's ControllerService (worker/fluster_registration.py, fluster_reports.py) on the fake
engine, against the controller's double: registration and heartbeats, retried while refused; every state change of
a Fluster job reported once, in order, as the real worker reports them, and kept while the controller is down,
across a restart and past pruning; other jobs, and jobs another worker took, not reported."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from hatchway.engines.fake import FakeEngine, FakeProgram
from hatchway.fluster import methods
from hatchway.fluster.proto import cluster_pb2 as pb
from hatchway.models import Job, JobRequest, JobState, Outcome, RunInfo, utcnow
from hatchway.settings.fluster import FlusterConfig
from hatchway.sources.fluster_jobs import ORIGIN, WORKER_LABEL, external_id
from hatchway.store.base import JobStore
from hatchway.store.sqlite import SqliteStore
from hatchway.worker.fluster_registration import ControllerClient
from hatchway.worker.fluster_reports import FlusterReporter, cursor_name
from hatchway.worker.worker import Worker
from tests.fakes.fluster_controller import FlusterController, fluster_controller, now_ms
from tests.unit.test_runner import fake_worker

WORKER_ID = "fluster-w1"
RUNNING, SUCCEEDED, FAILED = pb.JOB_STATE_RUNNING, pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED


@pytest.fixture
def controller() -> Iterator[FlusterController]:
    with fluster_controller() as double:
        yield double


def fluster_settings(controller: FlusterController, **block: Any) -> dict[str, Any]:
    return {
        "fluster": {
            "controller_url": controller.url,
            "worker_id": WORKER_ID,
            "advertise_address": "10.1.2.3:8123",
            "register_retry_s": 0.05,
            "heartbeat_s": 0.1,
            **block,
        }
    }


@pytest.fixture
def engine() -> FakeEngine:
    engine = FakeEngine()
    engine.programs["ok"] = FakeProgram(stdout=b"out")
    engine.programs["bad"] = FakeProgram(exit_code=3)
    return engine


@pytest.fixture
async def worker(tmp_path: Path, engine: FakeEngine, controller: FlusterController) -> AsyncIterator[Worker]:
    started = fake_worker(tmp_path, engine, **fluster_settings(controller))
    await started.start()
    yield started
    await started.shutdown()


async def wait_for(controller: FlusterController, what: Any, timeout_s: float = 10) -> Any:
    """The double's wait, off the event loop (the worker runs on it)."""
    return await asyncio.to_thread(controller.wait_for, what, timeout_s)


def launched(controller: FlusterController, job_id: str) -> None:
    """The controller has the job and dispatched it to this worker (as if by RunJob)."""
    controller.launch(job_id, b"")
    with controller.lock:
        controller.jobs[job_id].mark_dispatched(WORKER_ID, now_ms())


async def run_fluster_job(worker: Worker, job_id: str, program: str = "ok", **labels: str) -> Job:
    job, _ = await worker.jobs.submit(
        JobRequest(image="img", command=[program], labels=labels), origin=ORIGIN, external_id=external_id(job_id, 0)
    )
    final = await worker.jobs.wait_final(job.id, 10)
    assert final.state.is_final
    return final


def states(controller: FlusterController, job_id: str) -> list[str]:
    return [pb.JobState.Name(report.state) for report in controller.reports(job_id)]


async def test_it_registers_as_the_real_worker_does_then_heartbeats(
    worker: Worker, controller: FlusterController
) -> None:
    await wait_for(controller, lambda: len(controller.registrations()) >= 3)
    first = controller.registrations()[0]
    assert (first.worker_id, first.address) == (WORKER_ID, "10.1.2.3:8123")
    assert first.resources.cpu >= 1 and first.resources.memory.endswith("g")
    assert first.metadata.cpu_count == first.resources.cpu and first.metadata.memory_bytes > 0
    assert first.metadata.hostname and first.metadata.ip_address == "127.0.0.1"  # the way to the controller
    assert controller.workers[WORKER_ID].address == "10.1.2.3:8123"
    assert worker.parts.fluster is not None
    status = worker.parts.fluster.status()
    assert (status.registered, status.errors, status.worker_id) == (True, 0, WORKER_ID)
    assert status.last_registered_at is not None


async def test_a_refused_registration_is_retried_and_the_outage_logged_once(
    tmp_path: Path, engine: FakeEngine, controller: FlusterController, caplog: pytest.LogCaptureFixture
) -> None:
    controller.refuse_next(3, method=methods.REGISTER_WORKER)
    worker = fake_worker(tmp_path, engine, **fluster_settings(controller, worker_id=None, advertise_address=None))
    with caplog.at_level(logging.INFO, logger="hatchway.worker.fluster_registration"):
        await worker.start()
        try:
            await wait_for(controller, controller.registrations)
            assert worker.parts.fluster is not None
            status = worker.parts.fluster.status()
            assert status.errors == 3 and "unavailable" in (status.last_error or "")
        finally:
            await worker.shutdown()
    refused = [call for call in controller.calls if call.status != 200]
    assert len(refused) == 3
    events = [getattr(record, "event", None) for record in caplog.records]
    assert events.count("fluster_controller_down") == 1 and events.count("fluster_controller_back") == 1
    # Without an id or address of its own, the worker's id and the API's host and port.
    assert controller.registrations()[0].worker_id == "unit"
    assert controller.registrations()[0].address == worker.settings.address.removeprefix("http://")


async def test_each_change_the_controller_wants_is_reported_once_in_order(
    worker: Worker, controller: FlusterController
) -> None:
    launched(controller, "ok-job")
    launched(controller, "bad-job")
    ok = await run_fluster_job(worker, "ok-job")
    bad = await run_fluster_job(worker, "bad-job", "bad")
    await wait_for(controller, lambda: len(controller.reports()) >= 4)
    assert states(controller, "ok-job") == ["JOB_STATE_RUNNING", "JOB_STATE_SUCCEEDED"]
    assert states(controller, "bad-job") == ["JOB_STATE_RUNNING", "JOB_STATE_FAILED"]
    final = controller.reports("bad-job")[-1]
    assert (final.worker_id, final.attempt_id, final.exit_code) == (WORKER_ID, 0, 3)
    assert final.error == "Exit code: 3" and bad.finished_at is not None
    assert final.finished_at_ms == int(bad.finished_at.timestamp() * 1000)
    done = controller.reports("ok-job")[-1]
    assert done.HasField("exit_code") and not done.HasField("error") and done.exit_code == ok.exit_code == 0
    running = controller.reports("ok-job")[0]
    assert not running.HasField("finished_at_ms") and not running.HasField("exit_code")
    assert controller.ignored_reports == []
    assert (controller.jobs["ok-job"].state, controller.jobs["bad-job"].state) == (SUCCEEDED, FAILED)
    assert (await worker.jobs.get(ok.id)).reported_at is not None, "its result reached its source"
    # Nothing more once caught up, though heartbeats go on.
    beats = len(controller.registrations())
    await wait_for(controller, lambda: len(controller.registrations()) >= beats + 2)
    assert len(controller.reports()) == 4


async def test_other_jobs_and_jobs_another_worker_took_are_not_reported(
    worker: Worker, controller: FlusterController
) -> None:
    job, _ = await worker.jobs.submit(JobRequest(image="img", command=["ok"]))
    await worker.jobs.wait_final(job.id, 10)
    await run_fluster_job(worker, "elsewhere", **{WORKER_LABEL: "another-worker"})
    launched(controller, "mine")
    await run_fluster_job(worker, "mine", **{WORKER_LABEL: WORKER_ID})
    await wait_for(controller, lambda: len(controller.reports("mine")) == 2)
    assert {report.job_id for report in controller.reports()} == {"mine"}


async def test_changes_made_while_the_controller_is_down_are_reported_once_it_is_back(
    worker: Worker, controller: FlusterController
) -> None:
    await wait_for(controller, controller.registrations)
    launched(controller, "a")
    launched(controller, "b")
    controller.down()
    await run_fluster_job(worker, "a")
    await run_fluster_job(worker, "b", "bad")
    assert worker.parts.fluster is not None
    await worker.parts.store.prune_events(1)  # pruning keeps what is not reported
    deadline = asyncio.get_running_loop().time() + 10
    while worker.parts.fluster.client.errors < 2:  # the reporter and the registration both fail meanwhile
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.02)
    controller.up()
    await wait_for(controller, lambda: len(controller.reports()) >= 4)
    assert states(controller, "a") == ["JOB_STATE_RUNNING", "JOB_STATE_SUCCEEDED"]
    assert states(controller, "b") == ["JOB_STATE_RUNNING", "JOB_STATE_FAILED"]
    assert [report.job_id for report in controller.reports()] == ["a", "a", "b", "b"]


async def test_reports_not_sent_before_a_restart_are_sent_after_it_and_sent_ones_not_again(
    tmp_path: Path, engine: FakeEngine, controller: FlusterController
) -> None:
    store_path = tmp_path / "store.sqlite"
    launched(controller, "before")
    launched(controller, "pending")
    first = fake_worker(tmp_path, engine, store=SqliteStore(store_path), **fluster_settings(controller))
    await first.start()
    await run_fluster_job(first, "before")
    await wait_for(controller, lambda: len(controller.reports("before")) == 2)
    controller.down()
    await run_fluster_job(first, "pending")
    await first.shutdown()
    controller.up()
    assert controller.reports("pending") == []
    second = fake_worker(tmp_path, engine, store=SqliteStore(store_path), **fluster_settings(controller))
    await second.start()
    try:
        await wait_for(controller, lambda: len(controller.reports("pending")) == 2)
        assert second.parts.fluster is not None
        cursor = await second.parts.store.cursor(cursor_name(WORKER_ID))
        assert second.parts.fluster.status().reported_event == cursor > 0
    finally:
        await second.shutdown()
    assert states(controller, "before") == ["JOB_STATE_RUNNING", "JOB_STATE_SUCCEEDED"]
    assert states(controller, "pending") == ["JOB_STATE_RUNNING", "JOB_STATE_SUCCEEDED"]


async def test_a_refused_report_is_sent_again_and_the_next_waits_for_it(
    worker: Worker, controller: FlusterController
) -> None:
    launched(controller, "j")
    controller.refuse_next(2, method=methods.REPORT_JOB_STATE)
    await run_fluster_job(worker, "j")
    await wait_for(controller, lambda: len(controller.reports("j")) == 2)
    assert states(controller, "j") == ["JOB_STATE_RUNNING", "JOB_STATE_SUCCEEDED"]
    refused = [call for call in controller.calls if call.status != 200]
    assert len(refused) == 2 and all(call.request.state == RUNNING for call in refused)  # type: ignore[union-attr]


async def test_in_a_shared_store_each_worker_reports_only_the_jobs_labelled_as_its_own(
    controller: FlusterController, make_job: Any, store: JobStore
) -> None:
    for name, labels in (("a", {WORKER_LABEL: "fw-a"}), ("b", {WORKER_LABEL: "fw-b"}), ("none", {})):
        job = make_job(id=f"fluster.{name}", labels=labels, origin=ORIGIN, external_id=external_id(name, 1))
        await store.enqueue(job)
        await store.claim_next("hatchway-worker")
        await store.mark_running(job.id, utcnow(), RunInfo())
        await store.finish(job.id, Outcome(state=JobState.SUCCEEDED, exit_code=0), utcnow())
    config = FlusterConfig(controller_url=controller.url)
    reporters = [
        FlusterReporter(
            store=store, client=ControllerClient(config), worker_id=worker_id, owns_unlabeled=False, retry_s=1, poll_s=1
        )
        for worker_id in ("fw-a", "fw-b")
    ]
    async with httpx.AsyncClient() as http:
        assert all([await reporter.report_pending(http) for reporter in reporters])
    assert [(r.worker_id, r.job_id, r.attempt_id) for r in controller.reports()] == [
        ("fw-a", "a", 1),
        ("fw-a", "a", 1),
        ("fw-b", "b", 1),
        ("fw-b", "b", 1),
    ]
    assert [reporter.sent for reporter in reporters] == [2, 2]
    assert await store.cursor(cursor_name("fw-a")) == await store.cursor(cursor_name("fw-b")) == 12
