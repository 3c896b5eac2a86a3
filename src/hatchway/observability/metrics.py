"""What `GET /metrics` exposes, in the Prometheus text format.

Counters and histograms are fed where things happen (a job ends, a container starts, a request is answered);
gauges (jobs by state, pool containers, engines, sources) are read from the worker's own state at scrape time,
so they can never drift from it. Labels take values from small fixed sets (kinds, states, reasons, verdicts,
engine and route names, configured pools and sources): never a job id.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hatchway.models import Job, JobState
from hatchway.pools.pool import PoolStatus
from hatchway.sources.base import SourceStatus

__all__ = ["CONTENT_TYPE", "Metrics", "MetricsMiddleware", "Snapshot"]

# From a trivial pooled job (ms) to a long batch program (hours).
_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600)
_START_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_UNMATCHED = "<unmatched>"

# A `_created` series per counter and histogram doubles the output and means nothing to a dashboard.
disable_created_metrics()  # type: ignore[no-untyped-call]


@dataclass(frozen=True)
class Snapshot:
    """The worker's state at scrape time, for the gauges."""

    jobs_by_state: dict[JobState, int]
    max_concurrent_jobs: int
    engines: dict[str, bool]
    pools: list[PoolStatus]
    sources: list[SourceStatus]
    callback_attempts: Mapping[str, int] = field(default_factory=dict)


