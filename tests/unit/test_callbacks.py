"""Callbacks: signing, the backoff, what an answer means, the body, and the sender against a real HTTP receiver
on 127.0.0.1 over the in-memory store."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import SecretStr

from hatchway.egress import AddressPolicy
from hatchway.judge.report import GradeReport
from hatchway.judge.verdicts import Verdict
from hatchway.models import CallbackState, CallbackStatus, Job, JobState, utcnow
from hatchway.store import MemoryStore
from hatchway.store.postgres import PostgresStore
from hatchway.worker.callbacks import (
    UNREACHABLE,
    CallbackSender,
    payload,
    retry_after_s,
    retry_delay_s,
    sign,
    verdict,
)
from tests.fakes.receiver import Receiver, receiving
from tests.postgres_db import fresh_schema

SECRET = "a-callback-secret-of-the-tests"
LOOPBACK = AddressPolicy.of(["127.0.0.0/8"])
"""The fake receivers are on loopback, which callbacks reach only when told to."""
MakeJob = Callable[..., Job]


def test_the_signature_is_the_hmac_sha256_of_the_exact_body() -> None:
    body = b'{"id":"j1","state":"succeeded"}'
    expected = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert sign(body, SECRET) == f"sha256={expected}"
    assert sign(body + b" ", SECRET) != sign(body, SECRET)
    assert sign(body, SECRET + "x") != sign(body, SECRET)


@pytest.mark.parametrize(("attempts", "step_s"), [(1, 1), (2, 2), (3, 4), (6, 32), (7, 60), (500, 60)])
def test_retries_back_off_doubling_up_to_a_minute_with_jitter(attempts: int, step_s: float) -> None:
    delays = [retry_delay_s(attempts) for _ in range(200)]
    assert all(0.8 * step_s <= delay <= step_s for delay in delays)
    assert len(set(delays)) > 1, "jittered"


@pytest.mark.parametrize(
    ("status", "state"),
    [
        (200, CallbackState.DELIVERED),
        (204, CallbackState.DELIVERED),
        (500, CallbackState.PENDING),
        (503, CallbackState.PENDING),
        (408, CallbackState.PENDING),
        (429, CallbackState.PENDING),
        (400, CallbackState.FAILED),
        (404, CallbackState.FAILED),
        (410, CallbackState.FAILED),
        (301, CallbackState.FAILED),
    ],
)
def test_what_an_answer_means(status: int, state: CallbackState) -> None:
    assert verdict(status) == state


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with receiving() as fake:
        yield fake


@pytest.fixture
def ended(make_job: MakeJob, receiver: Receiver) -> Callable[..., Job]:
    """A job that has ended, with a callback to the receiver."""

    def make(job_id: str = "j1", **fields: Any) -> Job:
        callback = CallbackStatus(url=f"{receiver.url}/hook?job={job_id}", delivery_id=f"delivery-{job_id}")
        now = utcnow()
        values: dict[str, Any] = {
            "state": JobState.SUCCEEDED,
            "exit_code": 0,
            "stdout": "hi\n",
            "started_at": now - timedelta(seconds=1),
            "finished_at": now,
            "callback": callback,
        }
        values.update(fields)
        return make_job(id=job_id, **values)

    return make


@pytest.fixture
async def store() -> AsyncIterator[MemoryStore]:
    memory = MemoryStore()
    yield memory
    await memory.close()


@pytest.fixture
async def start_sender(store: MemoryStore) -> AsyncIterator[Callable[..., CallbackSender]]:
    """Run senders (backing off 10 ms at first, so that retries come quickly) until the test ends."""
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []

    def start(**options: Any) -> CallbackSender:
        values: dict[str, Any] = {
            "store": store,
            "secret": SecretStr(SECRET),
            "retry_s": 3600.0,
            "timeout_s": 5.0,
            "worker_id": "w1",
            "first_retry_s": 0.01,
            "max_retry_s": 0.05,
            "addresses": LOOPBACK,
        }
        values.update(options)
        sender = CallbackSender(**values)
        tasks.append(asyncio.create_task(sender.run(stop)))
        return sender

    yield start
    stop.set()
    await asyncio.gather(*tasks)


async def callback_when(
    sender: CallbackSender,
    store: MemoryStore,
    job_id: str,
    what: Callable[[CallbackStatus], bool],
    timeout_s: float = 30,
) -> CallbackStatus:
    """The job's callback once `what` holds for it (awaiting the sender's records, not polling)."""
    async with asyncio.timeout(timeout_s):
        while True:
            changed = sender.next_change()
            job = await store.get(job_id)
            assert job is not None and job.callback is not None
            if what(job.callback):
                return job.callback
            await changed.wait()


async def settled(sender: CallbackSender, store: MemoryStore, job_id: str) -> CallbackStatus:
    """The job's callback once it is no longer pending."""
    return await callback_when(sender, store, job_id, lambda callback: callback.state != CallbackState.PENDING)


