"""Rows of the jobs and events tables to models and back: the same column names in SQLite and PostgreSQL, so both
stores read their rows here."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from hatchway.judge.request import WITH_HIDDEN_TESTS
from hatchway.models import (
    CallbackState,
    CallbackStatus,
    Job,
    JobSpec,
    JobState,
    Reason,
    Resources,
    RunInfo,
    from_epoch,
    to_epoch,
)
from hatchway.output.events import EventType, JobEvent


def parse_cursor(cursor: str) -> int:
    if not cursor.isdigit():
        raise ValueError(f"cursor {cursor!r} is not one this worker handed out")
    return int(cursor)


def due_at(callback: CallbackStatus | None) -> float | None:
    """When a callback is next due, for its index: 0 (as soon as its job ends) until it is first tried; None
    once it is settled, or for a job without one."""
    if callback is None or callback.state != CallbackState.PENDING:
        return None
    return to_epoch(callback.next_attempt_at) or 0.0


Row = sqlite3.Row | Mapping[str, Any]
"""A row of the jobs or events table, from SQLite or (with the same column names) PostgreSQL."""


def event_from(row: Row) -> JobEvent:
    return JobEvent(
        id=row["id"],
        type=EventType(row["type"]),
        job_id=row["job_id"],
        kind=row["kind"] or "job",
        state=JobState(row["state"]),
        reason=None if row["reason"] is None else Reason(row["reason"]),
        worker_id=row["worker_id"],
        time=datetime.fromtimestamp(row["time"], UTC),
        labels=json.loads(row["labels"] or "{}"),
    )


def job_from(row: Row) -> Job:
    return Job(
        **summary_fields(row),
        stdout=row["stdout"],
        stderr=row["stderr"],
        build_output=row["build_output"],
        launched_at=from_epoch(row["launched_at"]),
    )


def maybe_job(row: Row | None) -> Job | None:
    return None if row is None else job_from(row)


def summary_fields(row: Row) -> dict[str, Any]:
    """A job's fields but its output, from a row of `queries.LIST_SELECT`'s columns (or more)."""
    spec = JobSpec.model_validate_json(row["spec"])
    return {
        "id": row["id"],
        "state": JobState(row["state"]),
        "reason": row["reason"],
        "message": row["message"],
        "exit_code": row["exit_code"],
        "stdout_truncated": bool(row["stdout_truncated"]),
        "stderr_truncated": bool(row["stderr_truncated"]),
        "created_at": from_epoch(row["created_at"]),
        "started_at": from_epoch(row["started_at"]),
        "finished_at": from_epoch(row["finished_at"]),
        "worker_id": row["worker_id"],
        "image": spec.image,
        "run": RunInfo.model_validate_json(row["run"]),
        "labels": _json(row["labels"]),
        "priority": row["priority"],
        "resources": Resources.model_validate_json(row["resources"]),
        "grade": None if row["grade"] is None else json.loads(row["grade"]),  # the job model reads its report
        "origin": row["origin"],
        "external_id": row["external_id"],
        "reported_at": from_epoch(row["reported_at"]),
        "callback": None if row["callback"] is None else CallbackStatus.model_validate_json(row["callback"]),
        "spec": spec,
    }


def _json(value: str | dict[str, Any]) -> Any:
    """A JSON column's value: SQLite's text, or what PostgreSQL's driver already read from a `jsonb` column."""
    return json.loads(value) if isinstance(value, str) else value


def inserted(job: Job) -> dict[str, Any]:
    """The columns of a new row of the jobs table for `job`, as both stores' INSERT names them."""
    return {
        "id": job.id,
        "state": job.state.value,
        "priority": job.priority,
        "created_at": to_epoch(job.created_at),
        "labels": json.dumps(job.labels),
        "spec": job.spec.model_dump_json(context={WITH_HIDDEN_TESTS: True}),
        "run": job.run.model_dump_json(),
        "origin": job.origin,
        "external_id": job.external_id,
        "reason": None if job.reason is None else job.reason.value,
        "message": job.message,
        "finished_at": None if job.finished_at is None else to_epoch(job.finished_at),
        "callback": None if job.callback is None else job.callback.model_dump_json(),
        "callback_due_at": due_at(job.callback),
        "placement": json.dumps(job.spec.placement),
    }
