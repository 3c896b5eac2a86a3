"""Lifecycle events: every change of a job's state, numbered, kept by the store, replayed from any id a client
last saw and then followed live (`GET /events`).

The store records an event in the same transaction as the change it tells of, so the log is exact: no event is
lost and none is invented. It keeps the newest `events_keep`; a client that comes back after more than that has
gone by is told what it missed (`event_feed.EventsMissed`) instead of being skipped past it in silence.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from hatchway.models import JobKind, JobState, Reason


class EventType(StrEnum):
    """What happened to a job."""

    JOB_QUEUED = "job_queued"
    JOB_BUILDING = "job_building"
    """A worker claimed it and prepares its workspace and image."""
    JOB_RUNNING = "job_running"
    JOB_REQUEUED = "job_requeued"
    """It went back to the queue (the engine went away before it started, or the worker restarted)."""
    JOB_FINISHED = "job_finished"
    """It ended, whichever way: the event's `state` and `reason` say how (a cancelled job included)."""


class JobEvent(BaseModel):
    """One change of a job's state."""

    model_config = ConfigDict(frozen=True)

    id: int
    type: EventType
    job_id: str
    kind: JobKind
    state: JobState
    reason: Reason | None
    worker_id: str | None
    time: datetime
    labels: dict[str, str]


@dataclass(frozen=True)
class EventBatch:
    """Events after some id, with what the store keeps: enough to tell whether a reader missed any."""

    events: list[JobEvent]
    oldest_id: int | None
    """The oldest event kept (None: none is)."""
    newest_id: int
    """The newest event ever recorded, kept or not (0: none yet)."""


def event_type(before: JobState | None, after: JobState) -> EventType | None:
    """The event a change from state `before` (None: the job is new) to `after` is; None if it is no change."""
    if before == after:
        return None
    if after.is_final:
        return EventType.JOB_FINISHED
    if after == JobState.QUEUED:
        return EventType.JOB_QUEUED if before is None else EventType.JOB_REQUEUED
    return EventType.JOB_BUILDING if after == JobState.BUILDING else EventType.JOB_RUNNING
