"""The fleet's registry on PostgreSQL (store/fleet.py): registering, leases, and taking over a lost worker, each
in one transaction. Times are PostgreSQL's (`now()`), so the workers' clocks never matter.

A takeover locks the lost worker's row (`FOR UPDATE SKIP LOCKED`: two survivors never take one worker over), then
every active job of it in `seq` order, before it changes any: events commit in id order under one advisory lock
(pg_schema.py), so a transaction that changes several jobs must hold all their rows before it takes that lock.
A claim takes its worker's row `FOR SHARE` (postgres.py), so no claim of a generation slips in while it is taken
over.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from psycopg import AsyncConnection

from hatchway.models import Job
from hatchway.store.fleet import Fate, Reclaim, WorkerInfo, fate_message, fate_of, worker_row
from hatchway.store.pg_schema import ACTIVE_STATES

Row = dict[str, Any]

NOW = "extract(epoch FROM now())::double precision"
# A transaction left open by a worker paused in it (SIGSTOP) would hold its locks for as long: not past this.
_IDLE_TIMEOUT = "SET LOCAL idle_in_transaction_session_timeout = '10s'"

_REGISTER = f"""
INSERT INTO workers (id, address, version, slots, runtimes, profiles, pools, labels, started_at, heartbeat_at,
    lease_until, generation)
VALUES (%(id)s, %(address)s, %(version)s, %(slots)s, %(runtimes)s, %(profiles)s, %(pools)s, %(labels)s, {NOW},
    {NOW}, {NOW} + %(lease_s)s, 1)
ON CONFLICT (id) DO UPDATE SET address = excluded.address, version = excluded.version, slots = excluded.slots,
    runtimes = excluded.runtimes, profiles = excluded.profiles, pools = excluded.pools, labels = excluded.labels,
    started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at, lease_until = excluded.lease_until,
    generation = workers.generation + 1, stopped_at = NULL, reclaimed_at = NULL, reclaimed_by = NULL
RETURNING generation
"""

_ADOPT = f"UPDATE jobs SET lease_generation = %(generation)s WHERE worker_id = %(id)s AND state IN {ACTIVE_STATES}"

RENEW_LEASE = f"""
UPDATE workers SET heartbeat_at = {NOW}, lease_until = {NOW} + %(lease_s)s
WHERE id = %(id)s AND generation = %(generation)s AND reclaimed_at IS NULL AND stopped_at IS NULL
RETURNING id
"""

WORKER = "SELECT * FROM workers WHERE id = %s"

MARK_STOPPED = f"""
UPDATE workers SET stopped_at = {NOW}, lease_until = {NOW}
WHERE id = %(id)s AND generation = %(generation)s AND reclaimed_at IS NULL AND stopped_at IS NULL
"""

WORKERS = f"""
SELECT workers.*, {NOW} AS now, held.building, held.running
FROM workers LEFT JOIN (
    SELECT worker_id, count(*) FILTER (WHERE state = 'building') AS building,
        count(*) FILTER (WHERE state = 'running') AS running
    FROM jobs WHERE state IN {ACTIVE_STATES} GROUP BY worker_id
) AS held ON held.worker_id = workers.id
ORDER BY workers.id
"""

_EXPIRED = f"""
SELECT id, generation FROM workers
WHERE lease_until < {NOW} AND reclaimed_at IS NULL AND id <> %(survivor)s
    AND (stopped_at IS NULL
         OR EXISTS (SELECT 1 FROM jobs WHERE jobs.worker_id = workers.id AND jobs.state IN {ACTIVE_STATES}))
ORDER BY lease_until LIMIT 1
FOR UPDATE SKIP LOCKED
"""

_HELD = f"SELECT * FROM jobs WHERE worker_id = %s AND state IN {ACTIVE_STATES} ORDER BY seq FOR UPDATE"

_SETTLE = {
    Fate.REQUEUE: """UPDATE jobs SET state = 'queued', worker_id = NULL, lease_generation = NULL,
            message = %(message)s
        WHERE id = %(id)s AND state = 'building' AND launched_at IS NULL RETURNING *""",
    Fate.REGRADE: f"""UPDATE jobs SET state = 'queued', worker_id = NULL, lease_generation = NULL, started_at = NULL,
            launched_at = NULL, message = %(message)s
        WHERE id = %(id)s AND state IN {ACTIVE_STATES} RETURNING *""",
    Fate.LOST: f"""UPDATE jobs SET state = 'failed', reason = 'worker_lost', message = %(message)s,
            finished_at = {NOW}
        WHERE id = %(id)s AND state IN {ACTIVE_STATES} RETURNING *""",
}

# Its sources' claimed items not yet stored: the survivor's sources take them up (JobStore.adopt_claims).
_ADOPT_CLAIMS = "UPDATE claims SET worker_id = %(survivor)s WHERE worker_id = %(id)s"

_MARK_RECLAIMED = f"UPDATE workers SET reclaimed_at = {NOW}, reclaimed_by = %(survivor)s WHERE id = %(id)s"


async def register(db: AsyncConnection[Row], worker: WorkerInfo, lease_s: float) -> int:
    """Begin a new generation of `worker` and hand it what earlier ones left active; its number."""
    async with db.transaction():
        await db.execute(_IDLE_TIMEOUT)
        row = await (await db.execute(_REGISTER, {**worker_row(worker), "lease_s": lease_s})).fetchone()
        assert row is not None, "an upsert returns its row"
        generation: int = row["generation"]
        await db.execute(_ADOPT, {"id": worker.id, "generation": generation})
    return generation


async def reclaim_one(db: AsyncConnection[Row], survivor: str, job_of: Callable[[Row], Job]) -> Reclaim | None:
    """Take over one worker whose lease ran out, if any is left that no one else is taking over; `job_of` reads a
    row of the jobs table."""
    async with db.transaction():
        await db.execute(_IDLE_TIMEOUT)
        lost = await (await db.execute(_EXPIRED, {"survivor": survivor})).fetchone()
        if lost is None:
            return None
        held = [job_of(row) for row in await (await db.execute(_HELD, (lost["id"],))).fetchall()]
        settled: list[Job] = []
        for job in held:
            fate = fate_of(job)
            params = {"id": job.id, "message": fate_message(fate, lost["id"])}
            changed = await (await db.execute(_SETTLE[fate], params)).fetchone()
            settled.append(job if changed is None else job_of(changed))
        claims = (await db.execute(_ADOPT_CLAIMS, {"id": lost["id"], "survivor": survivor})).rowcount
        await db.execute(_MARK_RECLAIMED, {"id": lost["id"], "survivor": survivor})
    return Reclaim(lost["id"], lost["generation"], settled, claims)
