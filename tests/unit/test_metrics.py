"""The Prometheus metrics: what a finished job counts, route templates instead of paths, gauges that follow the
worker's state, and names and labels by the Prometheus conventions."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from hatchway.api.auth import install_authentication
from hatchway.judge.report import GradeReport, TestResult
from hatchway.judge.verdicts import Verdict
from hatchway.models import Job, JobState, Reason
from hatchway.observability.metrics import Metrics, MetricsMiddleware, Snapshot
from hatchway.pools.pool import PoolStatus
from hatchway.settings import ApiToken, Role
from hatchway.sources.base import SourceStatus

MakeJob = Callable[..., Job]


def snapshot(**overrides: Any) -> Snapshot:
    fields: dict[str, Any] = {
        "jobs_by_state": {JobState.QUEUED: 3, JobState.RUNNING: 1},
        "max_concurrent_jobs": 4,
        "engines": {"docker": True, "gvisor": False},
        "pools": [],
        "sources": [],
    }
    fields.update(overrides)
    return Snapshot(**fields)


def pool(image: str, idle: int) -> PoolStatus:
    return PoolStatus(
        image=image,
        runtime="docker",
        origin="config",
        size=2,
        reuse_jobs=0,
        disk_mb=64,
        idle=idle,
        busy=1,
        starting=0,
        jobs_served=7,
        last_error=None,
    )


def source() -> SourceStatus:
    return SourceStatus(
        name="queue",
        kind="tasks",
        url="http://127.0.0.1:9",
        last_poll_at=None,
        polls=9,
        claims=3,
        reports_sent=2,
        report_failures=1,
        reports_pending=1,
        errors=4,
        backoff_s=5.0,
        last_error="down",
    )


def test_sources_and_callbacks_count_as_they_keep_their_own_tallies() -> None:
    metrics = Metrics()
    metrics.render(snapshot(sources=[source()], callback_attempts={"delivered": 2, "retry": 5}))
    assert value(metrics, "hatchway_source_polls_total", source="queue") == 9
    assert value(metrics, "hatchway_source_claims_total", source="queue") == 3
    assert value(metrics, "hatchway_source_report_failures_total", source="queue") == 1
    assert value(metrics, "hatchway_source_reports_pending", source="queue") == 1
    assert value(metrics, "hatchway_source_backoff_seconds", source="queue") == 5
    assert value(metrics, "hatchway_callback_deliveries_total", result="retry") == 5
    assert value(metrics, "hatchway_callback_deliveries_total", result="failed") == 0


def test_the_http_api_counts_its_claims_only() -> None:
    metrics = Metrics()
    api = source().model_copy(update={"name": "api", "kind": "http", "pushes": True, "polls": 0, "claims": 5})
    metrics.render(snapshot(sources=[api, source()]))
    assert value(metrics, "hatchway_source_claims_total", source="api") == 5
    assert value(metrics, "hatchway_source_claims_total", source="queue") == 3
    for name in ("hatchway_source_polls_total", "hatchway_source_errors_total", "hatchway_source_reports_pending"):
        assert value(metrics, name, source="api") is None, f"{name}: it polls nothing and sends no reports"
        assert value(metrics, name, source="queue") is not None


def ended(make_job: MakeJob, state: JobState, reason: Reason | None, **fields: Any) -> Job:
    job = make_job(**fields)
    started = job.created_at + timedelta(seconds=2)
    return job.model_copy(
        update={"state": state, "reason": reason, "started_at": started, "finished_at": started + timedelta(seconds=5)}
    )


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_a_finished_job_counts_by_kind_state_and_reason_with_its_times(make_job: MakeJob) -> None:
    metrics = Metrics()
    metrics.job_finished(ended(make_job, JobState.SUCCEEDED, None))
    metrics.job_finished(ended(make_job, JobState.FAILED, Reason.TIMEOUT))
    metrics.job_finished(make_job().model_copy(update={"state": JobState.KILLED, "reason": Reason.CANCELLED}))
    finished = "hatchway_jobs_finished_total"
    assert value(metrics, finished, kind="job", state="succeeded", reason="none") == 1
    assert value(metrics, finished, kind="job", state="failed", reason="timeout") == 1
    assert value(metrics, finished, kind="job", state="killed", reason="cancelled") == 1
    # The cancelled job never started: it has no duration and no queue wait.
    assert value(metrics, "hatchway_job_duration_seconds_count", kind="job") == 2
    assert value(metrics, "hatchway_job_duration_seconds_sum", kind="job") == 10
    assert value(metrics, "hatchway_job_queue_wait_seconds_sum", kind="job") == 4


def test_a_grade_counts_its_verdict_and_each_test_s(make_job: MakeJob) -> None:
    metrics = Metrics()
    tests = [TestResult(name="1", verdict=Verdict.AC), TestResult(name="2", verdict=Verdict.WA)]
    report = GradeReport(verdict=Verdict.WA, passed=1, total=2, tests=tests)
    job = ended(make_job, JobState.SUCCEEDED, None)
    metrics.job_finished(job.model_copy(update={"grade": report}))
    assert value(metrics, "hatchway_grade_verdicts_total", verdict="WA") == 1
    assert value(metrics, "hatchway_grade_test_verdicts_total", verdict="AC") == 1
    assert value(metrics, "hatchway_grade_test_verdicts_total", verdict="WA") == 1


def test_gauges_follow_the_worker_and_a_pool_that_went_leaves_no_series() -> None:
    metrics = Metrics()
    metrics.render(snapshot(pools=[pool("a:1", 2), pool("b:1", 0)]))
    assert value(metrics, "hatchway_pool_containers", image="b:1", runtime="docker", state="busy") == 1
    text = metrics.render(snapshot(pools=[pool("a:1", 3)])).decode()
    assert 'image="b:1"' not in text
    assert value(metrics, "hatchway_pool_containers", image="a:1", runtime="docker", state="idle") == 3
    assert value(metrics, "hatchway_jobs", state="queued") == 3
    assert value(metrics, "hatchway_jobs", state="building") == 0
    assert value(metrics, "hatchway_engine_available", engine="gvisor") == 0
    assert value(metrics, "hatchway_slots") == 4


def test_names_and_labels_follow_the_prometheus_conventions(make_job: MakeJob) -> None:
    metrics = Metrics()
    metrics.job_finished(ended(make_job, JobState.SUCCEEDED, None))
    metrics.container_started("docker", pooled=True, seconds=0.01)
    metrics.request_answered("GET", "/jobs/{job_id}", 200, 0.002)
    text = metrics.render(snapshot(pools=[pool("a:1", 1)], sources=[source()], callback_attempts={"delivered": 2}))
    families = list(text_string_to_metric_families(text.decode()))
    assert {family.type for family in families} == {"counter", "histogram", "gauge"}
    for family in families:
        assert family.name.startswith("hatchway_"), family.name
        if family.type == "histogram":
            assert family.name.endswith("_seconds"), family.name
        for sample in family.samples:
            if family.type == "counter" and not sample.name.endswith("_created"):
                assert sample.name.endswith("_total"), sample.name
            assert not {"id", "job_id", "path", "url"} & set(sample.labels), sample


def app_with(metrics: Metrics, tokens: list[ApiToken]) -> FastAPI:
    app = FastAPI()

    @app.get("/jobs/{job_id}")
    async def get_job(job_id: str) -> dict[str, str]:
        return {"id": job_id}

    install_authentication(app, tokens)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app


async def test_requests_count_by_route_template_never_by_path_refusals_included() -> None:
    metrics = Metrics()
    token = ApiToken(token="read-secret-0123456789", role=Role.READ, name="reader")
    transport = httpx.ASGITransport(app=app_with(metrics, [token]))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        headers = {"Authorization": "Bearer read-secret-0123456789"}
        for job_id in ("a1", "b2"):
            assert (await client.get(f"/jobs/{job_id}", headers=headers)).status_code == 200
        assert (await client.get("/jobs/c3")).status_code == 401
        assert (await client.get("/nowhere", headers=headers)).status_code == 404
    requests = "hatchway_http_requests_total"
    assert value(metrics, requests, method="GET", route="/jobs/{job_id}", status="200") == 2
    assert value(metrics, requests, method="GET", route="<unmatched>", status="404") == 1
    # Refused before routing: the path is never a label, whatever it was.
    assert value(metrics, requests, method="GET", route="<unmatched>", status="401") == 1
