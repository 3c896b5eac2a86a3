"""The fleet's job store: one PostgreSQL database shared by many workers (docs/fleet-plan.md, issue 18).

The whole `JobStore` contract, on psycopg 3's async pool (store/pg_connection.py). Every method is one statement in
its own transaction, and every state change is conditional on the old state, so whichever worker asks, a job is
claimed, started, finished or cancelled at most once. `claim_next` skips rows another worker has locked
(`FOR UPDATE SKIP LOCKED`) instead of waiting for them. Wake-ups are LISTENed for on a connection of their own
(store/postgres_listen.py). A registered worker is fenced by its lease's generation (store/pg_fleet.py): once a
survivor has taken it over, it changes nothing it held. The sources' outbox, claim journal and callbacks are kept
by store/pg_outbox.py.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from datetime import datetime
from typing import Any

from hatchway.models import (
    Job,
    JobKind,
    JobSpec,
    JobState,
    JobSummary,
    Outcome,
    Resources,
    RunInfo,
    Stream,
    to_epoch,
)
from hatchway.output.events import EventBatch
from hatchway.output.line_times import LineTimes
from hatchway.store import pg_fleet
from hatchway.store.base import Fit, JobPage, JobQuery
from hatchway.store.fleet import LeaseLost, Reclaim, WorkerInfo, WorkerStatus, lease_lost, worker_status
from hatchway.store.pg_outbox import PgOutbox
from hatchway.store.pg_schema import ACTIVE_STATES
from hatchway.store.postgres_listen import listen
from hatchway.store.rows import event_from, inserted, job_from, maybe_job, parse_cursor, summary_fields
from hatchway.store.wakeups import Wakeup

# A claim of a registered worker carries its generation, and holds only while that generation's lease has not been
# taken over: its row is taken FOR SHARE, so a takeover (FOR UPDATE) and a claim never interleave.
_LEASED = """(%(generation)s::bigint IS NULL
         OR EXISTS (SELECT 1 FROM workers WHERE id = %(worker_id)s AND generation = %(generation)s
                    AND reclaimed_at IS NULL AND stopped_at IS NULL FOR SHARE))"""
_CLAIM_NEXT = f"""
UPDATE jobs SET state = 'building', worker_id = %(worker_id)s, message = NULL, lease_generation = %(generation)s
WHERE seq = (SELECT seq FROM jobs WHERE state = 'queued' {{placed}}
             ORDER BY priority DESC, seq LIMIT 1 FOR UPDATE SKIP LOCKED)
    AND {_LEASED}
RETURNING *
"""
_PLACED_HERE = "AND placement <@ %(labels)s::jsonb"

# The next window of queued jobs a worker's labels meet, best first, after the last one it looked at (if any). They
# are read, not locked: a job this worker cannot run is never held from one that can.
_CANDIDATES = f"""
SELECT seq, priority, spec FROM jobs WHERE state = 'queued' {_PLACED_HERE} {{after}}
ORDER BY priority DESC, seq LIMIT %(window)s
"""
_AFTER = "AND (priority < %(priority)s OR (priority = %(priority)s AND seq > %(seq)s))"
_CANDIDATE_WINDOWS = (2, 512)  # the first and the largest; each is twice the last: the best job fits, mostly
# One candidate taken, if it is still queued and no other claim holds it (that one takes it).
_CLAIM_SEQ = f"""
UPDATE jobs SET state = 'building', worker_id = %(worker_id)s, message = NULL, lease_generation = %(generation)s
WHERE seq = (SELECT seq FROM jobs WHERE seq = %(seq)s AND state = 'queued' FOR UPDATE SKIP LOCKED)
    AND {_LEASED}
RETURNING *
"""
# Fencing: a registered worker changes a job it claimed only while the job is still its, as the generation it is.
_HELD = (
    "(%(fence_generation)s::bigint IS NULL OR (worker_id = %(fence_id)s AND lease_generation = %(fence_generation)s))"
)
_FENCED_OUT = 0
"""The generation a store acts as once its worker's lease is lost: no job carries it (generations start at 1)."""


