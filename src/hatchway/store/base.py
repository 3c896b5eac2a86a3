"""The job store interface: the whole seam between the worker and where jobs are kept."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from hatchway.models import (
    CallbackStatus,
    Job,
    JobKind,
    JobSpec,
    JobState,
    JobSummary,
    Outcome,
    Resources,
    RunInfo,
    Stream,
)
from hatchway.output.events import EventBatch
from hatchway.output.line_times import LineTimes
from hatchway.store.fleet import LeaseLost, Reclaim, WorkerInfo, WorkerStatus
from hatchway.store.wakeups import Wakeup


@dataclass(frozen=True)
class JobQuery:
    """A filter for listing jobs, newest first."""

    state: JobState | None = None
    kind: JobKind | None = None
    labels: dict[str, str] = field(default_factory=dict)
    limit: int = 50
    cursor: str | None = None


@dataclass(frozen=True)
class JobPage:
    """One page of a listing, without the jobs' output; pass `next_cursor` back to get the next (older) page."""

    jobs: list[JobSummary]
    next_cursor: str | None


def placement_met(placement: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    """Whether a worker with `labels` meets a job's `placement`: it has every one of those labels, with that value."""
    return all(labels.get(key) == value for key, value in placement.items())


@dataclass(frozen=True)
class Fit:
    """Which queued jobs a worker can run, for `claim_next`: those whose placement its `labels` meet and, if
    `runs` is given, whose spec `runs` accepts (its images allowed, its runtime working, its profiles present).

    The store filters on placement itself (cheaply, in the database) and asks `runs` of the candidates left, in
    queue order; a job that does not fit stays queued, in its place, for a worker it fits."""

    labels: Mapping[str, str] = field(default_factory=dict)
    runs: Callable[[JobSpec], bool] | None = None

    def admits(self, spec: JobSpec) -> bool:
        return placement_met(spec.placement, self.labels) and (self.runs is None or self.runs(spec))


class ReportHold(Protocol):
    """An ended job of a source whose report one reporter holds: no other `hold_report`, in this worker or another,
    hands it out until the hold ends."""

    @property
    def job(self) -> Job:
        """The job, as it was when the hold was taken."""
        ...

    async def reported(self, reported_at: datetime) -> Job | None:
        """Its source has the job's result (as `mark_reported`); None if it was reported already."""
        ...


class JobStore(Protocol):
    """Keeps jobs. Every method commits before it returns, and state changes are conditional:
    a job is claimed, started, finished or cancelled at most once, whoever asks.

    Every change of a job's state (its insertion included) records a lifecycle event (`events.JobEvent`) in the
    same transaction, with an id greater than any before it.
    """

    async def enqueue(self, job: Job) -> tuple[Job, bool]:
        """Insert a queued job (or one that ended before it could be queued: an item a source handed out that
        cannot run); if its id exists already, return that job and False instead."""
        ...

    async def get(self, job_id: str) -> Job | None:
        """The job with this id, or None."""
        ...

    async def state_of(self, job_id: str) -> JobState | None:
        """Only the state of the job with this id, or None: cheaper than `get` for who waits for its end."""
        ...

    async def unreported(self, origin: str) -> list[Job]:
        """The outbox of a job source: its jobs that have ended and whose result it has not yet been told,
        oldest first."""
        ...

    async def mark_reported(self, job_id: str, reported_at: datetime) -> Job | None:
        """Its source has the job's result; None if the job has not ended or was reported already."""
        ...

    def hold_report(self, origin: str) -> AbstractAsyncContextManager[ReportHold | None]:
        """The oldest job of source `origin`'s outbox that no one else holds, held while the block runs (None: there
        is none): of several reporters of one source, on one worker or many, only the holder sends its report, so
        it is sent once. A holder that dies lets go of it (another then sends it); one that is paused keeps it."""
        ...

    async def record_claim(self, origin: str, external_id: str, item: str, worker_id: str) -> None:
        """Keep an item source `origin` has just taken from its master (`item`, as the master sent it) for worker
        `worker_id` until it is stored as a job: a worker that dies in between takes it up again from here on its
        next start (or a survivor does, given it by `adopt_claims`)."""
        ...

    async def claims(self, origin: str, worker_id: str) -> list[tuple[str, str]]:
        """The items of source `origin` recorded for `worker_id` and not yet forgotten, as (external id, item),
        oldest first. Items of `origin` recorded before claims named their worker become this worker's."""
        ...

    async def forget_claim(self, origin: str, external_id: str) -> None:
        """The item is stored as a job (or refused as one): its claim is no longer needed."""
        ...

    async def adopt_claims(self, from_worker: str, to_worker: str) -> int:
        """Hand every claim of `from_worker` (one that died) to `to_worker`, whose sources then take the items up;
        how many there were."""
        ...

    async def due_callbacks(self, now: datetime, limit: int, *, hold_until: datetime | None = None) -> list[Job]:
        """Jobs that have ended whose callback is pending and due by `now` (not tried yet, or its
        `next_attempt_at` has come), soonest due first (then oldest), at most `limit`. With `hold_until`, each
        one returned is held for the caller: none is due again, for anyone, before then (unless its attempt is
        recorded sooner), so of several senders, on one worker or many, only one attempts it; one that dies
        holding it lets go of it when the hold ends."""
        ...

    async def next_callback_at(self, after: datetime) -> datetime | None:
        """When the soonest pending callback of an ended job that is due only after `after` falls due; None if
        there is none."""
        ...

    async def record_callback(self, job_id: str, callback: CallbackStatus) -> Job | None:
        """Record how an attempt at the job's callback went (`callback.attempts` counts it); None if it has no
        pending callback, or another attempt was recorded since this one began (a sender whose hold ran out)."""
        ...

    async def find(self, query: JobQuery) -> JobPage:
        """Jobs matching `query`, newest first, without their output (`get` has it): a page of them is bounded by
        its length, not by what the jobs printed. Raises ValueError for a malformed cursor."""
        ...

    async def claim_next(self, worker_id: str, fit: Fit | None = None) -> Job | None:
        """Move the best queued job (highest priority, then oldest) that `fit` admits (None: any) to `building` for
        this worker; the `message` a requeue left on it is cleared. Jobs that do not fit are left queued, in their
        place, and never keep another worker from claiming them."""
        ...

    async def mark_running(self, job_id: str, started_at: datetime, run: RunInfo) -> Job | None:
        """Move a building job to `running`, recording how it was prepared; None if it is no longer building."""
        ...

    async def mark_launching(self, job_id: str, launched_at: datetime) -> Job | None:
        """Record that this building job's process is about to start, before it can run: a worker that is lost
        from now on may have run it, so the job is not given to another worker to run again (store/fleet.py
        `fate_of`). None if it is no longer building, or no longer this worker's (in a fleet): then it must not
        start."""
        ...

    async def update_resources(self, job_id: str, resources: Resources) -> None:
        """Record the latest resource figures of an active job."""
        ...

    async def finish(self, job_id: str, outcome: Outcome, finished_at: datetime) -> Job | None:
        """Record how an active job ended; None if it was not active (already final or queued)."""
        ...

    async def cancel(self, job_id: str, finished_at: datetime) -> Job | None:
        """End a queued job as killed/cancelled; None if it is no longer queued."""
        ...

    async def requeue_lost(self, job_id: str) -> Job | None:
        """Put an active job back in the queue, to run again from scratch: one that was claimed but never
        started, or one that may safely run twice (a grade). None if it is not active."""
        ...

    async def requeue_unstarted(self, job_id: str, message: str) -> Job | None:
        """Put a job that was claimed but never started (`building`) back in the queue, in its old place, with
        `message` saying why it waits (e.g. the engine went away). None if it is not building: a job that
        started is never queued again by this."""
        ...

    async def active(self, worker_id: str) -> list[Job]:
        """Jobs this worker had claimed and not finished (building or running)."""
        ...

    async def counts(self) -> dict[JobState, int]:
        """How many jobs are queued, building and running."""
        ...

    async def output_times(self, job_id: str) -> dict[Stream, LineTimes]:
        """When each line of an ended job's output was written, per stream (empty where nothing is known)."""
        ...

    async def events_after(
        self, after: int, *, limit: int, job_id: str | None = None, kind: JobKind | None = None
    ) -> EventBatch:
        """Up to `limit` kept events with an id above `after`, oldest first, of job `job_id` and of `kind` if
        given; with the oldest id kept and the newest ever recorded."""
        ...

    async def prune_events(self, keep: int) -> int:
        """Forget all but the newest `keep` events, and never one after a reader's cursor (`cursor`): a reader that
        must see every event (a state reporter) finds them all however far behind it falls; how many were
        forgotten."""
        ...

    async def cursor(self, name: str) -> int:
        """Where reader `name` of the event log stands: the id of the last event it has dealt with (0: none yet)."""
        ...

    async def advance_cursor(self, name: str, before: int, after: int) -> bool:
        """Move reader `name`'s cursor from `before` to `after`; False, changing nothing, if it no longer stands at
        `before` (another holder of the name moved it), so of two that read the same events only one moves on."""
        ...

    async def request_cancel(self, job_id: str, requested_at: datetime, grace_s: float) -> Job | None:
        """Ask whichever worker runs the active job to stop it (SIGTERM, then SIGKILL after `grace_s`): the request
        is kept on the job, and its worker is woken (`Wake.CANCEL`). A second request leaves the first as it was.
        None if the job is not active (queued jobs are cancelled with `cancel`)."""
        ...

    async def cancel_requests(self, worker_id: str) -> dict[str, float]:
        """This worker's active jobs someone asked to stop (`request_cancel`), with the grace each was given: the
        safety net of a lost wake-up."""
        ...

    def wakeups(self) -> AsyncGenerator[Wakeup, None]:
        """The changes a worker is woken for (store/wakeups.py), `Wake.ANY` first, until the caller stops: every
        worker's where the store is shared (one connection of its own per call), else this process's."""
        ...

    async def worker_address(self, worker_id: str) -> str | None:
        """The address (`http://host:port`) worker `worker_id` of the fleet registered; None if it is unknown."""
        ...

    # The fleet's registry (store/fleet.py). Lease times are judged by the store's clock.

    async def register(self, worker: WorkerInfo, lease_s: float) -> int:
        """Enter the fleet, or enter it again: begin a new generation of `worker` (returned), its lease running
        `lease_s` from now. The jobs an earlier generation of it left active become this one's (restart recovery
        settles them). From now on this store acts for that worker: where the store is shared, what it claims
        carries the generation, and its later changes to those jobs hold only while the generation is current
        and its lease has not been taken over (fencing)."""
        ...

    async def renew_lease(self, worker_id: str, generation: int, lease_s: float) -> LeaseLost | None:
        """Extend the worker's lease to `lease_s` from now; None if done, else why it can no longer be. A lease
        that ran out is renewed as long as no survivor has taken it over. Once it cannot be, this store changes
        nothing of the jobs that generation held, and claims nothing, until it registers again."""
        ...

    async def mark_stopped(self, worker_id: str, generation: int) -> None:
        """The worker stopped cleanly (its drain is over); a later generation is left as it is."""
        ...

    async def workers(self) -> list[WorkerStatus]:
        """Every worker registered, by id, with its health and how many jobs it has building and running."""
        ...

    async def reclaim_expired(self, survivor: str) -> list[Reclaim]:
        """Take over, as worker `survivor`, every other worker whose lease ran out and that no one took over yet
        (a worker that stopped cleanly only if it left jobs active), each by one survivor only, however many ask
        at once: its claimed jobs that never started go back to the queue in their old places, its gradings are
        graded again, its other running jobs fail `worker_lost` (store/fleet.py `Fate`), and the items its sources
        had claimed and not yet stored become the survivor's (`adopt_claims`), all in one transaction."""
        ...

    async def close(self) -> None:
        """Release the store's resources."""
        ...