async def test_a_delivery_is_signed_and_carries_its_id_event_and_the_job(
    store: MemoryStore, ended: Callable[..., Job], receiver: Receiver, start_sender: Callable[..., CallbackSender]
) -> None:
    job, _ = await store.enqueue(ended())
    sender = start_sender()
    callback = await settled(sender, store, job.id)
    [got] = receiver.received
    assert got.path == "/hook?job=j1"
    assert got.headers["content-type"] == "application/json"
    assert got.headers["x-hatchway-delivery"] == "delivery-j1"
    assert got.headers["x-hatchway-event"] == "job.finished"
    assert got.headers["user-agent"].startswith("hatchway/")
    expected = hmac.new(SECRET.encode(), got.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(got.headers["x-hatchway-signature"], f"sha256={expected}")
    body = json.loads(got.body)
    assert (body["id"], body["state"], body["stdout"], body["exit_code"]) == ("j1", "succeeded", "hi\n", 0)
    assert "callback" not in body, "the body is the job, not the state of its own delivery"
    assert SECRET not in got.body.decode()
    assert callback.state == CallbackState.DELIVERED
    assert (callback.attempts, callback.last_status, callback.last_error) == (1, 200, None)
    assert callback.delivered_at is not None and callback.next_attempt_at is None


async def test_a_receiver_failing_twice_gets_it_on_the_third_attempt_with_the_same_id_and_body(
    store: MemoryStore, ended: Callable[..., Job], receiver: Receiver, start_sender: Callable[..., CallbackSender]
) -> None:
    receiver.answers = [500, 503]
    job, _ = await store.enqueue(ended())
    callback = await settled(start_sender(), store, job.id)
    assert [item.answered for item in receiver.received] == [500, 503, 200]
    assert len({item.headers["x-hatchway-delivery"] for item in receiver.received}) == 1
    assert len({item.body for item in receiver.received}) == 1, "every attempt sends the same bytes"
    assert callback.state == CallbackState.DELIVERED
    assert (callback.attempts, callback.last_status) == (3, 200)


async def test_a_receiver_saying_when_to_come_back_is_not_tried_sooner(
    store: MemoryStore, ended: Callable[..., Job], receiver: Receiver, start_sender: Callable[..., CallbackSender]
) -> None:
    receiver.answers, receiver.retry_after = [429], "2"
    job, _ = await store.enqueue(ended())
    sender = start_sender()
    callback = await callback_when(sender, store, job.id, lambda item: item.attempts == 1)
    assert callback.state == CallbackState.PENDING and callback.last_status == 429
    assert callback.next_attempt_at is not None and callback.last_attempt_at is not None
    assert callback.next_attempt_at - callback.last_attempt_at >= timedelta(seconds=2), "not the 10 ms backoff"
    callback = await settled(sender, store, job.id)
    assert callback.state == CallbackState.DELIVERED and callback.attempts == 2


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("120", 120.0),
        ("Mon, 30 Nov 2026 12:01:00 GMT", 60.0),
        ("Mon, 30 Nov 2026 11:00:00 GMT", 0.0),
        ("999999", 3600.0),
        ("soon", None),
        (None, None),
    ],
    ids=["seconds", "date", "past-date", "capped", "unreadable", "absent"],
)
def test_retry_after_is_read_as_seconds_or_a_date(value: str | None, seconds: float | None) -> None:
    now = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    assert retry_after_s(value, now=now) == seconds


