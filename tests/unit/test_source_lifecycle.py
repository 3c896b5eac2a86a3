"""When the worker starts and stops its job sources, on the in-memory engine: a source clients push to (the HTTP
API) from before recovery until the drain is over, a pulled one from after recovery until the drain begins."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from hatchway.engines.base import Role
from hatchway.engines.fake import FakeEngine, FakeProgram
from hatchway.errors import ConfigError
from hatchway.jobs.service import JobService
from hatchway.models import Job, JobRequest, JobState, Reason, RunInfo, utcnow
from hatchway.sources.base import SourceStatus
from hatchway.store.base import JobQuery
from hatchway.worker import worker as worker_module
from tests.conftest import job_when, until
from tests.unit.test_runner import fake_worker


@dataclass
class Recorder:
    """A job source that notes in `log` when it runs, and how many jobs had not ended when it was told to stop."""

    name: str
    pushes: bool
    log: list[str]
    up: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self, jobs: JobService, stop: asyncio.Event) -> None:
        self.log.append(f"{self.name} up")
        self.up.set()
        await stop.wait()
        unfinished = [job for job in (await jobs.find(JobQuery())).jobs if not job.state.is_final]
        self.log.append(f"{self.name} stopped, {len(unfinished)} job(s) not final")

    def status(self) -> SourceStatus:
        return SourceStatus(
            name=self.name,
            kind="test",
            url="",
            pushes=self.pushes,
            last_poll_at=None,
            claims=0,
            reports_sent=0,
            reports_pending=0,
            errors=0,
            backoff_s=0,
            last_error=None,
        )


class Failing(Recorder):
    async def run(self, jobs: JobService, stop: asyncio.Event) -> None:
        raise RuntimeError("cannot listen")


async def test_a_pushed_source_runs_before_recovery_and_until_every_job_has_ended(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(worker_module, "_RECOVERY_RETRY_S", 0.05)
    engine = FakeEngine()
    engine.programs["forever"] = FakeProgram(runs_until_stopped=True)
    worker = fake_worker(tmp_path, engine)
    log: list[str] = []
    api, master = Recorder("api", pushes=True, log=log), Recorder("master", pushes=False, log=log)
    worker.add_source(master)
    worker.add_source(api)
    assert [source.name for source in worker.sources] == ["api", "master"], "pushed sources are listed first"

    engine.go_down()  # recovery cannot happen until the engine answers
    await worker.start(probe=False)
    await asyncio.wait_for(api.up.wait(), 5)
    job, _ = await worker.jobs.submit(JobRequest(image="img", command=["forever"]))
    assert log == ["api up"], "the pulled source waits for recovery; the pushed one takes work meanwhile"

    engine.come_back()
    await asyncio.wait_for(master.up.wait(), 5)
    await job_when(worker, job.id, lambda found: found.state == JobState.RUNNING)
    await worker.drain()
    assert log == [
        "api up",
        "master up",
        "master stopped, 1 job(s) not final",  # as the drain began
        "api stopped, 0 job(s) not final",  # once it was over
    ]
    final = await worker.jobs.get(job.id)
    assert (final.state, final.reason) == (JobState.KILLED, Reason.SHUTDOWN)
    await worker.close()


async def test_a_pushed_source_that_fails_asks_the_worker_to_stop(tmp_path: Path) -> None:
    worker = fake_worker(tmp_path, FakeEngine())
    worker.add_source(Failing("api", pushes=True, log=[]))
    fatal = asyncio.Event()
    await worker.start(on_fatal=fatal.set, probe=False)
    await asyncio.wait_for(fatal.wait(), 5)
    await worker.shutdown()


def test_two_sources_may_not_share_a_name(tmp_path: Path) -> None:
    worker = fake_worker(tmp_path, FakeEngine())
    worker.add_source(Recorder("api", pushes=True, log=[]))
    with pytest.raises(ConfigError, match="'api'"):
        worker.add_source(Recorder("api", pushes=False, log=[]))


async def test_a_drain_begun_while_recovery_resumes_a_job_stops_that_job_too(
    tmp_path: Path, make_job: Callable[..., Job], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = FakeEngine()
    worker = fake_worker(tmp_path, engine)
    await worker.parts.store.enqueue(make_job(id="left"))
    assert await worker.parts.store.claim_next(worker.worker_id) is not None
    await worker.parts.store.mark_running("left", utcnow(), RunInfo(engine="docker"))
    engine.plant("left", Role.JOB)  # its container outlived the last run of the worker
    recovering, release, recover = asyncio.Event(), asyncio.Event(), worker.parts.recovery.run

    async def slow_recovery() -> None:
        recovering.set()
        await release.wait()
        await recover()

    monkeypatch.setattr(worker.parts.recovery, "run", slow_recovery)
    await worker.start(probe=False)
    await asyncio.wait_for(recovering.wait(), 5)
    drain = asyncio.create_task(worker.drain())  # SIGTERM comes while recovery is still at work
    # The drain has begun (it refuses new jobs from its first step on) and has not ended: recovery holds it.
    await until(lambda: not worker.jobs.accepting, "the drain never began")
    assert not drain.done()
    release.set()
    await asyncio.wait_for(drain, 10)
    job = await worker.jobs.get("left")
    assert (job.state, job.reason) == (JobState.KILLED, Reason.SHUTDOWN), "the drain waited for it and stopped it"
    assert engine.sandboxes == {}
    await worker.close()
