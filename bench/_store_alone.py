"""The store alone, without workers: claims by K processes at once, and NOTIFY's latency; and what bench_fleet.py's
parts share (a fresh schema, percentiles). Measurements, not tests."""

from __future__ import annotations

import asyncio
import multiprocessing
import queue
import statistics
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.synchronize import Barrier
from typing import Any
from urllib.parse import quote

import psycopg
from _common import ECHO_COMMAND, IMAGE
from psycopg import sql

from hatchway.models import Job, JobRequest, JobState, utcnow
from hatchway.settings import Settings
from hatchway.store.pg_schema import QUEUE_CHANNEL
from hatchway.store.postgres import PostgresStore
from hatchway.worker.wiring import policy_from_settings

# NOTIFY channels belong to the database, not to a schema: whatever else runs on it (other schemas' tests) is heard
# too. The samples' priorities, from here up, tell their notifications (payload: the priority) from the rest.
NOTIFY_PRIORITY = 900_000


@contextmanager
def fresh_schema(database: str) -> Iterator[str]:
    """A `store_url` whose connections see only a new, empty schema of `database`; dropped afterwards."""
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(database, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        try:
            options = quote(f"-c search_path={schema}", safe="")
            yield f"{database}{'&' if '?' in database else '?'}options={options}"
        finally:
            admin.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def server_settings(database: str, *names: str) -> dict[str, str]:
    with psycopg.connect(database) as db:
        return {name: str(db.execute(sql.SQL("SHOW {}").format(sql.Identifier(name))).fetchone()[0]) for name in names}


def percentile(values: list[float], pct: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[pct - 1] if len(values) > 1 else values[0]


# The store alone: claims.


@dataclass
class ClaimRun:
    claimers: int
    claims_per_s: float
    latencies: list[float]  # seconds, every claim that found a job
    claimer_cpu_s: float  # CPU the claiming processes spent, per claim
    enqueues_per_s: float


@dataclass
class Claimed:
    """What one claiming process got: the jobs, each claim's latency, its start and end (perf_counter), its CPU."""

    ids: list[str]
    latencies: list[float]
    start: float
    end: float
    cpu_s: float


def queued_jobs(priorities: list[int]) -> list[Job]:
    """Queued trivial jobs, one a priority, built as the service builds them (its policy admits the request)."""
    policy = policy_from_settings(Settings(), allowed_runtimes=["docker"], available_runtimes=lambda: ["docker"])
    jobs = []
    for priority in priorities:
        spec = policy.admit(JobRequest(image=IMAGE, command=ECHO_COMMAND, priority=priority)).spec
        jobs.append(
            Job(
                id=f"bench-{uuid.uuid4().hex}",
                state=JobState.QUEUED,
                created_at=utcnow(),
                image=spec.image,
                labels=spec.labels,
                priority=spec.priority,
                spec=spec,
            )
        )
    return jobs


async def _enqueue_all(url: str, jobs: list[Job], concurrency: int) -> float:
    """Enqueue `jobs` over `concurrency` connections; enqueues/s."""
    store = PostgresStore(url, max_size=concurrency)
    await store.open()
    try:
        pending = iter(jobs)
        start = time.perf_counter()

        async def enqueuer() -> None:
            for job in pending:
                await store.enqueue(job)

        await asyncio.gather(*(enqueuer() for _ in range(concurrency)))
        return len(jobs) / (time.perf_counter() - start)
    finally:
        await store.close()


def _claimer(url: str, worker_id: str, barrier: Barrier, results: multiprocessing.Queue[Any]) -> None:
    """One claiming worker (a process of its own): claim until the queue is empty; put what it got in `results`."""
    results.put(asyncio.run(_claim_all(url, worker_id, barrier)))


async def _claim_all(url: str, worker_id: str, barrier: Barrier) -> Claimed:
    store = PostgresStore(url, max_size=1)
    await store.open()
    try:
        await asyncio.to_thread(barrier.wait, 120)  # every claimer connected: start together
        ids: list[str] = []
        latencies: list[float] = []
        start, cpu = time.perf_counter(), time.process_time()  # perf_counter: CLOCK_MONOTONIC, one for all
        while True:
            before = time.perf_counter()
            job = await store.claim_next(worker_id)
            if job is None:
                return Claimed(ids, latencies, start, time.perf_counter(), time.process_time() - cpu)
            latencies.append(time.perf_counter() - before)
            ids.append(job.id)
    finally:
        await store.close()


def measure_claims(database: str, count: int, claimers: int) -> ClaimRun:
    """`count` jobs queued in a fresh schema, then claimed by `claimers` processes started together; every job
    must be claimed exactly once. Time runs from the first claimer's start to the last one finding none left."""
    with fresh_schema(database) as url:
        jobs = queued_jobs([0] * count)
        enqueues_per_s = asyncio.run(_enqueue_all(url, jobs, 8))
        context = multiprocessing.get_context("spawn")
        barrier, results = context.Barrier(claimers + 1), context.Queue()
        processes = [
            context.Process(target=_claimer, args=(url, f"bench-claimer-{index}", barrier, results))
            for index in range(claimers)
        ]
        for process in processes:
            process.start()
        try:
            barrier.wait(120)
            got = [results.get(timeout=300) for _ in processes]
        finally:
            for process in processes:
                process.join(10)
                if process.is_alive():
                    process.kill()
                    process.join()
        claimed = Counter(job_id for one in got for job_id in one.ids)
        twice = [job_id for job_id, times in claimed.items() if times > 1]
        if twice or set(claimed) != {job.id for job in jobs}:
            raise RuntimeError(f"claims collided: {len(twice)} claimed twice, {count - len(claimed)} never")
        seconds = max(one.end for one in got) - min(one.start for one in got)
        latencies = [latency for one in got for latency in one.latencies]
        cpu_s = sum(one.cpu_s for one in got) / count
        return ClaimRun(claimers, count / seconds, latencies, cpu_s, enqueues_per_s)


# NOTIFY.


@dataclass
class NotifyRun:
    after_send: list[float]  # enqueue sent -> notification heard: the commit is in between
    after_answer: list[float]  # enqueue answered (committed) -> notification heard; may be < 0
    enqueue: list[float]  # the enqueue's own round trip


def measure_notify(database: str, samples: int) -> NotifyRun:
    """One enqueue at a time through `PostgresStore`, a thread LISTENing on its own connection as a worker will."""
    with fresh_schema(database) as url, psycopg.connect(url, autocommit=True) as listener:
        listener.execute(sql.SQL("LISTEN {}").format(sql.Identifier(QUEUE_CHANNEL)))
        heard: queue.Queue[tuple[float, str]] = queue.Queue()
        stop = threading.Event()

        def listen() -> None:
            while not stop.is_set():
                for note in listener.notifies(timeout=0.2):
                    heard.put((time.perf_counter(), note.payload))

        thread = threading.Thread(target=listen, name="listener")
        thread.start()
        try:
            return asyncio.run(_notify_samples(url, samples, heard))
        finally:
            stop.set()
            thread.join()


async def _notify_samples(url: str, samples: int, heard: queue.Queue[tuple[float, str]]) -> NotifyRun:
    warm_up = 5
    store = PostgresStore(url, max_size=1)
    await store.open()
    run = NotifyRun([], [], [])
    try:
        for index, job in enumerate(queued_jobs(list(range(NOTIFY_PRIORITY, NOTIFY_PRIORITY + samples + warm_up)))):
            sent = time.perf_counter()
            await store.enqueue(job)
            answered = time.perf_counter()
            arrived = await asyncio.to_thread(_heard, heard, str(job.priority))
            if index >= warm_up:
                run.after_send.append(arrived - sent)
                run.after_answer.append(arrived - answered)
                run.enqueue.append(answered - sent)
    finally:
        await store.close()
    return run


def _heard(heard: queue.Queue[tuple[float, str]], payload: str) -> float:
    """When the notification with `payload` arrived (others, from whatever else uses the database, are skipped)."""
    deadline = time.monotonic() + 10
    while True:
        try:
            arrived, got = heard.get(timeout=max(deadline - time.monotonic(), 0.001))
        except queue.Empty:
            raise RuntimeError(f"no notification {payload!r} on {QUEUE_CHANNEL} within 10 s") from None
        if got == payload:
            return arrived