async def test_a_job_that_ends_wakes_the_sender(
    store: MemoryStore,
    ended: Callable[..., Job],
    receiver: Receiver,
    start_sender: Callable[..., CallbackSender],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first, _ = await store.enqueue(ended("first"))
    # Once the first is delivered, the sender looks once more, finds nothing due, and waits: its safety net is
    # 30 s away. It asks the store when the next is due last before it waits, without pausing in between.
    idle, next_callback_at = asyncio.Event(), store.next_callback_at

    async def spied(after: datetime) -> datetime | None:
        found = await next_callback_at(after)
        stored = await store.get(first.id)
        callback = stored.callback if stored is not None else None
        if found is None and callback is not None and callback.state == CallbackState.DELIVERED:
            idle.set()
        return found

    monkeypatch.setattr(store, "next_callback_at", spied)
    sender = start_sender()
    await settled(sender, store, first.id)
    await asyncio.wait_for(idle.wait(), 5)
    job, _ = await store.enqueue(ended("second"))
    sender.ended(job)
    callback = await callback_when(sender, store, job.id, lambda item: item.state != CallbackState.PENDING, 10)
    assert callback.state == CallbackState.DELIVERED and len(receiver.received) == 2


async def test_a_refusal_is_final(
    store: MemoryStore, ended: Callable[..., Job], receiver: Receiver, start_sender: Callable[..., CallbackSender]
) -> None:
    receiver.answers = [404]
    job, _ = await store.enqueue(ended())
    callback = await settled(start_sender(), store, job.id)
    assert callback.state == CallbackState.FAILED
    assert (callback.attempts, callback.last_status) == (1, 404)
    assert callback.last_error == "the receiver answered 404"
    assert callback.delivered_at is None and callback.next_attempt_at is None
    assert len(receiver.received) == 1


async def test_a_redirect_is_not_followed(
    store: MemoryStore, ended: Callable[..., Job], receiver: Receiver, start_sender: Callable[..., CallbackSender]
) -> None:
    receiver.answers = [302]
    job, _ = await store.enqueue(ended())
    callback = await settled(start_sender(), store, job.id)
    assert callback.state == CallbackState.FAILED and "redirects are not followed" in (callback.last_error or "")
    assert [item.path for item in receiver.received] == ["/hook?job=j1"]


async def test_retries_end_with_the_window(
    store: MemoryStore, ended: Callable[..., Job], receiver: Receiver, start_sender: Callable[..., CallbackSender]
) -> None:
    receiver.then = 500
    job, _ = await store.enqueue(ended())
    callback = await settled(start_sender(retry_s=0), store, job.id)
    assert callback.state == CallbackState.FAILED and callback.attempts == 1
    assert callback.last_error == "the receiver answered 500; given up after 1 attempts (callback_retry_s is 0)"


async def test_a_receiver_that_cannot_be_reached_is_tried_again(
    store: MemoryStore, ended: Callable[..., Job], start_sender: Callable[..., CallbackSender]
) -> None:
    with receiving() as gone:
        url = gone.url
    later = Receiver()
    job, _ = await store.enqueue(ended(callback=CallbackStatus(url=f"{url}/hook", delivery_id="d")))
    sender = start_sender()
    tried = await callback_when(sender, store, job.id, lambda callback: callback.attempts >= 2)
    assert tried.state == CallbackState.PENDING and tried.last_status is None
    assert tried.last_error == UNREACHABLE
    port = int(url.rsplit(":", 1)[1])
    with receiving(port, later):
        callback = await settled(sender, store, job.id)
    assert callback.state == CallbackState.DELIVERED and len(later.received) == 1


async def test_an_address_that_is_not_public_is_refused_and_nothing_is_sent(
    store: MemoryStore, ended: Callable[..., Job], receiver: Receiver, start_sender: Callable[..., CallbackSender]
) -> None:
    job, _ = await store.enqueue(ended())
    sender = start_sender(addresses=AddressPolicy())
    tried = await callback_when(sender, store, job.id, lambda callback: callback.attempts >= 2)
    # Just as a receiver that does not answer: the same words, and tried again.
    assert (tried.state, tried.last_status, tried.last_error) == (CallbackState.PENDING, None, UNREACHABLE)
    assert receiver.received == []


async def test_without_a_secret_a_delivery_goes_unsigned(
    store: MemoryStore, ended: Callable[..., Job], receiver: Receiver, start_sender: Callable[..., CallbackSender]
) -> None:
    job, _ = await store.enqueue(ended())
    await settled(start_sender(secret=None), store, job.id)
    [got] = receiver.received
    assert "x-hatchway-signature" not in got.headers and got.headers["x-hatchway-delivery"] == "delivery-j1"


async def test_only_ended_jobs_are_delivered_and_each_once(
    store: MemoryStore, ended: Callable[..., Job], receiver: Receiver, start_sender: Callable[..., CallbackSender]
) -> None:
    await store.enqueue(ended("queued", state=JobState.QUEUED, finished_at=None))
    await store.enqueue(ended("a"))
    await store.enqueue(ended("b", state=JobState.FAILED, reason="exit_code", exit_code=3))
    sender = start_sender()
    assert (await settled(sender, store, "a")).state == CallbackState.DELIVERED
    assert (await settled(sender, store, "b")).state == CallbackState.DELIVERED
    queued = await store.get("queued")
    assert queued is not None and queued.callback is not None and queued.callback.attempts == 0
    assert sorted(item.path for item in receiver.received) == ["/hook?job=a", "/hook?job=b"]


async def test_a_grading_s_callback_carries_its_result(
    store: MemoryStore, ended: Callable[..., Job], receiver: Receiver, start_sender: Callable[..., CallbackSender]
) -> None:
    job = ended("g1", grade=GradeReport(verdict=Verdict.AC, score=2, max_score=2, passed=2, total=2))
    job = job.model_copy(update={"spec": job.spec.model_copy(update={"kind": "grade"})})
    await store.enqueue(job)
    await settled(start_sender(), store, "g1")
    [got] = receiver.received
    assert got.headers["x-hatchway-event"] == "grade.finished"
    body = json.loads(got.body)
    assert (body["id"], body["state"], body["verdict"], body["score"], body["passed"]) == (
        "g1",
        "succeeded",
        "AC",
        2,
        2,
    )
    assert "callback" not in body and "stdout" not in body


def test_the_body_is_the_job_as_its_get_shows_it(ended: Callable[..., Job]) -> None:
    job = ended()
    event, body = payload(job)
    assert event == "job.finished"
    assert json.loads(body) == json.loads(job.model_dump_json(exclude={"callback"}))
    assert payload(job) == (event, body), "the same bytes every time"


async def test_at_shutdown_a_pending_delivery_gets_one_last_try_and_stays_pending(
    store: MemoryStore, ended: Callable[..., Job], receiver: Receiver
) -> None:
    receiver.then = 503
    job, _ = await store.enqueue(ended())
    sender = CallbackSender(
        store=store,
        secret=None,
        retry_s=3600,
        timeout_s=5,
        worker_id="w1",
        first_retry_s=3600,
        max_retry_s=3600,
        addresses=LOOPBACK,
    )
    stop = asyncio.Event()
    running = asyncio.create_task(sender.run(stop))
    await callback_when(sender, store, job.id, lambda callback: callback.attempts == 1)
    stop.set()
    await running
    after = await store.get(job.id)
    assert after is not None and after.callback is not None
    assert after.callback.state == CallbackState.PENDING, "left for the next start"
    assert after.callback.attempts == 2, "the first try, then one more at shutdown despite the hour of backoff"


@pytest.mark.postgres
async def test_two_workers_on_one_store_deliver_each_callback_once(
    ended: Callable[..., Job], receiver: Receiver
) -> None:
    async with fresh_schema() as url:
        stores = [PostgresStore(url), PostgresStore(url)]
        try:
            for index in range(20):
                await stores[0].enqueue(ended(f"j{index:02}"))
            stop = asyncio.Event()
            senders = [
                CallbackSender(
                    store=store,
                    secret=SecretStr(SECRET),
                    retry_s=3600.0,
                    timeout_s=5.0,
                    worker_id=f"w{number}",
                    addresses=LOOPBACK,
                )
                for number, store in enumerate(stores)
            ]
            tasks = [asyncio.create_task(sender.run(stop)) for sender in senders]
            await asyncio.to_thread(receiver.wait_for, 20)
            async with asyncio.timeout(30):  # until each delivery is recorded, by one sender or the other
                pending = True
                while pending:
                    changes = [asyncio.ensure_future(sender.next_change().wait()) for sender in senders]
                    pending = bool(await stores[0].due_callbacks(datetime(9999, 1, 1, tzinfo=UTC), 1))
                    if pending:
                        await asyncio.wait(changes, return_when=asyncio.FIRST_COMPLETED)
                    for change in changes:
                        change.cancel()
            stop.set()
            await asyncio.gather(*tasks)  # every attempt under way has ended
        finally:
            for store in stores:
                await store.close()
    delivered = sorted(item.headers["x-hatchway-delivery"] for item in receiver.received)
    assert delivered == [f"delivery-j{index:02}" for index in range(20)], "each once"
