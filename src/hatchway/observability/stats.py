"""The last hour minute by minute, for the dashboard's charts: jobs finished, how long they ran, how long they waited.

Prometheus histograms (metrics.py) hold totals since start-up and need a Prometheus server to become a chart;
this keeps the recent past itself, so `GET /stats` answers a chart in one small request. It is fed like the
metrics, once per job that ends (`JobSignals.end_listeners`), and its memory is bounded whatever the load: a ring
of `BUCKETS` one-minute buckets, each keeping at most `SAMPLES` durations and queue waits (a uniform sample of
them beyond that, so the percentiles are exact up to `SAMPLES` jobs a minute and estimates above). It lives in
memory only: after a restart the charts start empty.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pydantic import BaseModel, Field

from hatchway.models import Job, JobState

__all__ = ["BUCKETS", "BUCKET_S", "SAMPLES", "JobStats", "Stats", "StatsBucket"]

BUCKET_S = 60
BUCKETS = 60
SAMPLES = 256


class StatsBucket(BaseModel):
    """One minute: jobs and gradings that ended in it, and percentiles of those that had started."""

    start: datetime = Field(description="The minute's first instant (UTC).")
    finished: int = Field(description="Jobs that reached a final state in this minute.")
    succeeded: int
    failed: int
    killed: int
    duration_p50_s: float | None = Field(description="Median run time of the jobs that ended (null: none ran).")
    duration_p95_s: float | None
    queue_wait_p50_s: float | None = Field(description="Median time from submission to start of those jobs.")
    queue_wait_p95_s: float | None


class Stats(BaseModel):
    """Per-minute buckets over a window ending now, oldest first; the last one is the minute in progress."""

    window_s: int
    bucket_s: int
    buckets: list[StatsBucket]


class _Sample:
    """At most `SAMPLES` values, a uniform sample of all that were offered (reservoir sampling)."""

    def __init__(self) -> None:
        self.values: list[float] = []
        self.seen = 0

    def add(self, value: float, rng: random.Random) -> None:
        self.seen += 1
        if len(self.values) < SAMPLES:
            self.values.append(value)
            return
        slot = rng.randrange(self.seen)
        if slot < SAMPLES:
            self.values[slot] = value

    def percentile(self, fraction: float) -> float | None:
        """Nearest rank: always a value that was observed (None without any)."""
        if not self.values:
            return None
        ordered = sorted(self.values)
        rank = max(1, math.ceil(fraction * len(ordered)))
        return round(ordered[rank - 1], 3)


@dataclass
class _Minute:
    index: int
    """Minutes since the epoch: which minute this bucket holds now."""
    states: dict[JobState, int] = field(default_factory=dict)
    durations: _Sample = field(default_factory=_Sample)
    queue_waits: _Sample = field(default_factory=_Sample)


class JobStats:
    """Jobs that ended over the last `BUCKETS` minutes, by the minute they ended in."""

    def __init__(self, *, clock: Callable[[], float] = time.time, rng: random.Random | None = None) -> None:
        self._clock = clock
        self._rng = rng or random.Random()
        self._ring: list[_Minute | None] = [None] * BUCKETS

    def job_finished(self, job: Job) -> None:
        """Count a job or grade that has just reached its final state (call once per job)."""
        now = self._minute(self._clock())
        ended = now if job.finished_at is None else min(now, self._minute(job.finished_at.timestamp()))
        if ended <= now - BUCKETS:
            return  # ended before the window (e.g. settled at a restart long after)
        bucket = self._ring[ended % BUCKETS]
        if bucket is None or bucket.index != ended:
            bucket = self._ring[ended % BUCKETS] = _Minute(ended)
        bucket.states[job.state] = bucket.states.get(job.state, 0) + 1
        if job.started_at is not None:
            bucket.queue_waits.add(max(0.0, (job.started_at - job.created_at).total_seconds()), self._rng)
            if job.finished_at is not None:
                bucket.durations.add(max(0.0, (job.finished_at - job.started_at).total_seconds()), self._rng)

    def window(self, window_s: int) -> Stats:
        """The last `window_s` seconds (at most `BUCKETS` minutes) as one bucket per minute, empty ones included."""
        count = max(1, min(BUCKETS, math.ceil(window_s / BUCKET_S)))
        now = self._minute(self._clock())
        buckets = [self._bucket(index) for index in range(now - count + 1, now + 1)]
        return Stats(window_s=count * BUCKET_S, bucket_s=BUCKET_S, buckets=buckets)

    def _bucket(self, index: int) -> StatsBucket:
        held = self._ring[index % BUCKETS]
        minute = held if held is not None and held.index == index else _Minute(index)
        states = minute.states
        return StatsBucket(
            start=datetime.fromtimestamp(index * BUCKET_S, UTC),
            finished=sum(states.values()),
            succeeded=states.get(JobState.SUCCEEDED, 0),
            failed=states.get(JobState.FAILED, 0),
            killed=states.get(JobState.KILLED, 0),
            duration_p50_s=minute.durations.percentile(0.5),
            duration_p95_s=minute.durations.percentile(0.95),
            queue_wait_p50_s=minute.queue_waits.percentile(0.5),
            queue_wait_p95_s=minute.queue_waits.percentile(0.95),
        )

    @staticmethod
    def _minute(epoch_s: float) -> int:
        return math.floor(epoch_s / BUCKET_S)
