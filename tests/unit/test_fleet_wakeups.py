"""Two workers on one PostgreSQL store, in this process, each with its own in-memory engine: what one does wakes
the other at once. Their safety-net poll is a minute, far past every deadline here, so only a wake-up (a NOTIFY)
can be in time.

A caveat: channels are database-wide, and the test database is shared, so another test's NOTIFY may wake these
workers too; it cannot make a test fail, only (rarely) make one pass that should not.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from hatchway.engines.fake import FakeEngine, FakeProgram
from hatchway.engines.fake_images import FakeImages
from hatchway.jobs import event_feed
from hatchway.jobs.cancels import CancelRequests
from hatchway.jobs.control import RunControl
from hatchway.jobs.event_feed import EventFilter
from hatchway.jobs.listener import StoreListener
from hatchway.jobs.notify import JobSignals
from hatchway.models import Job, JobRequest, JobState, Reason, RunInfo
from hatchway.output.events import EventType, JobEvent
from hatchway.store import MemoryStore
from hatchway.store.base import Fit
from hatchway.store.postgres import PostgresStore
from hatchway.store.wakeups import Wake, Wakeup
from hatchway.worker.worker import Worker
from tests.postgres_db import fresh_schema
from tests.unit.test_runner import fake_worker

pytestmark = pytest.mark.timeout(60)
DEADLINE_S = 10.0
"""Generous, and far below the safety nets' minute."""


class WatchedStore(PostgresStore):
    """A worker's store that tells when its scheduler, woken by anything after its wake-ups began to flow, has
    looked for work and found none: from then on it is idle until something wakes it again."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.listening = asyncio.Event()
        self.idle = asyncio.Event()

    async def claim_next(self, worker_id: str, fit: Fit | None = None) -> Job | None:
        looked_after_listening = self.listening.is_set()
        job = await super().claim_next(worker_id, fit)
        if job is None and looked_after_listening:
            self.idle.set()
        return job


@dataclass
class Member:
    worker: Worker
    engine: FakeEngine
    store: WatchedStore


@dataclass
class Fleet:
    url: str
    tmp_path: Path
    members: list[Member] = field(default_factory=list)

    async def start(self, name: str, images: FakeImages | None = None, **settings: Any) -> Member:
        """A worker named `name`, started, its wake-ups flowing and its scheduler idle."""
        data_dir = self.tmp_path / name
        data_dir.mkdir()
        engine = FakeEngine(worker_id=name)
        engine.programs["forever"] = FakeProgram(runs_until_stopped=True)
        engine.programs["ok"] = FakeProgram(stdout=b"ok")
        store = WatchedStore(self.url)
        values: dict[str, Any] = {"worker_id": name, "max_concurrent_jobs": 1, "poll_interval_s": 60.0}
        worker = fake_worker(data_dir, engine, images, store=store, **(values | settings))
        store.listening = worker.parts.listener.listening
        member = Member(worker, engine, store)
        self.members.append(member)
        await worker.start()
        async with asyncio.timeout(DEADLINE_S):
            await store.idle.wait()
        return member

    async def busy(self, member: Member) -> Job:
        """Fill `member`'s one slot with a job that runs until stopped."""
        job, _ = await member.worker.jobs.submit(JobRequest(image="img", command=["forever"]))
        async with asyncio.timeout(DEADLINE_S):
            await member.engine.started(job.id)
        return job


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[Fleet]:
    async with fresh_schema() as url:
        made = Fleet(url, tmp_path)
        try:
            yield made
        finally:
            for member in made.members:
                await member.worker.shutdown()


@pytest.mark.postgres
async def test_a_job_queued_on_one_worker_is_started_at_once_by_an_idle_other(fleet: Fleet) -> None:
    a = await fleet.start("a")
    await fleet.busy(a)
    b = await fleet.start("b")
    job, _ = await a.worker.jobs.submit(JobRequest(image="img", command=["forever"]))
    async with asyncio.timeout(DEADLINE_S):
        await b.engine.started(job.id)
    started = await a.worker.jobs.get(job.id)  # its container has started: running, or just about to be
    assert (started.state in (JobState.BUILDING, JobState.RUNNING), started.worker_id) == (True, "b")


