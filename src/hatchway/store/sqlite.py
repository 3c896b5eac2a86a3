"""The embedded job store: one SQLite database in WAL mode under the data directory.

Statements are sub-millisecond, so they run on the event loop's thread: that serialises every state
change without locks and saves a thread hop per call. Each statement commits on its own
(autocommit), so a change is durable against a crash of the worker (`kill -9`) before it is reported. The
lifecycle event of a change is written by a trigger (queries.SCHEMA), so it commits with the change itself.
"""

from __future__ import annotations

import contextlib
import functools
import json
import sqlite3
import time
from collections.abc import AsyncGenerator, Iterator
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from pathlib import Path
from typing import Any

from hatchway.errors import ConfigError
from hatchway.models import (
    ACTIVE_STATES,
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
    from_epoch,
    to_epoch,
)
from hatchway.output.events import EventBatch
from hatchway.output.line_times import LineTimes
from hatchway.store import queries
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
from hatchway.store.rows import due_at, event_from, inserted, job_from, parse_cursor, summary_fields
from hatchway.store.wakeups import LocalWakeups, Wakeup


class SqliteStore:
    """A `JobStore` backed by SQLite."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA busy_timeout = 5000")
        _use_wal(self._db)
        # NORMAL in WAL mode survives any crash of this process; only power loss can drop the last commits.
        self._db.execute("PRAGMA synchronous = NORMAL")
        self._migrate()
        # This process's changes only: another process on the same file is seen by the pollers' safety nets.
        self._wakeups = LocalWakeups()
        self._holds = LocalHolds()

    def _migrate(self) -> None:
        """Bring the file's schema up to this code's, in one transaction: two workers starting on one file migrate
        once (the second waits for the first's write lock, then finds nothing to do). A file a newer worker wrote
        is refused, untouched."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            version: int = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version > queries.SCHEMA_VERSION:
                raise ConfigError(
                    f"the job store's schema is version {version}, newer than this worker's "
                    f"{queries.SCHEMA_VERSION}: a newer hatchway wrote it; upgrade this one"
                )
            fresh = self._db.execute("SELECT count(*) FROM sqlite_master WHERE name = 'jobs'").fetchone()[0] == 0
            if not fresh:
                for target in range(version + 1, queries.SCHEMA_VERSION + 1):
                    for statement in queries.MIGRATIONS[target]:
                        self._db.execute(statement)
            for statement in _statements(queries.SCHEMA):  # the whole schema when fresh; indexes added since
                self._db.execute(statement)
            self._db.execute(f"PRAGMA user_version = {queries.SCHEMA_VERSION}")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    async def enqueue(self, job: Job) -> tuple[Job, bool]:
        row = self._one(
            queries.INSERT,
            inserted(job),
        )
        if row is not None:
            return self._announce(job_from(row)), True
        existing = await self.get(job.id)
        assert existing is not None, "a conflicting insert implies the job exists"
        return existing, False

    async def unreported(self, origin: str) -> list[Job]:
        rows = self._db.execute(queries.UNREPORTED, (origin,)).fetchall()
        return [job_from(row) for row in rows]

    async def mark_reported(self, job_id: str, reported_at: datetime) -> Job | None:
        row = self._one(queries.MARK_REPORTED, {"id": job_id, "reported_at": to_epoch(reported_at)})
        return None if row is None else job_from(row)

    def hold_report(self, origin: str) -> AbstractAsyncContextManager[ReportHold | None]:
        return self._holds.hold(functools.partial(self._oldest_unreported, origin), self.mark_reported)

    async def _oldest_unreported(self, origin: str, count: int) -> list[Job]:
        return [job_from(row) for row in self._db.execute(queries.UNREPORTED_OLDEST, (origin, count)).fetchall()]

    async def record_claim(self, origin: str, external_id: str, item: str, worker_id: str) -> None:
        params = {
            "origin": origin,
            "external_id": external_id,
            "item": item,
            "claimed_at": time.time(),
            "worker_id": worker_id,
        }
        self._db.execute(queries.RECORD_CLAIM, params)

    async def claims(self, origin: str, worker_id: str) -> list[tuple[str, str]]:
        self._db.execute(queries.CLAIMS_UNNAMED, {"origin": origin, "worker_id": worker_id})
        rows = self._db.execute(queries.CLAIMS, {"origin": origin, "worker_id": worker_id})
        return [(row["external_id"], row["item"]) for row in rows]

    async def forget_claim(self, origin: str, external_id: str) -> None:
        self._db.execute(queries.FORGET_CLAIM, (origin, external_id))

    async def adopt_claims(self, from_worker: str, to_worker: str) -> int:
        cursor = self._db.execute(queries.ADOPT_CLAIMS, {"from_worker": from_worker, "to_worker": to_worker})
        return cursor.rowcount

    async def due_callbacks(self, now: datetime, limit: int, *, hold_until: datetime | None = None) -> list[Job]:
        with self._transaction():
            rows = self._db.execute(queries.DUE_CALLBACKS, {"now": to_epoch(now), "limit": limit}).fetchall()
            if hold_until is not None:
                for row in rows:
                    self._db.execute(queries.HOLD_CALLBACK, {"id": row["id"], "hold_until": to_epoch(hold_until)})
        return [job_from(row) for row in rows]

    async def next_callback_at(self, after: datetime) -> datetime | None:
        found: float | None = self._db.execute(queries.NEXT_CALLBACK_AT, {"after": to_epoch(after)}).fetchone()[0]
        return from_epoch(found)

    async def record_callback(self, job_id: str, callback: CallbackStatus) -> Job | None:
        params = {
            "id": job_id,
            "callback": callback.model_dump_json(),
            "callback_due_at": due_at(callback),
            "attempts": callback.attempts,
        }
        row = self._one(queries.RECORD_CALLBACK, params)
        return None if row is None else job_from(row)

    async def get(self, job_id: str) -> Job | None:
        row = self._one(queries.GET, (job_id,))
        return None if row is None else job_from(row)

    async def state_of(self, job_id: str) -> JobState | None:
        row = self._one(queries.GET_STATE, (job_id,))
        return None if row is None else JobState(row["state"])

    async def find(self, query: JobQuery) -> JobPage:
        where: list[str] = []
        params: list[Any] = []
        if query.state is not None:
            where.append(queries.LIST_STATE)
            params.append(query.state.value)
        if query.kind is not None:
            where.append(queries.LIST_KIND)
            params.append(query.kind)
        for key, value in query.labels.items():
            where.append(queries.LIST_LABEL)
            params += [f'$."{key}"', value]
        if query.cursor is not None:
            where.append(queries.LIST_BEFORE)
            params.append(parse_cursor(query.cursor))
        sql = queries.LIST_SELECT + (" WHERE " + " AND ".join(where) if where else "") + queries.LIST_ORDER
        rows = self._db.execute(sql, [*params, query.limit]).fetchall()
        cursor = str(rows[-1]["seq"]) if len(rows) == query.limit else None
        return JobPage(jobs=[JobSummary(**summary_fields(row)) for row in rows], next_cursor=cursor)

    async def claim_next(self, worker_id: str, fit: Fit | None = None) -> Job | None:
        if fit is None:
            row = self._one(queries.CLAIM_NEXT, {"worker_id": worker_id})
        elif fit.runs is None:
            row = self._one(queries.CLAIM_NEXT_PLACED, {"worker_id": worker_id, "labels": json.dumps(dict(fit.labels))})
        else:
            row = self._claim_first(worker_id, fit)
        return self._changed(row)

    def _claim_first(self, worker_id: str, fit: Fit) -> sqlite3.Row | None:
        """The first queued job, best first, whose placement `fit`'s labels meet and which `fit.runs` accepts, taken
        (another process on the file may take one first: the next is tried)."""
        runs = fit.runs
        assert runs is not None
        # Their numbers first, then each one's spec as it is asked about: the specs of a long queue (they hold the
        # jobs' files) are not all read for the first one to fit.
        candidates = self._db.execute(queries.CLAIM_CANDIDATES, {"labels": json.dumps(dict(fit.labels))}).fetchall()
        for (seq,) in candidates:
            spec = self._one(queries.CLAIM_CANDIDATE_SPEC, (seq,))
            if spec is not None and runs(JobSpec.model_validate_json(spec["spec"])):
                row = self._one(queries.CLAIM_SEQ, {"worker_id": worker_id, "seq": seq})
                if row is not None:
                    return row
        return None

    async def mark_running(self, job_id: str, started_at: datetime, run: RunInfo) -> Job | None:
        row = self._one(
            queries.MARK_RUNNING, {"id": job_id, "started_at": to_epoch(started_at), "run": run.model_dump_json()}
        )
        return self._changed(row)

    async def mark_launching(self, job_id: str, launched_at: datetime) -> Job | None:
        row = self._one(queries.MARK_LAUNCHING, {"id": job_id, "launched_at": to_epoch(launched_at)})
        return None if row is None else job_from(row)

    async def update_resources(self, job_id: str, resources: Resources) -> None:
        self._db.execute(queries.UPDATE_RESOURCES, {"id": job_id, "resources": resources.model_dump_json()})

    async def finish(self, job_id: str, outcome: Outcome, finished_at: datetime) -> Job | None:
        params = outcome.model_dump(mode="json")
        params.update(
            id=job_id,
            resources=outcome.resources.model_dump_json(),
            grade=None if outcome.grade is None else outcome.grade.model_dump_json(),
            output_times=json.dumps(params["output_times"]) if outcome.output_times else None,
            finished_at=to_epoch(finished_at),
        )
        row = self._one(queries.FINISH, params)
        return self._changed(row)

    async def cancel(self, job_id: str, finished_at: datetime) -> Job | None:
        row = self._one(queries.CANCEL, {"id": job_id, "finished_at": to_epoch(finished_at)})
        return self._changed(row)

    async def requeue_lost(self, job_id: str) -> Job | None:
        row = self._one(queries.REQUEUE_LOST, {"id": job_id})
        return self._changed(row)

    async def requeue_unstarted(self, job_id: str, message: str) -> Job | None:
        row = self._one(queries.REQUEUE_UNSTARTED, {"id": job_id, "message": message})
        return self._changed(row)

    async def active(self, worker_id: str) -> list[Job]:
        return [job_from(row) for row in self._db.execute(queries.ACTIVE, (worker_id,)).fetchall()]

    async def counts(self) -> dict[JobState, int]:
        found = dict(self._db.execute(queries.COUNTS).fetchall())
        return {state: found.get(state.value, 0) for state in (JobState.QUEUED, JobState.BUILDING, JobState.RUNNING)}

    async def output_times(self, job_id: str) -> dict[Stream, LineTimes]:
        row = self._one(queries.OUTPUT_TIMES, (job_id,))
        if row is None or row["output_times"] is None:
            return {}
        stored: dict[str, list[int]] = json.loads(row["output_times"])
        return {Stream(stream): LineTimes.decode(flat) for stream, flat in stored.items()}

    async def events_after(
        self, after: int, *, limit: int, job_id: str | None = None, kind: JobKind | None = None
    ) -> EventBatch:
        sql = queries.EVENTS_SELECT
        params: list[Any] = [after]
        if job_id is not None:
            sql += " AND " + queries.EVENTS_JOB
            params.append(job_id)
        if kind is not None:
            sql += " AND " + queries.EVENTS_KIND
            params.append(kind)
        rows = self._db.execute(sql + queries.EVENTS_ORDER, [*params, limit]).fetchall() if limit > 0 else []
        oldest: int | None = self._db.execute(queries.EVENTS_OLDEST).fetchone()[0]
        newest = self._db.execute(queries.EVENTS_NEWEST).fetchone()
        return EventBatch(
            events=[event_from(row) for row in rows], oldest_id=oldest, newest_id=newest[0] if newest else 0
        )

    async def prune_events(self, keep: int) -> int:
        return self._db.execute(queries.PRUNE_EVENTS, (keep,)).rowcount

    async def cursor(self, name: str) -> int:
        row = self._one(queries.CURSOR, (name,))
        return 0 if row is None else int(row["position"])

    async def advance_cursor(self, name: str, before: int, after: int) -> bool:
        sql = queries.START_CURSOR if before == 0 else queries.ADVANCE_CURSOR
        return self._one(sql, {"name": name, "before": before, "after": after}) is not None

    async def register(self, worker: WorkerInfo, lease_s: float) -> int:
        row = self._one(queries.REGISTER, {**worker_row(worker), "lease_s": lease_s})
        assert row is not None, "an upsert returns its row"
        generation: int = row["generation"]
        return generation

    async def renew_lease(self, worker_id: str, generation: int, lease_s: float) -> LeaseLost | None:
        if self._one(queries.RENEW_LEASE, {"id": worker_id, "generation": generation, "lease_s": lease_s}):
            return None
        return lease_lost(self._one(queries.WORKER, (worker_id,)), generation) or LeaseLost.FORGOTTEN

    async def mark_stopped(self, worker_id: str, generation: int) -> None:
        self._db.execute(queries.MARK_STOPPED, {"id": worker_id, "generation": generation})

    async def workers(self) -> list[WorkerStatus]:
        return [worker_status(row, row["now"]) for row in self._db.execute(queries.WORKERS).fetchall()]

    async def reclaim_expired(self, survivor: str) -> list[Reclaim]:
        reclaimed: list[Reclaim] = []
        with self._transaction():
            for worker in self._db.execute(queries.EXPIRED_WORKERS, {"survivor": survivor}).fetchall():
                settled: list[Job] = []
                for job in [job_from(row) for row in self._db.execute(queries.ACTIVE, (worker["id"],)).fetchall()]:
                    fate = fate_of(job)
                    row = self._one(_RECLAIM[fate], {"id": job.id, "message": fate_message(fate, worker["id"])})
                    settled.append(job if row is None else job_from(row))
                adopt = {"from_worker": worker["id"], "to_worker": survivor}
                claims = self._db.execute(queries.ADOPT_CLAIMS, adopt).rowcount
                self._db.execute(queries.MARK_RECLAIMED, {"id": worker["id"], "survivor": survivor})
                reclaimed.append(Reclaim(worker["id"], worker["generation"], settled, claims))
        for taken in reclaimed:  # committed: now they may be followed
            for job in taken.jobs:
                self._announce(job)
        return reclaimed

    async def worker_address(self, worker_id: str) -> str | None:
        return None  # one worker per file: it has no peers

    async def request_cancel(self, job_id: str, requested_at: datetime, grace_s: float) -> Job | None:
        params = {"id": job_id, "requested_at": to_epoch(requested_at), "grace_s": grace_s}
        row = self._one(queries.REQUEST_CANCEL, params)  # only the first request of an active job
        if row is not None:
            self._wakeups.cancel_requested(job_id)
            return job_from(row)
        job = await self.get(job_id)
        return job if job is not None and job.state in ACTIVE_STATES else None

    async def cancel_requests(self, worker_id: str) -> dict[str, float]:
        return {row["id"]: row["cancel_grace_s"] for row in self._db.execute(queries.CANCEL_REQUESTS, (worker_id,))}

    def wakeups(self) -> AsyncGenerator[Wakeup, None]:
        return self._wakeups.follow()

    async def close(self) -> None:
        self._db.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """Several statements as one: another process on the file sees all of them or none."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _changed(self, row: sqlite3.Row | None) -> Job | None:
        """The job a change of state left (None: the change was refused), announced to the followers."""
        return None if row is None else self._announce(job_from(row))

    def _announce(self, job: Job) -> Job:
        self._wakeups.changed(job.state)
        return job

    def _one(self, sql: str, params: Any = ()) -> sqlite3.Row | None:
        # fetchall, not fetchone: an autocommit statement with RETURNING commits only once it is finished.
        rows: list[sqlite3.Row] = self._db.execute(sql, params).fetchall()
        return rows[0] if rows else None


_WAL_TRIES = 100


def _use_wal(db: sqlite3.Connection) -> None:
    """Switch the file to WAL mode. Switching takes the file's lock without waiting on the busy timeout, so a worker
    that opens a new file while another opens it too is told "locked": it tries again, for up to about 5 s."""
    for attempt in range(_WAL_TRIES):
        try:
            db.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == _WAL_TRIES - 1:
                raise
            time.sleep(0.05)


_RECLAIM = {
    Fate.REQUEUE: queries.RECLAIM_REQUEUE,
    Fate.REGRADE: queries.RECLAIM_REGRADE,
    Fate.LOST: queries.RECLAIM_LOST,
}


def _statements(script: str) -> list[str]:
    """The statements of a schema script, for running them inside a transaction (`executescript` would commit
    first); a trigger's body keeps its inner semicolons."""
    statements: list[str] = []
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            statements.append(pending.strip())
            pending = ""
    return [statement for statement in statements if statement.strip(";\n ")]
