"""An in-memory job store: for unit tests and one-shot `hatchway run`, where nothing needs to persist."""

from __future__ import annotations

import bisect
import heapq
import time
from collections.abc import AsyncGenerator
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from typing import Any

from hatchway.models import (
    ACTIVE_STATES,
    CallbackState,
    CallbackStatus,
    Job,
    JobKind,
    JobState,
    JobSummary,
    Outcome,
    Reason,
    Resources,
    RunInfo,
    Stream,
    utcnow,
)
from hatchway.output.events import EventBatch, JobEvent, event_type
from hatchway.output.line_times import LineTimes
from hatchway.store.base import Fit, JobPage, JobQuery, ReportHold
from hatchway.store.fleet import (
    Fate,
    LeaseLost,
    Reclaim,
    WorkerInfo,
    WorkerStatus,
    fate_message,
    fate_of,
    lease_lost,
    worker_row,
    worker_status,
)
from hatchway.store.holds import LocalHolds
from hatchway.store.wakeups import LocalWakeups, Wakeup

_LONG_AGO = datetime.fromtimestamp(0, UTC)  # a callback not tried yet is due as soon as its job ends


class MemoryStore:
    """A `JobStore` that keeps jobs in a dict, the queue in a heap and the events in a list."""

    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}
        self._claims: dict[tuple[str, str], tuple[str, str | None]] = {}  # (origin, external id) -> item, worker
        self._holds = LocalHolds()
        self._seq: dict[str, int] = {}
        self._queue: list[tuple[int, int, str]] = []
        self._output_times: dict[str, dict[Stream, list[int]]] = {}
        self._events: list[JobEvent] = []
        self._newest_event = 0
        self._cursors: dict[str, int] = {}
        self._held: dict[str, datetime] = {}
        """Callbacks held for a sender (`due_callbacks`), until when."""
        self._workers: dict[str, dict[str, Any]] = {}
        """The fleet's registry: rows as the `workers` table has them."""
        self._cancel_grace_s: dict[str, float] = {}
        self._wakeups = LocalWakeups()

    async def enqueue(self, job: Job) -> tuple[Job, bool]:
        if job.id in self._jobs:
            return self._jobs[job.id], False
        seq = len(self._seq) + 1
        self._jobs[job.id] = job
        self._seq[job.id] = seq
        if job.state == JobState.QUEUED:
            heapq.heappush(self._queue, (-job.priority, seq, job.id))
        self._record(None, job)
        return job, True

    async def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    async def state_of(self, job_id: str) -> JobState | None:
        job = self._jobs.get(job_id)
        return None if job is None else job.state

    async def unreported(self, origin: str) -> list[Job]:
        return [
            job
            for job_id, job in sorted(self._jobs.items(), key=lambda item: self._seq[item[0]])
            if job.origin == origin and job.reported_at is None and job.state.is_final
        ]

    async def mark_reported(self, job_id: str, reported_at: datetime) -> Job | None:
        job = self._jobs.get(job_id)
        if job is None or job.reported_at is not None or not job.state.is_final:
            return None
        return self._update(job, reported_at=reported_at)

    def hold_report(self, origin: str) -> AbstractAsyncContextManager[ReportHold | None]:
        async def oldest(count: int) -> list[Job]:
            return (await self.unreported(origin))[:count]

        return self._holds.hold(oldest, self.mark_reported)

    async def record_claim(self, origin: str, external_id: str, item: str, worker_id: str) -> None:
        self._claims.setdefault((origin, external_id), (item, worker_id))

    async def claims(self, origin: str, worker_id: str) -> list[tuple[str, str]]:
        for key, (item, owner) in self._claims.items():
            if key[0] == origin and owner is None:
                self._claims[key] = (item, worker_id)
        return [
            (external_id, item)
            for (source, external_id), (item, owner) in self._claims.items()
            if source == origin and owner == worker_id
        ]

    async def forget_claim(self, origin: str, external_id: str) -> None:
        self._claims.pop((origin, external_id), None)

    async def adopt_claims(self, from_worker: str, to_worker: str) -> int:
        return self._adopt(from_worker, to_worker)

    def _adopt(self, from_worker: str, to_worker: str) -> int:
        adopted = [key for key, (_, owner) in self._claims.items() if owner == from_worker]
        for key in adopted:
            self._claims[key] = (self._claims[key][0], to_worker)
        return len(adopted)

    async def due_callbacks(self, now: datetime, limit: int, *, hold_until: datetime | None = None) -> list[Job]:
        due = [(at, self._seq[job.id], job) for job in self._ended_with_callbacks() if (at := self._due(job)) <= now]
        picked = [job for _, _, job in sorted(due, key=lambda item: item[:2])][:limit]
        if hold_until is not None:
            for job in picked:
                self._held[job.id] = max(hold_until, _due_at(job))
        return picked

    async def next_callback_at(self, after: datetime) -> datetime | None:
        return min((at for job in self._ended_with_callbacks() if (at := self._due(job)) > after), default=None)

    def _due(self, job: Job) -> datetime:
        return self._held.get(job.id) or _due_at(job)

    def _ended_with_callbacks(self) -> list[Job]:
        return [
            job
            for job in self._jobs.values()
            if job.callback is not None and job.callback.state == CallbackState.PENDING and job.state.is_final
        ]

    async def record_callback(self, job_id: str, callback: CallbackStatus) -> Job | None:
        job = self._jobs.get(job_id)
        if job is None or job.callback is None or job.callback.state != CallbackState.PENDING:
            return None
        if job.callback.attempts != callback.attempts - 1:
            return None
        self._held.pop(job_id, None)
        return self._update(job, callback=callback)

    async def find(self, query: JobQuery) -> JobPage:
        if query.cursor is not None and not query.cursor.isdigit():
            raise ValueError(f"cursor {query.cursor!r} is not one this worker handed out")
        before = int(query.cursor) if query.cursor is not None else None
        found: list[JobSummary] = []
        for job_id in sorted(self._jobs, key=self._seq.__getitem__, reverse=True):
            job = self._jobs[job_id]
            if before is not None and self._seq[job_id] >= before:
                continue
            if query.state is not None and job.state != query.state:
                continue
            if query.kind is not None and job.kind != query.kind:
                continue
            if any(job.labels.get(key) != value for key, value in query.labels.items()):
                continue
            found.append(job.summary())
            if len(found) == query.limit:
                return JobPage(jobs=found, next_cursor=str(self._seq[job_id]))
        return JobPage(jobs=found, next_cursor=None)

    async def claim_next(self, worker_id: str, fit: Fit | None = None) -> Job | None:
        skipped: list[tuple[int, int, str]] = []
        try:
            while self._queue:
                entry = heapq.heappop(self._queue)
                job = self._jobs[entry[2]]
                if job.state != JobState.QUEUED:
                    continue  # a stale entry: the job was cancelled, or is queued again under a fresh entry
                if fit is not None and not fit.admits(job.spec):
                    skipped.append(entry)
                    continue
                return self._update(job, state=JobState.BUILDING, worker_id=worker_id, message=None)
            return None
        finally:
            for entry in skipped:
                heapq.heappush(self._queue, entry)

    async def mark_running(self, job_id: str, started_at: datetime, run: RunInfo) -> Job | None:
        job = self._jobs.get(job_id)
        if job is None or job.state != JobState.BUILDING:
            return None
        return self._update(job, state=JobState.RUNNING, started_at=started_at, run=run)

    async def mark_launching(self, job_id: str, launched_at: datetime) -> Job | None:
        job = self._jobs.get(job_id)
        if job is None or job.state != JobState.BUILDING:
            return None
        return self._update(job, launched_at=launched_at)

    async def update_resources(self, job_id: str, resources: Resources) -> None:
        job = self._jobs.get(job_id)
        if job is not None and job.state in ACTIVE_STATES:
            self._update(job, resources=resources)

    async def finish(self, job_id: str, outcome: Outcome, finished_at: datetime) -> Job | None:
        job = self._jobs.get(job_id)
        if job is None or job.state not in ACTIVE_STATES:
            return None
        changes = outcome.model_dump()
        self._output_times[job_id] = changes.pop("output_times")
        return self._update(job, **changes, finished_at=finished_at)

    async def cancel(self, job_id: str, finished_at: datetime) -> Job | None:
        job = self._jobs.get(job_id)
        if job is None or job.state != JobState.QUEUED:
            return None
        return self._update(
            job,
            state=JobState.KILLED,
            reason=Reason.CANCELLED,
            message="killed before it started",
            finished_at=finished_at,
        )

    async def requeue_lost(self, job_id: str) -> Job | None:
        job = self._jobs.get(job_id)
        if job is None or job.state not in ACTIVE_STATES:
            return None
        heapq.heappush(self._queue, (-job.priority, self._seq[job_id], job_id))
        return self._update(job, state=JobState.QUEUED, worker_id=None, started_at=None, launched_at=None)

    async def requeue_unstarted(self, job_id: str, message: str) -> Job | None:
        job = self._jobs.get(job_id)
        if job is None or job.state != JobState.BUILDING:
            return None
        heapq.heappush(self._queue, (-job.priority, self._seq[job_id], job_id))
        return self._update(job, state=JobState.QUEUED, worker_id=None, message=message, launched_at=None)

    async def active(self, worker_id: str) -> list[Job]:
        return [job for job in self._jobs.values() if job.state in ACTIVE_STATES and job.worker_id == worker_id]

    async def counts(self) -> dict[JobState, int]:
        counts = dict.fromkeys((JobState.QUEUED, JobState.BUILDING, JobState.RUNNING), 0)
        for job in self._jobs.values():
            if job.state in counts:
                counts[job.state] += 1
        return counts

    async def output_times(self, job_id: str) -> dict[Stream, LineTimes]:
        stored = self._output_times.get(job_id, {})
        return {stream: LineTimes.decode(flat) for stream, flat in stored.items()}

    async def events_after(
        self, after: int, *, limit: int, job_id: str | None = None, kind: JobKind | None = None
    ) -> EventBatch:
        found: list[JobEvent] = []
        start = bisect.bisect_right(self._events, after, key=lambda event: event.id)
        for event in self._events[start:]:
            if len(found) >= limit:
                break
            if (job_id is None or event.job_id == job_id) and (kind is None or event.kind == kind):
                found.append(event)
        oldest = self._events[0].id if self._events else None
        return EventBatch(events=found, oldest_id=oldest, newest_id=self._newest_event)

    async def prune_events(self, keep: int) -> int:
        forgotten = max(len(self._events) - keep, 0)
        if self._cursors:
            lowest = min(self._cursors.values())
            forgotten = min(forgotten, bisect.bisect_right(self._events, lowest, key=lambda event: event.id))
        del self._events[:forgotten]
        return forgotten

    async def cursor(self, name: str) -> int:
        return self._cursors.get(name, 0)

    async def advance_cursor(self, name: str, before: int, after: int) -> bool:
        if self._cursors.get(name, 0) != before:
            return False
        self._cursors[name] = after
        return True

    async def register(self, worker: WorkerInfo, lease_s: float) -> int:
        now = time.time()
        known = self._workers.get(worker.id)
        generation = 1 if known is None else known["generation"] + 1
        self._workers[worker.id] = {
            **worker_row(worker),
            "started_at": now,
            "heartbeat_at": now,
            "lease_until": now + lease_s,
            "generation": generation,
            "stopped_at": None,
            "reclaimed_at": None,
            "reclaimed_by": None,
        }
        return generation

    async def renew_lease(self, worker_id: str, generation: int, lease_s: float) -> LeaseLost | None:
        row = self._workers.get(worker_id)
        lost = lease_lost(row, generation)
        if row is not None and lost is None:
            now = time.time()
            row.update(heartbeat_at=now, lease_until=now + lease_s)
        return lost

    async def mark_stopped(self, worker_id: str, generation: int) -> None:
        row = self._workers.get(worker_id)
        if row is not None and lease_lost(row, generation) is None:
            now = time.time()
            row.update(stopped_at=now, lease_until=now)

    async def workers(self) -> list[WorkerStatus]:
        now = time.time()
        found: list[WorkerStatus] = []
        for worker_id in sorted(self._workers):
            held = [job.state for job in self._jobs.values() if job.worker_id == worker_id]
            counts = {"building": held.count(JobState.BUILDING), "running": held.count(JobState.RUNNING)}
            found.append(worker_status({**self._workers[worker_id], **counts}, now))
        return found

    async def reclaim_expired(self, survivor: str) -> list[Reclaim]:
        now = time.time()
        reclaimed: list[Reclaim] = []
        for worker_id, row in sorted(self._workers.items()):
            if worker_id == survivor or row["lease_until"] >= now or row["reclaimed_at"] is not None:
                continue
            held = await self.active(worker_id)
            if row["stopped_at"] is not None and not held:
                continue
            settled = [self._settle(job, worker_id) for job in held]
            claims = self._adopt(worker_id, survivor)
            row.update(reclaimed_at=now, reclaimed_by=survivor)
            reclaimed.append(Reclaim(worker_id, row["generation"], settled, claims))
        return reclaimed

    def _settle(self, job: Job, worker_id: str) -> Job:
        fate = fate_of(job)
        message = fate_message(fate, worker_id)
        if fate == Fate.LOST:
            return self._update(
                job, state=JobState.FAILED, reason=Reason.WORKER_LOST, message=message, finished_at=utcnow()
            )
        heapq.heappush(self._queue, (-job.priority, self._seq[job.id], job.id))
        started_at = job.started_at if fate == Fate.REQUEUE else None
        return self._update(
            job, state=JobState.QUEUED, worker_id=None, message=message, started_at=started_at, launched_at=None
        )

    async def worker_address(self, worker_id: str) -> str | None:
        return None  # one worker in one process: it has no peers

    async def request_cancel(self, job_id: str, requested_at: datetime, grace_s: float) -> Job | None:
        job = self._jobs.get(job_id)
        if job is None or job.state not in ACTIVE_STATES:
            return None
        if job_id not in self._cancel_grace_s:
            self._cancel_grace_s[job_id] = grace_s
            self._wakeups.cancel_requested(job_id)
        return job

    async def cancel_requests(self, worker_id: str) -> dict[str, float]:
        return {
            job_id: grace_s
            for job_id, grace_s in self._cancel_grace_s.items()
            if (job := self._jobs[job_id]).state in ACTIVE_STATES and job.worker_id == worker_id
        }

    def wakeups(self) -> AsyncGenerator[Wakeup, None]:
        return self._wakeups.follow()

    async def close(self) -> None:
        self._jobs.clear()

    def _update(self, job: Job, **changes: object) -> Job:
        updated = Job.model_validate({**job.model_dump(), **changes})
        self._jobs[job.id] = updated
        self._record(job, updated)
        return updated

    def _record(self, before: Job | None, after: Job) -> None:
        """The event of a change from `before` (None: a new job) to `after`, if its state changed."""
        kind = event_type(None if before is None else before.state, after.state)
        if kind is None:
            return
        self._newest_event += 1
        worker_id = after.worker_id or (None if before is None else before.worker_id)
        self._events.append(
            JobEvent(
                id=self._newest_event,
                type=kind,
                job_id=after.id,
                kind=after.kind,
                state=after.state,
                reason=after.reason,
                worker_id=worker_id,
                time=utcnow(),
                labels=after.labels,
            )
        )
        if after.state.is_final:
            self._cancel_grace_s.pop(after.id, None)
        self._wakeups.changed(after.state)


def _due_at(job: Job) -> datetime:
    assert job.callback is not None
    return job.callback.next_attempt_at or _LONG_AGO
