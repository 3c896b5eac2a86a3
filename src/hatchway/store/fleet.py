"""The fleet's registry of workers as every store keeps it: what a worker registers, how it stands, and what a
survivor takes over from a worker that was lost (docs/operations.md, "A fleet of workers").

A worker registers at its start, which begins a new *generation* of it, and renews its lease every third of it.
Whether a lease has run out is judged by the store's clock alone (PostgreSQL's `now()`), never by a worker's, so
workers whose clocks disagree still agree on who is lost. A worker whose lease has run out is taken over by one
survivor, once, by the rules restart recovery applies (jobs/recovery.py), except that nothing on the lost
worker's host is reached: its containers are out of reach, so a job that ran there is lost.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from hatchway.models import Job, JobState
from hatchway.store.rows import Row


class WorkerInfo(BaseModel):
    """What a worker tells the fleet about itself when it registers."""

    model_config = ConfigDict(frozen=True)

    id: str
    address: str | None = Field(default=None, description="Where the other workers reach it (http://host:port).")
    version: str
    slots: int = Field(description="Jobs and gradings it runs at once (`max_concurrent_jobs`).")
    runtimes: list[str] = Field(default_factory=list, description="The runtimes it can run jobs on.")
    profiles: list[str] = Field(default_factory=list, description="The grading profiles it has.")
    pools: list[str] = Field(default_factory=list, description="Its pools of started containers, by image.")
    labels: dict[str, str] = Field(default_factory=dict)


class WorkerHealth(StrEnum):
    """How a registered worker stands, by the store's clock."""

    ALIVE = "alive"
    """Its lease runs."""
    EXPIRED = "expired"
    """Its lease ran out: it died, hangs, or cannot reach the store. A survivor takes its jobs over."""
    STOPPED = "stopped"
    """It stopped cleanly: every job it ran had ended."""


class WorkerStatus(WorkerInfo):
    """A worker of the fleet as the registry has it (`GET /workers`)."""

    health: WorkerHealth
    generation: int = Field(description="Which life of the worker: each registration (each start) begins one.")
    started_at: datetime
    heartbeat_at: datetime = Field(description="When it last renewed its lease.")
    lease_until: datetime
    stopped_at: datetime | None = None
    reclaimed_at: datetime | None = Field(default=None, description="When a survivor took its jobs over.")
    reclaimed_by: str | None = Field(default=None, description="The worker that took them over.")
    building: int = Field(default=0, description="Jobs it has claimed that have not started yet.")
    running: int = Field(default=0, description="Jobs it runs.")


class LeaseLost(StrEnum):
    """Why a worker can no longer renew its lease: from then on it must touch nothing it held."""

    RECLAIMED = "reclaimed"
    """Its lease ran out and a survivor took its jobs over."""
    SUPERSEDED = "superseded"
    """A newer generation registered under its id: another process took its name."""
    STOPPED = "stopped"
    """It was marked stopped."""
    FORGOTTEN = "forgotten"
    """The registry does not know it."""


@dataclass(frozen=True)
class Reclaim:
    """What a survivor took over from a worker whose lease ran out: its jobs, as each stands afterwards, and how
    many items its pulled sources had claimed and not yet stored (now the survivor's, `JobStore.claims`)."""

    worker_id: str
    generation: int
    jobs: list[Job]
    claims: int = 0


class Fate(StrEnum):
    """What becomes of an active job of a lost worker."""

    REQUEUE = "requeue"
    """Claimed but not started: back to the queue, in its old place."""
    REGRADE = "regrade"
    """A grading under way: graded again from scratch (grading has no side effects)."""
    LOST = "lost"
    """Any other running job: failed `worker_lost`, its container out of reach on the lost worker."""


def fate_of(job: Job) -> Fate:
    if job.state == JobState.BUILDING and job.launched_at is None:  # it cannot have run: run it elsewhere
        return Fate.REQUEUE
    return Fate.REGRADE if job.spec.kind == "grade" else Fate.LOST


def fate_message(fate: Fate, worker_id: str) -> str:
    """What the job's `message` says of it after it was taken over."""
    if fate == Fate.REQUEUE:
        return f"its worker {worker_id} was lost before it started; it waits in the queue again"
    if fate == Fate.REGRADE:
        return f"its worker {worker_id} was lost while it graded; it is graded again from scratch"
    return f"its worker {worker_id} was lost while the job ran (its lease ran out); its result is lost"


def lease_lost(row: Row | None, generation: int) -> LeaseLost | None:
    """Why the worker of this row of the `workers` table can no longer hold its lease as `generation`; None if it
    can."""
    if row is None:
        return LeaseLost.FORGOTTEN
    if row["generation"] != generation:
        return LeaseLost.SUPERSEDED
    if row["reclaimed_at"] is not None:
        return LeaseLost.RECLAIMED
    if row["stopped_at"] is not None:
        return LeaseLost.STOPPED
    return None


def worker_row(info: WorkerInfo) -> dict[str, Any]:
    """A registration as the columns of the `workers` table (lists and maps as JSON text)."""
    return {
        "id": info.id,
        "address": info.address,
        "version": info.version,
        "slots": info.slots,
        "runtimes": json.dumps(info.runtimes),
        "profiles": json.dumps(info.profiles),
        "pools": json.dumps(info.pools),
        "labels": json.dumps(info.labels),
    }


def worker_status(row: Row, now: float) -> WorkerStatus:
    """A row of the `workers` table (with its `building` and `running` counts) as the registry shows it, its
    health judged at `now` (the store's clock, epoch seconds)."""
    if row["stopped_at"] is not None:
        health = WorkerHealth.STOPPED
    elif row["lease_until"] < now:
        health = WorkerHealth.EXPIRED
    else:
        health = WorkerHealth.ALIVE
    return WorkerStatus(
        id=row["id"],
        address=row["address"],
        version=row["version"],
        slots=row["slots"],
        runtimes=_json(row["runtimes"]),
        profiles=_json(row["profiles"]),
        pools=_json(row["pools"]),
        labels=_json(row["labels"]),
        health=health,
        generation=row["generation"],
        started_at=_time(row["started_at"]),
        heartbeat_at=_time(row["heartbeat_at"]),
        lease_until=_time(row["lease_until"]),
        stopped_at=None if row["stopped_at"] is None else _time(row["stopped_at"]),
        reclaimed_at=None if row["reclaimed_at"] is None else _time(row["reclaimed_at"]),
        reclaimed_by=row["reclaimed_by"],
        building=row["building"] or 0,
        running=row["running"] or 0,
    )


def _json(value: Any) -> Any:
    """A JSON column: text in SQLite, already decoded (jsonb) in PostgreSQL."""
    return json.loads(value) if isinstance(value, str) else value


def _time(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)