@pytest.mark.postgres
async def test_an_event_stream_on_one_worker_shows_another_worker_s_events_at_once(
    fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = await fleet.start("a")
    await fleet.busy(a)  # so that the job below is b's alone
    b = await fleet.start("b")
    waiting = asyncio.Event()
    first = event_feed._first

    async def waits(*events: asyncio.Event, timeout_s: float) -> None:
        waiting.set()
        await first(*events, timeout_s=timeout_s)

    monkeypatch.setattr(event_feed, "_first", waits)
    items = a.worker.parts.event_feed.follow(None, EventFilter())
    following = asyncio.ensure_future(anext(items))
    async with asyncio.timeout(DEADLINE_S):
        await waiting.wait()  # caught up: only a wake-up makes it read again within the minute
    job, _ = await b.worker.jobs.submit(JobRequest(image="img", command=["ok"]))
    seen: list[JobEvent] = []
    async with asyncio.timeout(DEADLINE_S):
        while not seen or seen[-1].type != EventType.JOB_FINISHED:
            item = await following
            following = asyncio.ensure_future(anext(items))
            if isinstance(item, JobEvent) and item.job_id == job.id:
                seen.append(item)
    following.cancel()
    await items.aclose()
    assert [event.type for event in seen] == [
        EventType.JOB_QUEUED,
        EventType.JOB_BUILDING,
        EventType.JOB_RUNNING,
        EventType.JOB_FINISHED,
    ]
    assert [event.worker_id for event in seen[1:]] == ["b", "b", "b"]


@pytest.mark.postgres
async def test_a_delete_on_one_worker_kills_at_once_the_job_another_runs(fleet: Fleet) -> None:
    a = await fleet.start("a")
    await fleet.busy(a)
    b = await fleet.start("b")
    job, _ = await b.worker.jobs.submit(JobRequest(image="img", command=["forever"]))
    async with asyncio.timeout(DEADLINE_S):
        await b.engine.started(job.id)
        # As a DELETE here answers: once the job has ended (a's wait is woken by b's event, not its own timer).
        killed = await a.worker.jobs.kill(job.id, grace_s=2)
    assert (killed.state, killed.reason, killed.worker_id) == (JobState.KILLED, Reason.KILLED, "b")
    assert ("stop", job.id, "job") in b.engine.events
    assert killed.exit_code == 143, "stopped with the grace the DELETE gave (SIGTERM first)"


class GatedImages(FakeImages):
    """Images whose every pull waits for `gate`: a job stays `building` until the test opens it."""

    def __init__(self) -> None:
        super().__init__(present=set(), registry={"img"})
        self.pulling = asyncio.Event()
        self.gate = asyncio.Event()

    async def ensure(self, image: str) -> bool:
        self.pulling.set()
        await self.gate.wait()
        return await super().ensure(image)


@pytest.mark.postgres
async def test_a_delete_on_one_worker_of_a_job_another_is_preparing_cancels_it(fleet: Fleet) -> None:
    a = await fleet.start("a")
    await fleet.busy(a)
    images = GatedImages()
    b = await fleet.start("b", images=images)
    job, _ = await a.worker.jobs.submit(JobRequest(image="img", command=["ok"]))
    async with asyncio.timeout(DEADLINE_S):
        await images.pulling.wait()
        killing = asyncio.ensure_future(a.worker.jobs.kill(job.id, grace_s=2))
        await b.worker.parts.dispatcher.controls[job.id].kill_requested.wait()
        images.gate.set()
        killed = await killing
    assert (killed.state, killed.reason, killed.started_at) == (JobState.KILLED, Reason.CANCELLED, None)
    assert b.engine.starts(job.id) == 0, "it never started"


async def test_a_stop_asked_while_no_wake_up_came_is_found_by_the_safety_net(make_job: Any) -> None:
    """The NOTIFY of a stop can be lost (the listener was reconnecting): the worker's own check finds it."""
    store = MemoryStore()  # its wake-ups are followed by no one here: only the check can see the request
    await store.enqueue(make_job(id="j"))
    await store.claim_next("w")
    controls = {"j": RunControl("j")}
    cancels = CancelRequests(store=store, controls=controls, worker_id="w", check_interval_s=0.05)
    stop = asyncio.Event()
    checking = asyncio.ensure_future(cancels.run(stop))
    try:
        await store.request_cancel("j", make_job().created_at, 1.5)
        async with asyncio.timeout(DEADLINE_S):
            await controls["j"].kill_requested.wait()
        assert (controls["j"].kill_grace_s, controls["j"].kill_reason) == (1.5, Reason.KILLED)
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await checking


class ScriptedStore(MemoryStore):
    """A store whose wake-ups the test sends, one at a time: `send` returns once the listener is through with it."""

    def __init__(self) -> None:
        super().__init__()
        self._sent: asyncio.Queue[Wakeup] = asyncio.Queue()
        self._through: asyncio.Queue[None] = asyncio.Queue()

    async def _follow(self) -> AsyncGenerator[Wakeup, None]:
        while True:
            yield await self._sent.get()
            self._through.put_nowait(None)  # asked for the next: the listener is through with the last

    def wakeups(self) -> AsyncGenerator[Wakeup, None]:
        return self._follow()

    async def send(self, wakeup: Wakeup) -> None:
        self._sent.put_nowait(wakeup)
        await self._through.get()


async def test_whoever_waits_on_a_job_is_woken_by_its_events_whoever_made_them(make_job: Any) -> None:
    """The store's changes here are "another worker's": nothing in this process notifies the waiters but the
    listener, which reads the log for the jobs whose events came. The waiters of this worker's own jobs are left to
    its own code, which wakes them once an ended job is cleaned up too."""
    store, signals = ScriptedStore(), JobSignals()
    cancels = CancelRequests(store=store, controls={}, worker_id="here", check_interval_s=60)
    listener = StoreListener(
        store=store,
        signals=signals,
        runs_here={"mine"},
        wake_scheduler=lambda: None,
        pulse_feed=lambda: None,
        cancels=cancels,
    )
    following = asyncio.ensure_future(listener.run())
    try:
        async with asyncio.timeout(DEADLINE_S):
            await store.send(Wakeup(Wake.ANY))
            for job_id in ("a", "b", "mine"):
                await store.enqueue(make_job(id=job_id))
            await store.send(Wakeup(Wake.EVENTS))  # no one waits: nothing is read
            with (
                signals.watching("a") as a_changed,
                signals.watching("b") as b_changed,
                signals.watching("mine") as mine_changed,
            ):
                await store.claim_next("elsewhere")  # a
                await store.send(Wakeup(Wake.EVENTS))
                assert a_changed.is_set() and b_changed.is_set(), "the first someone waits for: every waiter looks"
                assert not mine_changed.is_set()
                with signals.watching("a") as a_again, signals.watching("b") as b_again:
                    await store.claim_next("elsewhere")  # b
                    await store.send(Wakeup(Wake.EVENTS))
                    assert b_again.is_set() and not a_again.is_set(), "only the waiters of the jobs whose events came"
                    await store.mark_running("a", make_job().created_at, RunInfo())
                    await store.claim_next("here")  # mine
                    await store.send(Wakeup(Wake.EVENTS))
                    assert a_again.is_set() and not mine_changed.is_set()
    finally:
        following.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await following


async def test_a_stop_asked_between_a_claim_and_its_launch_is_applied_at_the_launch(make_job: Any) -> None:
    """The wake-up of a stop can come while the job is claimed here and not yet launched (no control to kill):
    the stop is kept, and the launch applies it, instead of the next safety-net check."""
    store = MemoryStore()
    await store.enqueue(make_job(id="j"))
    await store.claim_next("w")
    controls: dict[str, RunControl] = {}
    cancels = CancelRequests(store=store, controls=controls, worker_id="w", check_interval_s=3600)
    await store.request_cancel("j", make_job().created_at, 2.5)
    await cancels.check()  # the safety net's check: nothing runs here, the store is not asked
    await cancels.check(woken=True)  # the wake-up's: the stop is found, its job not launched yet
    control = controls["j"] = RunControl("j")
    assert not control.kill_requested.is_set()
    cancels.launched(control)
    assert control.kill_requested.is_set() and (control.kill_grace_s, control.kill_reason) == (2.5, Reason.KILLED)
    cancels.launched(other := RunControl("other"))
    assert not other.kill_requested.is_set(), "only the job the stop was asked of"