class PostgresStore(PgOutbox):
    """A `JobStore` backed by PostgreSQL."""

    def __init__(self, url: str, *, max_size: int = 10) -> None:
        """A store on the database at `url` (`postgresql://…`); it connects, and brings the schema up to date, on
        first use (or `await store.open()`)."""
        super().__init__(url, max_size=max_size)
        self._fence: tuple[str, int] | None = None
        """(worker id, generation) this store acts as, once `register` was called."""

    async def enqueue(self, job: Job) -> tuple[Job, bool]:
        row = await self._one(
            """
            INSERT INTO jobs (id, state, priority, created_at, labels, spec, run, origin, external_id, reason,
                message, finished_at, callback, callback_due_at, placement)
            VALUES (%(id)s, %(state)s, %(priority)s, %(created_at)s, %(labels)s, %(spec)s, %(run)s, %(origin)s,
                %(external_id)s, %(reason)s, %(message)s, %(finished_at)s, %(callback)s, %(callback_due_at)s,
                %(placement)s)
            ON CONFLICT (id) DO NOTHING
            RETURNING *
            """,
            inserted(job),
        )
        if row is not None:
            return job_from(row), True
        existing = await self.get(job.id)
        assert existing is not None, "a conflicting insert implies the job exists"
        return existing, False

    async def get(self, job_id: str) -> Job | None:
        return maybe_job(await self._one("SELECT * FROM jobs WHERE id = %s", (job_id,)))

    async def state_of(self, job_id: str) -> JobState | None:
        row = await self._one("SELECT state FROM jobs WHERE id = %s", (job_id,))
        return None if row is None else JobState(row["state"])

    async def find(self, query: JobQuery) -> JobPage:
        where: list[str] = []
        params: list[Any] = []
        if query.state is not None:
            where.append("state = %s")
            params.append(query.state.value)
        if query.kind is not None:
            where.append("kind = %s")
            params.append(query.kind)
        if query.labels:
            where.append("labels @> %s::jsonb")
            params.append(json.dumps(query.labels))
        if query.cursor is not None:
            where.append("seq < %s")
            params.append(parse_cursor(query.cursor))
        sql = (
            "SELECT seq, id, state, priority, created_at, started_at, finished_at, worker_id, reason, message,"
            " exit_code, stdout_truncated, stderr_truncated, resources, labels, spec, run, grade, origin,"
            " external_id, reported_at, callback FROM jobs"
            + (" WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY seq DESC LIMIT %s"
        )
        rows = await self._all(sql, [*params, query.limit])
        cursor = str(rows[-1]["seq"]) if len(rows) == query.limit else None
        return JobPage(jobs=[JobSummary(**summary_fields(row)) for row in rows], next_cursor=cursor)

    async def claim_next(self, worker_id: str, fit: Fit | None = None) -> Job | None:
        generation = None
        if self._fence is not None and self._fence[0] == worker_id:
            generation = self._fence[1]
            if generation == _FENCED_OUT:
                return None
        params: dict[str, Any] = {"worker_id": worker_id, "generation": generation}
        if fit is None:
            return maybe_job(await self._one(_CLAIM_NEXT.format(placed=""), params))
        labels = json.dumps(dict(fit.labels))
        if fit.runs is None:
            sql = _CLAIM_NEXT.format(placed=_PLACED_HERE)
            return maybe_job(await self._one(sql, {**params, "labels": labels}))
        return await self._claim_first(params, labels, fit)

    async def _claim_first(self, claimer: dict[str, Any], labels: str, fit: Fit) -> Job | None:
        """The first queued job, best first, whose placement `labels` meet and which `fit.runs` accepts: windows of
        candidates are read in turn, and the first that fits is taken, unless another worker takes it first (then
        the next that fits is)."""
        runs = fit.runs
        assert runs is not None
        window, largest = _CANDIDATE_WINDOWS
        params: dict[str, Any] = {"worker_id": claimer["worker_id"], "labels": labels, "window": window}
        after = ""
        while True:
            rows = await self._all(_CANDIDATES.format(after=after), params)
            for row in rows:
                if runs(JobSpec.model_validate_json(row["spec"])):
                    claimed = await self._one(_CLAIM_SEQ, {**claimer, "seq": row["seq"]})
                    if claimed is not None:
                        return job_from(claimed)
            if len(rows) < params["window"]:
                return None
            after = _AFTER
            params.update(priority=rows[-1]["priority"], seq=rows[-1]["seq"], window=min(params["window"] * 2, largest))

    async def mark_running(self, job_id: str, started_at: datetime, run: RunInfo) -> Job | None:
        sql = f"""UPDATE jobs SET state = 'running', started_at = %(started_at)s, run = %(run)s
            WHERE id = %(id)s AND state = 'building' AND {_HELD} RETURNING *"""
        params = {"id": job_id, "started_at": to_epoch(started_at), "run": run.model_dump_json()}
        return maybe_job(await self._one(sql, self._fenced(params)))

    async def mark_launching(self, job_id: str, launched_at: datetime) -> Job | None:
        sql = f"""UPDATE jobs SET launched_at = %(launched_at)s
            WHERE id = %(id)s AND state = 'building' AND {_HELD} RETURNING *"""
        return maybe_job(await self._one(sql, self._fenced({"id": job_id, "launched_at": to_epoch(launched_at)})))

    async def update_resources(self, job_id: str, resources: Resources) -> None:
        sql = f"UPDATE jobs SET resources = %(resources)s WHERE id = %(id)s AND state IN {ACTIVE_STATES} AND {_HELD}"
        await self._run(sql, self._fenced({"id": job_id, "resources": resources.model_dump_json()}))

    async def finish(self, job_id: str, outcome: Outcome, finished_at: datetime) -> Job | None:
        params = outcome.model_dump(mode="json")
        params.update(
            id=job_id,
            resources=outcome.resources.model_dump_json(),
            grade=None if outcome.grade is None else outcome.grade.model_dump_json(),
            output_times=json.dumps(params["output_times"]) if outcome.output_times else None,
            finished_at=to_epoch(finished_at),
        )
        sql = f"""
            UPDATE jobs SET state = %(state)s, reason = %(reason)s, message = %(message)s, exit_code = %(exit_code)s,
                stdout = %(stdout)s, stderr = %(stderr)s, stdout_truncated = %(stdout_truncated)s,
                stderr_truncated = %(stderr_truncated)s, resources = %(resources)s, finished_at = %(finished_at)s,
                build_output = %(build_output)s, grade = %(grade)s, output_times = %(output_times)s
            WHERE id = %(id)s AND state IN {ACTIVE_STATES} AND {_HELD}
            RETURNING *"""
        return maybe_job(await self._one(sql, self._fenced(params)))

    async def cancel(self, job_id: str, finished_at: datetime) -> Job | None:
        sql = """UPDATE jobs SET state = 'killed', reason = 'cancelled', finished_at = %s,
                message = 'killed before it started'
            WHERE id = %s AND state = 'queued' RETURNING *"""
        return maybe_job(await self._one(sql, (to_epoch(finished_at), job_id)))

    async def requeue_lost(self, job_id: str) -> Job | None:
        sql = f"""UPDATE jobs SET state = 'queued', worker_id = NULL, started_at = NULL, lease_generation = NULL,
                launched_at = NULL
            WHERE id = %(id)s AND state IN {ACTIVE_STATES} AND {_HELD} RETURNING *"""
        return maybe_job(await self._one(sql, self._fenced({"id": job_id})))

    async def requeue_unstarted(self, job_id: str, message: str) -> Job | None:
        sql = f"""UPDATE jobs SET state = 'queued', worker_id = NULL, message = %(message)s, lease_generation = NULL,
                launched_at = NULL
            WHERE id = %(id)s AND state = 'building' AND {_HELD} RETURNING *"""
        return maybe_job(await self._one(sql, self._fenced({"id": job_id, "message": message})))

    async def active(self, worker_id: str) -> list[Job]:
        sql = f"SELECT * FROM jobs WHERE state IN {ACTIVE_STATES} AND worker_id = %s ORDER BY seq"
        return [job_from(row) for row in await self._all(sql, (worker_id,))]

    async def counts(self) -> dict[JobState, int]:
        sql = "SELECT state, count(*) AS n FROM jobs WHERE state IN ('queued', 'building', 'running') GROUP BY state"
        found = {row["state"]: row["n"] for row in await self._all(sql, ())}
        return {state: found.get(state.value, 0) for state in (JobState.QUEUED, JobState.BUILDING, JobState.RUNNING)}

    async def output_times(self, job_id: str) -> dict[Stream, LineTimes]:
        row = await self._one("SELECT output_times FROM jobs WHERE id = %s", (job_id,))
        if row is None or row["output_times"] is None:
            return {}
        stored: dict[str, list[int]] = json.loads(row["output_times"])
        return {Stream(stream): LineTimes.decode(flat) for stream, flat in stored.items()}

    async def events_after(
        self, after: int, *, limit: int, job_id: str | None = None, kind: JobKind | None = None
    ) -> EventBatch:
        sql = """SELECT events.*, jobs.spec::jsonb ->> 'kind' AS kind, jobs.labels::text AS labels
            FROM events LEFT JOIN jobs ON jobs.id = events.job_id WHERE events.id > %s"""
        params: list[Any] = [after]
        if job_id is not None:
            sql += " AND events.job_id = %s"
            params.append(job_id)
        if kind is not None:
            sql += " AND jobs.spec::jsonb ->> 'kind' = %s"
            params.append(kind)
        rows = await self._all(sql + " ORDER BY events.id LIMIT %s", [*params, limit]) if limit > 0 else []
        # The newest committed event, not the sequence's last value: that may be an event whose transaction is still
        # open, which a reader starting "from now" would then never see. Events commit in id order (the trigger's
        # lock), so every later commit has a greater id. Only when all are pruned is the sequence the newest.
        bounds = await self._one(
            "SELECT (SELECT min(id) FROM events) AS oldest, coalesce((SELECT max(id) FROM events),"
            " pg_sequence_last_value(pg_get_serial_sequence('events', 'id')), 0) AS newest",
            (),
        )
        assert bounds is not None
        return EventBatch(
            events=[event_from(row) for row in rows], oldest_id=bounds["oldest"], newest_id=bounds["newest"]
        )

    async def prune_events(self, keep: int) -> int:
        await self.open()
        async with self._pool.connection() as db:
            # least() passes over the NULL of no cursor.
            cursor = await db.execute(
                "DELETE FROM events WHERE id <= least((SELECT max(id) FROM events) - %s,"
                " (SELECT min(position) FROM cursors))",
                (keep,),
            )
            return cursor.rowcount

    async def cursor(self, name: str) -> int:
        row = await self._one("SELECT position FROM cursors WHERE name = %s", (name,))
        return 0 if row is None else int(row["position"])

    async def advance_cursor(self, name: str, before: int, after: int) -> bool:
        # A cursor moves only for who saw it where it stands; one that stands at 0 may not exist yet.
        sql = (
            "INSERT INTO cursors (name, position) VALUES (%(name)s, %(after)s) ON CONFLICT (name)"
            " DO UPDATE SET position = excluded.position WHERE cursors.position = 0 RETURNING position"
            if before == 0
            else "UPDATE cursors SET position = %(after)s WHERE name = %(name)s AND position = %(before)s"
            " RETURNING position"
        )
        return await self._one(sql, {"name": name, "before": before, "after": after}) is not None

    async def register(self, worker: WorkerInfo, lease_s: float) -> int:
        await self.open()
        async with self._pool.connection() as db:
            generation = await pg_fleet.register(db, worker, lease_s)
        self._fence = (worker.id, generation)
        return generation

    async def renew_lease(self, worker_id: str, generation: int, lease_s: float) -> LeaseLost | None:
        params = {"id": worker_id, "generation": generation, "lease_s": lease_s}
        if await self._one(pg_fleet.RENEW_LEASE, params) is not None:
            return None
        lost = lease_lost(await self._one(pg_fleet.WORKER, (worker_id,)), generation) or LeaseLost.FORGOTTEN
        if self._fence == (worker_id, generation):
            self._fence = (worker_id, _FENCED_OUT)
        return lost

    async def mark_stopped(self, worker_id: str, generation: int) -> None:
        await self._run(pg_fleet.MARK_STOPPED, {"id": worker_id, "generation": generation})

    async def workers(self) -> list[WorkerStatus]:
        return [worker_status(row, row["now"]) for row in await self._all(pg_fleet.WORKERS, ())]

    async def reclaim_expired(self, survivor: str) -> list[Reclaim]:
        await self.open()
        reclaimed: list[Reclaim] = []
        async with self._pool.connection() as db:
            while (taken := await pg_fleet.reclaim_one(db, survivor, job_from)) is not None:
                reclaimed.append(taken)
        return reclaimed

    async def worker_address(self, worker_id: str) -> str | None:
        row = await self._one("SELECT address FROM workers WHERE id = %s", (worker_id,))
        return None if row is None else row["address"]

    async def request_cancel(self, job_id: str, requested_at: datetime, grace_s: float) -> Job | None:
        # The first request stands; the schema's trigger NOTIFYs it (hatchway_cancel) to the worker running the job.
        sql = f"""UPDATE jobs SET cancel_requested_at = coalesce(cancel_requested_at, %s),
                cancel_grace_s = coalesce(cancel_grace_s, %s)
            WHERE id = %s AND state IN {ACTIVE_STATES} RETURNING *"""
        return maybe_job(await self._one(sql, (to_epoch(requested_at), grace_s, job_id)))

    async def cancel_requests(self, worker_id: str) -> dict[str, float]:
        sql = f"""SELECT id, cancel_grace_s FROM jobs
            WHERE state IN {ACTIVE_STATES} AND worker_id = %s AND cancel_requested_at IS NOT NULL"""
        return {row["id"]: row["cancel_grace_s"] for row in await self._all(sql, (worker_id,))}

    def wakeups(self) -> AsyncGenerator[Wakeup, None]:
        return listen(self._url)

    def _fenced(self, params: dict[str, Any]) -> dict[str, Any]:
        """`params` with the worker and generation this store acts as, for `_HELD` (none before `register`)."""
        worker_id, generation = self._fence or (None, None)
        return {**params, "fence_id": worker_id, "fence_generation": generation}
