"""The PostgreSQL store's bookkeeping for pulled sources and callbacks: the outbox of results to report to a
master, the claim journal of items taken from it, and callbacks due. store/postgres.py builds the whole store on it.

In a fleet these are shared: any worker reports a result or sends a callback, once (a report is held by its row's
lock; a callback by moving its due time on, in the statement that picks it), and a survivor adopts a dead
worker's claims.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection

from hatchway.models import CallbackStatus, Job, from_epoch, to_epoch
from hatchway.store.base import ReportHold
from hatchway.store.pg_connection import PgConnection
from hatchway.store.pg_schema import FINAL_STATES
from hatchway.store.rows import due_at, job_from, maybe_job

_HOLD_REPORT = f"""SELECT * FROM jobs WHERE origin = %s AND reported_at IS NULL AND state IN {FINAL_STATES}
    ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED"""
_MARK_REPORTED = f"""UPDATE jobs SET reported_at = %(at)s
    WHERE id = %(id)s AND reported_at IS NULL AND state IN {FINAL_STATES} RETURNING *"""


class PgOutbox(PgConnection):
    """Reports, claims and callbacks, on the store's pool."""

    async def unreported(self, origin: str) -> list[Job]:
        sql = f"SELECT * FROM jobs WHERE origin = %s AND reported_at IS NULL AND state IN {FINAL_STATES} ORDER BY seq"
        return [job_from(row) for row in await self._all(sql, (origin,))]

    async def mark_reported(self, job_id: str, reported_at: datetime) -> Job | None:
        return maybe_job(await self._one(_MARK_REPORTED, {"id": job_id, "at": to_epoch(reported_at)}))

    @contextlib.asynccontextmanager
    async def hold_report(self, origin: str) -> AsyncIterator[ReportHold | None]:
        # The hold is the row's lock, for as long as the transaction: a worker that dies loses its connection, and
        # with it the lock; one that is paused keeps both, so no one reports behind its back.
        await self.open()
        async with self._pool.connection() as db, db.transaction():
            row = await (await db.execute(_HOLD_REPORT, (origin,))).fetchone()
            yield None if row is None else _PgHold(job_from(row), db)

    async def record_claim(self, origin: str, external_id: str, item: str, worker_id: str) -> None:
        sql = """INSERT INTO claims (origin, external_id, item, claimed_at, worker_id) VALUES (%s, %s, %s, %s, %s)
            ON CONFLICT (origin, external_id) DO NOTHING"""
        await self._run(sql, (origin, external_id, item, time.time(), worker_id))

    async def claims(self, origin: str, worker_id: str) -> list[tuple[str, str]]:
        await self._run("UPDATE claims SET worker_id = %s WHERE origin = %s AND worker_id IS NULL", (worker_id, origin))
        sql = "SELECT external_id, item FROM claims WHERE origin = %s AND worker_id = %s ORDER BY claimed_at, seq"
        rows = await self._all(sql, (origin, worker_id))
        return [(row["external_id"], row["item"]) for row in rows]

    async def forget_claim(self, origin: str, external_id: str) -> None:
        await self._run("DELETE FROM claims WHERE origin = %s AND external_id = %s", (origin, external_id))

    async def adopt_claims(self, from_worker: str, to_worker: str) -> int:
        await self.open()
        async with self._pool.connection() as db:
            sql = "UPDATE claims SET worker_id = %s WHERE worker_id = %s"
            return (await db.execute(sql, (to_worker, from_worker))).rowcount

    async def due_callbacks(self, now: datetime, limit: int, *, hold_until: datetime | None = None) -> list[Job]:
        due = f"""SELECT * FROM jobs WHERE callback_due_at <= %(now)s AND state IN {FINAL_STATES}
            ORDER BY callback_due_at, seq LIMIT %(limit)s"""
        params = {"now": to_epoch(now), "limit": limit}
        if hold_until is None:
            return [job_from(row) for row in await self._all(due, params)]
        # Held in the statement that picks them; rows another sender is picking right now are skipped.
        sql = f"""WITH picked AS ({due} FOR UPDATE SKIP LOCKED)
            UPDATE jobs SET callback_due_at = greatest(jobs.callback_due_at, %(hold_until)s)
            FROM picked WHERE jobs.seq = picked.seq
            RETURNING jobs.*, picked.callback_due_at AS picked_due"""
        rows = await self._all(sql, {**params, "hold_until": to_epoch(hold_until)})
        return [job_from(row) for row in sorted(rows, key=lambda row: (row["picked_due"], row["seq"]))]

    async def next_callback_at(self, after: datetime) -> datetime | None:
        sql = f"SELECT min(callback_due_at) AS at FROM jobs WHERE callback_due_at > %s AND state IN {FINAL_STATES}"
        row = await self._one(sql, (to_epoch(after),))
        return None if row is None else from_epoch(row["at"])

    async def record_callback(self, job_id: str, callback: CallbackStatus) -> Job | None:
        sql = """UPDATE jobs SET callback = %(callback)s, callback_due_at = %(due)s
            WHERE id = %(id)s AND callback_due_at IS NOT NULL
                AND (callback::jsonb ->> 'attempts')::int = %(attempts)s - 1
            RETURNING *"""
        params = {"id": job_id, "callback": callback.model_dump_json(), "due": due_at(callback)}
        return maybe_job(await self._one(sql, {**params, "attempts": callback.attempts}))


@dataclass(frozen=True)
class _PgHold:
    """A held report: the job's row is locked by the transaction on `db` until the hold ends."""

    job: Job
    db: AsyncConnection[dict[str, Any]]

    async def reported(self, reported_at: datetime) -> Job | None:
        cursor = await self.db.execute(_MARK_REPORTED, {"id": self.job.id, "at": to_epoch(reported_at)})
        return maybe_job(await cursor.fetchone())