class Metrics:
    """One worker's metrics, in a registry of its own (several workers in one process never mix)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._finished = Counter(
            "hatchway_jobs_finished_total",
            "Jobs and grades that reached a final state, by kind, state and reason.",
            ["kind", "state", "reason"],
            registry=r,
        )
        self._duration = Histogram(
            "hatchway_job_duration_seconds",
            "From start to end of a job or grade that started.",
            ["kind"],
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self._queue_wait = Histogram(
            "hatchway_job_queue_wait_seconds",
            "From submission to start of a job or grade that started.",
            ["kind"],
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self._start = Histogram(
            "hatchway_container_start_seconds",
            "How long starting a job's command took: a cold container, or handing it to a started one (pool hit).",
            ["engine", "pool"],
            buckets=_START_BUCKETS,
            registry=r,
        )
        self._verdicts = Counter(
            "hatchway_grade_verdicts_total", "Gradings that ended, by overall verdict.", ["verdict"], registry=r
        )
        self._test_verdicts = Counter(
            "hatchway_grade_test_verdicts_total", "Tests judged, by verdict.", ["verdict"], registry=r
        )
        self._requests = Counter(
            "hatchway_http_requests_total",
            "HTTP requests answered, by method, route template and status.",
            ["method", "route", "status"],
            registry=r,
        )
        self._request_time = Histogram(
            "hatchway_http_request_duration_seconds",
            "Time to the end of an HTTP answer, by method and route template (a followed log counts its whole time).",
            ["method", "route"],
            buckets=_HTTP_BUCKETS,
            registry=r,
        )
        self._counted = _CountedElsewhere()
        r.register(self._counted)
        self._jobs = Gauge("hatchway_jobs", "Jobs and grades now in each active state.", ["state"], registry=r)
        self._slots = Gauge("hatchway_slots", "How many jobs may run at once.", registry=r)
        self._engine_up = Gauge(
            "hatchway_engine_available", "1 if the engine's last probe ran a container, else 0.", ["engine"], registry=r
        )
        self._pool = Gauge(
            "hatchway_pool_containers",
            "Started containers per pool, by state (idle, busy, starting).",
            ["image", "runtime", "state"],
            registry=r,
        )
        self._pool_served = Gauge(
            "hatchway_pool_jobs_served", "Jobs a pool has served since start-up.", ["image", "runtime"], registry=r
        )
        self._reports_pending = Gauge(
            "hatchway_source_reports_pending",
            "Results stored and not yet accepted by the master.",
            ["source"],
            registry=r,
        )
        self._source_backoff = Gauge(
            "hatchway_source_backoff_seconds",
            "How long the source waits before it asks again (0: none).",
            ["source"],
            registry=r,
        )

    def job_finished(self, job: Job) -> None:
        """Count a job or grade that has just reached its final state (call once per job)."""
        kind = job.spec.kind
        reason = job.reason.value if job.reason is not None else "none"
        self._finished.labels(kind, job.state.value, reason).inc()
        if job.started_at is not None:
            self._queue_wait.labels(kind).observe(max(0.0, (job.started_at - job.created_at).total_seconds()))
            if job.finished_at is not None:
                self._duration.labels(kind).observe(max(0.0, (job.finished_at - job.started_at).total_seconds()))
        report = job.grade
        if report is not None and report.verdict is not None:
            self._verdicts.labels(report.verdict.value).inc()
            for test in report.tests:
                self._test_verdicts.labels(test.verdict.value).inc()

    def container_started(self, engine: str, *, pooled: bool, seconds: float) -> None:
        self._start.labels(engine, "hit" if pooled else "miss").observe(seconds)

    def request_answered(self, method: str, route: str, status: int, seconds: float) -> None:
        self._requests.labels(method, route, str(status)).inc()
        self._request_time.labels(method, route).observe(seconds)

    def render(self, snapshot: Snapshot) -> bytes:
        """The exposition text, with the gauges set from `snapshot`."""
        for state in (JobState.QUEUED, JobState.BUILDING, JobState.RUNNING):
            self._jobs.labels(state.value).set(snapshot.jobs_by_state.get(state, 0))
        self._slots.set(snapshot.max_concurrent_jobs)
        _replace(self._engine_up, ((name, int(ok)) for name, ok in snapshot.engines.items()))
        _replace(
            self._pool,
            (
                ((pool.image, pool.runtime, state), count)
                for pool in snapshot.pools
                for state, count in (("idle", pool.idle), ("busy", pool.busy), ("starting", pool.starting))
            ),
        )
        _replace(self._pool_served, (((pool.image, pool.runtime), pool.jobs_served) for pool in snapshot.pools))
        self._counted.snapshot = snapshot
        pulled = [source for source in snapshot.sources if not source.pushes]
        _replace(self._reports_pending, ((source.name, source.reports_pending) for source in pulled))
        _replace(self._source_backoff, ((source.name, source.backoff_s) for source in pulled))
        return generate_latest(self.registry)


def _replace(gauge: Gauge, values: Iterable[tuple[str | tuple[str, ...], float]]) -> None:
    """Set a labelled gauge to exactly `values`: a pool or engine that went away leaves no stale series."""
    gauge.clear()
    for labels, value in values:
        gauge.labels(*((labels,) if isinstance(labels, str) else labels)).set(value)


class _CountedElsewhere(Collector):
    """Counters that sources and the callback sender keep themselves (since start-up, as counters go), read at
    scrape time like the gauges. A source clients push to (the HTTP API) has claims only: it polls nothing and
    sends no reports (its refusals are in `hatchway_http_requests_total`)."""

    def __init__(self) -> None:
        self.snapshot: Snapshot | None = None

    def describe(self) -> list[Metric]:
        return []  # the label sets come and go with the configured sources

    def collect(self) -> Iterator[Metric]:
        snapshot = self.snapshot
        sources = snapshot.sources if snapshot is not None else []
        pulled = [source for source in sources if not source.pushes]
        for name, what, attribute, counted in (
            ("hatchway_source_polls", "Requests to a master for work, by source.", "polls", pulled),
            (
                "hatchway_source_claims",
                "Jobs and gradings a source brought in (items taken from a master, or created over the HTTP API "
                "for source api), by source.",
                "claims",
                sources,
            ),
            ("hatchway_source_errors", "Failed requests to a master, by source.", "errors", pulled),
            ("hatchway_source_reports_sent", "Reports a master accepted, by source.", "reports_sent", pulled),
            (
                "hatchway_source_report_failures",
                "Reports a master did not accept (each is retried), by source.",
                "report_failures",
                pulled,
            ),
        ):
            family = CounterMetricFamily(name, what, labels=["source"])
            for source in counted:
                family.add_metric([source.name], getattr(source, attribute))
            yield family
        for name, what, attribute in (
            ("hatchway_source_events_published", "Task events the event bus (Redis) accepted, by source.", "published"),
            (
                "hatchway_source_events_dropped",
                "Task events lost because the event bus (Redis) was down, slow or too far behind, by source.",
                "dropped",
            ),
        ):
            family = CounterMetricFamily(name, what, labels=["source"])
            for source in sources:
                if source.events is not None:
                    family.add_metric([source.name], getattr(source.events, attribute))
            yield family
        deliveries = CounterMetricFamily(
            "hatchway_callback_deliveries",
            "Attempts to deliver a job's result to its callback_url, by result (delivered, retry, failed).",
            labels=["result"],
        )
        for result in ("delivered", "retry", "failed"):
            deliveries.add_metric([result], snapshot.callback_attempts.get(result, 0) if snapshot else 0)
        yield deliveries


class MetricsMiddleware:
    """Counts every HTTP answer by method, route template (never the raw path: a job id is not a label) and
    status. Pure ASGI, so streamed answers (followed logs, events) pass through untouched."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        status = 500  # what the client sees if the app fails before answering

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or _UNMATCHED
            self.metrics.request_answered(scope["method"], template, status, time.perf_counter() - began)
