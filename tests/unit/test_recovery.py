"""Restart recovery's decisions, on the in-memory engine and store."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from hatchway.engines.base import Found, Role
from hatchway.engines.fake import FakeEngine
from hatchway.jobs.notify import JobSignals
from hatchway.jobs.recovery import Recovery
from hatchway.models import Job, JobSpec, JobState, Reason, RunInfo
from hatchway.store.memory import MemoryStore

MakeJob = Callable[..., Job]
T0 = datetime(2026, 1, 1, tzinfo=UTC)


async def active_job(store: MemoryStore, make_job: MakeJob, job_id: str, *, running: bool, kind: str = "job") -> Job:
    job = make_job(id=job_id)
    if kind != "job":
        job = job.model_copy(update={"spec": JobSpec.model_validate({**job.spec.model_dump(), "kind": kind})})
    await store.enqueue(job)
    claimed = await store.claim_next("w")
    assert claimed is not None and claimed.id == job_id
    if running:
        await store.mark_running(job_id, T0, RunInfo(engine="docker"))
    return job


def recovery(store: MemoryStore, engine: FakeEngine, resumed: list[tuple[str, Found]], stale: Path) -> Recovery:
    return Recovery(
        store=store,
        engines={"docker": engine},
        worker_id="w",
        resume=lambda job, found: resumed.append((job.id, found)),
        signals=JobSignals(),
        stale_dirs=[stale],
    )


async def test_a_running_job_with_its_container_is_reattached_and_others_reaped(
    make_job: MakeJob, tmp_path: Path
) -> None:
    store, engine, resumed = MemoryStore(), FakeEngine(), []
    await active_job(store, make_job, "alive", running=True)
    main = engine.plant("alive", Role.JOB)
    stray = engine.plant("alive", Role.COMPILE)
    orphan = engine.plant("nobody", Role.JOB)
    (tmp_path / "alive").mkdir()
    (tmp_path / "nobody").mkdir()
    await recovery(store, engine, resumed, tmp_path).run()
    assert [(job_id, found.handle.ref) for job_id, found in resumed] == [("alive", main.ref)]
    assert set(engine.sandboxes) == {main.ref}, (stray, orphan)
    left = await asyncio.to_thread(os.listdir, tmp_path)
    assert left == ["alive"], "stale work dirs go, the adopted one stays"


async def test_a_running_job_whose_container_is_gone_is_lost(make_job: MakeJob, tmp_path: Path) -> None:
    store, engine, resumed = MemoryStore(), FakeEngine(), []
    await active_job(store, make_job, "gone", running=True)
    await recovery(store, engine, resumed, tmp_path).run()
    job = await store.get("gone")
    assert job is not None and (job.state, job.reason) == (JobState.FAILED, Reason.WORKER_RESTART)
    assert resumed == []


async def test_a_job_that_never_started_is_queued_again_and_its_created_container_reaped(
    make_job: MakeJob, tmp_path: Path
) -> None:
    store, engine, resumed = MemoryStore(), FakeEngine(), []
    await active_job(store, make_job, "early", running=False)
    engine.plant("early", Role.JOB, started=False)
    await recovery(store, engine, resumed, tmp_path).run()
    job = await store.get("early")
    assert job is not None and job.state == JobState.QUEUED
    assert engine.sandboxes == {} and resumed == []


async def test_a_grade_cut_off_mid_way_is_graded_again_from_scratch(make_job: MakeJob, tmp_path: Path) -> None:
    store, engine, resumed = MemoryStore(), FakeEngine(), []
    await active_job(store, make_job, "grade-1", running=True, kind="grade")
    engine.plant("grade-1", Role.RUN)
    engine.plant("grade-1", Role.CHECKER)
    await recovery(store, engine, resumed, tmp_path).run()
    job = await store.get("grade-1")
    assert job is not None and (job.state, job.started_at) == (JobState.QUEUED, None)
    assert engine.sandboxes == {} and resumed == []
    assert [what for what, *_ in engine.events].count("remove") == 2


async def test_jobs_of_other_workers_are_left_alone(make_job: MakeJob, tmp_path: Path) -> None:
    store, engine, resumed = MemoryStore(), FakeEngine(), []
    await store.enqueue(make_job(id="theirs"))
    await store.claim_next("someone-else")
    await store.mark_running("theirs", T0, RunInfo())
    await recovery(store, engine, resumed, tmp_path).run()
    job = await store.get("theirs")
    assert job is not None and job.state == JobState.RUNNING


async def test_the_live_output_of_a_reattached_job_is_kept_whatever_its_id(make_job: MakeJob, tmp_path: Path) -> None:
    store, engine, resumed = MemoryStore(), FakeEngine(), []
    await active_job(store, make_job, "queue.item.1", running=True)
    engine.plant("queue.item.1", Role.JOB)
    stale = tmp_path / "output"
    stale.mkdir()
    for name in ("queue.item.1.stdout", "queue.item.1.stderr", "gone.stdout", "queue.stdout"):
        (stale / name).write_text("x")
    await recovery(store, engine, resumed, stale).run()
    assert [job_id for job_id, _ in resumed] == ["queue.item.1"]
    assert sorted(path.name for path in stale.iterdir()) == ["queue.item.1.stderr", "queue.item.1.stdout"]


async def test_taken_up_jobs_resume_only_once_leftovers_are_reaped_and_disks_swept(
    make_job: MakeJob, tmp_path: Path
) -> None:
    """A taken-up job may end at once and hand its disk on as a spare: the sweep of old disks, which does not
    know that spare, must be over by then."""
    store, engine, steps = MemoryStore(), FakeEngine(), []
    await active_job(store, make_job, "alive", running=True)
    engine.plant("alive", Role.JOB)
    orphan = engine.plant("nobody", Role.JOB)

    def sweep(keep: set[str]) -> list[str]:
        steps.append(("sweep", orphan.ref in engine.sandboxes))
        return []

    settle = Recovery(
        store=store,
        engines={"docker": engine},
        worker_id="w",
        resume=lambda job, found: steps.append(("resume", job.id)),
        signals=JobSignals(),
        stale_dirs=[tmp_path],
        sweep_volumes=sweep,
    )
    await settle.run()
    assert steps == [("sweep", False), ("resume", "alive")]
