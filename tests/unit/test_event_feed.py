"""Following the event log: replay after an id, then live events as the worker's notifications announce them,
a notice where events were pruned, keep-alives, and an end when the worker stops."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from hatchway.jobs import event_feed
from hatchway.jobs.event_feed import EventFeed, EventFilter, EventsMissed, FeedItem
from hatchway.jobs.notify import JobSignals
from hatchway.models import Job
from hatchway.output.events import JobEvent
from hatchway.store import MemoryStore

MakeJob = Callable[..., Job]
pytestmark = pytest.mark.timeout(10)


class Fixture:
    def __init__(self) -> None:
        self.store = MemoryStore()
        self.signals = JobSignals()
        self.stopping = asyncio.Event()
        self.feed = EventFeed(self.store, self.signals, stopping=self.stopping)
        self.caught_up = asyncio.Event()
        """Set when a follower has nothing more to give and waits for a notification, the stop or its time."""

    async def enqueue(self, job: Job) -> None:
        await self.store.enqueue(job)
        self.signals.notify(job.id)


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> Fixture:
    made = Fixture()
    first = event_feed._first

    async def waits(*events: asyncio.Event, timeout_s: float) -> None:
        made.caught_up.set()
        await first(*events, timeout_s=timeout_s)

    monkeypatch.setattr(event_feed, "_first", waits)
    return made


async def take(items: AsyncIterator[FeedItem], count: int) -> list[FeedItem]:
    return [await anext(items) for _ in range(count)]


def ids(items: list[FeedItem]) -> list[int]:
    return [item.id for item in items if isinstance(item, JobEvent)]


async def test_replays_after_an_id_then_follows_live(world: Fixture, make_job: MakeJob) -> None:
    for number in range(3):
        await world.enqueue(make_job(id=f"old{number}"))
    items = world.feed.follow(1, EventFilter())
    assert ids(await take(items, 2)) == [2, 3]
    world.caught_up.clear()
    waiting = asyncio.ensure_future(anext(items))
    await asyncio.wait_for(world.caught_up.wait(), 2)  # it waits for a notification now
    assert not waiting.done(), "nothing new yet"
    await world.enqueue(make_job(id="new"))
    event = await asyncio.wait_for(waiting, 2)  # woken by the notification, well before the 5 s re-check
    assert isinstance(event, JobEvent) and (event.id, event.job_id) == (4, "new")
    await items.aclose()


async def test_without_an_id_only_new_events_come(world: Fixture, make_job: MakeJob) -> None:
    await world.enqueue(make_job(id="before"))
    items = world.feed.follow(None, EventFilter())
    waiting = asyncio.ensure_future(anext(items))
    await asyncio.wait_for(world.caught_up.wait(), 2)  # it has begun, from now on, and waits
    await world.enqueue(make_job(id="after"))
    event = await asyncio.wait_for(waiting, 2)
    assert isinstance(event, JobEvent) and event.job_id == "after"
    await items.aclose()


async def test_pruned_events_are_announced_not_skipped(world: Fixture, make_job: MakeJob) -> None:
    for number in range(5):
        await world.enqueue(make_job(id=f"j{number}"))
    await world.store.prune_events(2)
    items = world.feed.follow(1, EventFilter())
    notice, *events = await take(items, 3)
    assert isinstance(notice, EventsMissed) and (notice.after, notice.resumed_after) == (1, 3)
    assert "2 to 3" in notice.message
    assert ids(events) == [4, 5]
    await items.aclose()


async def test_an_id_beyond_the_log_is_announced_and_the_log_replayed(world: Fixture, make_job: MakeJob) -> None:
    await world.enqueue(make_job(id="only"))
    items = world.feed.follow(99, EventFilter())
    notice, event = await take(items, 2)
    assert isinstance(notice, EventsMissed) and notice.resumed_after == 0 and "newer than any" in notice.message
    assert isinstance(event, JobEvent) and event.id == 1
    await items.aclose()


async def test_filters_and_keep_alives(world: Fixture, make_job: MakeJob) -> None:
    await world.enqueue(make_job(id="a"))
    await world.enqueue(make_job(id="b"))
    items = world.feed.follow(0, EventFilter(job_id="b"), idle_s=0.1)
    event, keep_alive = await take(items, 2)
    assert isinstance(event, JobEvent) and event.job_id == "b"
    assert keep_alive is None
    await items.aclose()


async def test_the_stream_ends_once_the_worker_stops(world: Fixture, make_job: MakeJob) -> None:
    await world.enqueue(make_job(id="a"))
    items = world.feed.follow(0, EventFilter())
    assert ids(await take(items, 1)) == [1]
    world.caught_up.clear()
    waiting = asyncio.ensure_future(anext(items))
    await asyncio.wait_for(world.caught_up.wait(), 2)  # it waits for a notification, or the stop
    world.stopping.set()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(waiting, 2)
