"""Fluster's WorkerService on the worker's port (api/fluster.py), on a worker with the in-memory engine: mounted
only with the `fluster` block, Connect's answers to what is not a call, the token check in front of it, and the
methods' answers and errors. Against a real worker, Docker and the controller's double:
tests/acceptance/test_fluster_dropin.py."""

from __future__ import annotations

import hashlib
import zipfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from hatchway.api.app import create_app
from hatchway.api.deps import ApiServices
from hatchway.engines.fake import FakeEngine, FakeProgram
from hatchway.fluster import connect, methods
from hatchway.fluster.connect import Code, ConnectError, Encoding, Method
from hatchway.fluster.proto import cluster_pb2 as pb
from hatchway.models import JobState
from hatchway.sources.fluster_jobs import ORIGIN
from hatchway.store.base import JobQuery
from hatchway.worker.worker import Worker
from tests.unit.test_runner import fake_worker

IMAGE = "hatchway-test/fluster-python:latest"
FLUSTER = {"controller_url": "http://127.0.0.1:9", "base_image": IMAGE, "worker_id": "fw-1"}
ADMIN = "fluster-admin-token-" + "x" * 16


@asynccontextmanager
async def serving(
    tmp_path: Path, engine: FakeEngine, **settings: Any
) -> AsyncIterator[tuple[Worker, httpx.AsyncClient]]:
    worker = fake_worker(tmp_path, engine, allowed_images=["hatchway-test/*"], **settings)
    await worker.start()
    try:
        transport = httpx.ASGITransport(app=create_app(ApiServices.of(worker.parts)))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8080") as client:
            yield worker, client
    finally:
        await worker.shutdown()


async def call(
    client: httpx.AsyncClient, method: Method[Any, Any], request: Any, encoding: Encoding = Encoding.PROTO
) -> Any:
    answer = await client.post(
        method.path, content=connect.encode(request, encoding), headers=connect.request_headers(encoding)
    )
    return connect.read_reply(method, encoding, answer.status_code, answer.headers.get("content-type"), answer.content)


@pytest.fixture
def engine() -> FakeEngine:
    engine = FakeEngine()
    engine.programs["python3"] = FakeProgram(runs_until_stopped=True)
    return engine


async def test_not_mounted_without_the_fluster_block(tmp_path: Path, engine: FakeEngine) -> None:
    async with serving(tmp_path, engine) as (_, client):
        answer = await client.post(
            methods.HEALTH_CHECK.path, content=b"", headers={"content-type": "application/proto"}
        )
    assert answer.status_code == 404


async def test_what_is_not_a_connect_call_gets_a_bare_answer(tmp_path: Path, engine: FakeEngine) -> None:
    async with serving(tmp_path, engine, fluster=FLUSTER) as (_, client):
        wrong_method = await client.get(methods.HEALTH_CHECK.path)
        wrong_type = await client.post(methods.HEALTH_CHECK.path, content=b"{}", headers={"content-type": "text/plain"})
        no_such = await client.post(
            "/fluster.cluster.WorkerService/Nope", content=b"", headers=connect.request_headers(Encoding.PROTO)
        )
        bad_body = await client.post(
            methods.RUN_JOB.path, content=b"\xff\xff", headers=connect.request_headers(Encoding.PROTO)
        )
    assert (wrong_method.status_code, wrong_method.headers["allow"]) == (405, "POST")
    assert (wrong_type.status_code, wrong_type.headers["accept-post"]) == (415, connect.ACCEPT_POST)
    assert no_such.status_code == 404 and not no_such.headers["content-type"].startswith("application/json")
    assert bad_body.status_code == 400 and bad_body.json()["code"] == "invalid_argument"


async def test_a_body_past_the_limit_is_resource_exhausted(tmp_path: Path, engine: FakeEngine) -> None:
    run = pb.Worker.RunJobRequest(job_id="big", serialized_entrypoint=b"x" * (1024 * 1024 + 1))
    async with serving(tmp_path, engine, fluster=FLUSTER, max_input_bytes=1000) as (worker, client):
        with pytest.raises(ConnectError) as refused:
            await call(client, methods.RUN_JOB, run)
        assert refused.value.code == Code.RESOURCE_EXHAUSTED
        assert (await worker.parts.jobs.find(JobQuery())).jobs == []


async def test_with_tokens_the_service_needs_an_admin_token(tmp_path: Path, engine: FakeEngine) -> None:
    tokens = [{"token": ADMIN, "role": "admin"}]
    async with serving(tmp_path, engine, fluster=FLUSTER, api_tokens=tokens) as (_, client):
        with pytest.raises(ConnectError) as refused:
            await call(client, methods.HEALTH_CHECK, pb.Empty())
        client.headers["authorization"] = f"Bearer {ADMIN}"
        health = await call(client, methods.HEALTH_CHECK, pb.Empty())
    assert refused.value.code == Code.UNAUTHENTICATED
    assert health.healthy


@pytest.mark.parametrize("encoding", [Encoding.PROTO, Encoding.JSON])
async def test_run_status_list_kill(tmp_path: Path, engine: FakeEngine, encoding: Encoding) -> None:
    run = pb.Worker.RunJobRequest(job_id="j/1", attempt_id=0, serialized_entrypoint=b"pickle", ports=[])
    async with serving(tmp_path, engine, fluster=FLUSTER) as (worker, client):
        first = await call(client, methods.RUN_JOB, run, encoding)
        again = await call(client, methods.RUN_JOB, run, encoding)
        retried = await call(client, methods.RUN_JOB, pb.Worker.RunJobRequest(job_id="j/1", attempt_id=1), encoding)
        assert (first.job_id, first.state) == ("j/1", pb.JOB_STATE_PENDING)
        assert again.job_id == "j/1" and retried.job_id == "j/1"
        page = await worker.parts.jobs.find(JobQuery(labels={"fluster.job_id": "j/1"}))
        assert sorted(job.external_id or "" for job in page.jobs) == ["j/1#0", "j/1#1"]
        assert {job.origin for job in page.jobs} == {ORIGIN}
        assert {job.labels["fluster.worker_id"] for job in page.jobs} == {"fw-1"}

        status = await call(client, methods.GET_JOB_STATUS, pb.Worker.GetJobStatusRequest(job_id="j/1"), encoding)
        assert status.current_attempt_id == 1, "the latest attempt is the job's"
        listed = await call(client, methods.LIST_JOBS, pb.Worker.ListJobsRequest(), encoding)
        assert sorted(job.current_attempt_id for job in listed.jobs) == [0, 1]

        kill = pb.Worker.KillJobRequest(job_id="j/1", term_timeout_ms=100)
        await call(client, methods.KILL_JOB, kill, encoding)  # answered once it has stopped
        killed = await call(client, methods.GET_JOB_STATUS, pb.Worker.GetJobStatusRequest(job_id="j/1"), encoding)
        assert killed.state == pb.JOB_STATE_KILLED
        with pytest.raises(ConnectError) as ended:
            await call(client, methods.KILL_JOB, pb.Worker.KillJobRequest(job_id="j/1"), encoding)
        assert (ended.value.code, ended.value.message) == (
            Code.FAILED_PRECONDITION,
            "Job j/1 already completed with state JOB_STATE_KILLED",
        )
        for method, request in (
            (methods.GET_JOB_STATUS, pb.Worker.GetJobStatusRequest(job_id="nobody")),
            (methods.KILL_JOB, pb.Worker.KillJobRequest(job_id="nobody")),
        ):
            with pytest.raises(ConnectError) as unknown:
                await call(client, method, request, encoding)
            assert unknown.value.code == Code.NOT_FOUND
        with pytest.raises(ConnectError) as nameless:
            await call(client, methods.RUN_JOB, pb.Worker.RunJobRequest(), encoding)
        assert nameless.value.code == Code.INVALID_ARGUMENT


def _bundle(path: Path, pyproject: str, code: str) -> str:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("pyproject.toml", pyproject)
        archive.writestr("job.py", code)
    return path.as_uri()


DECLARING = '[project]\nname = "job"\nversion = "0"\ndependencies = ["attrs>=23"]\n'


async def test_a_bundles_declared_dependencies_are_one_image_per_environment(tmp_path: Path) -> None:
    engine = FakeEngine()
    engine.programs["python3"] = FakeProgram()
    first = _bundle(tmp_path / "first.zip", DECLARING, "x = 1\n")
    second = _bundle(tmp_path / "second.zip", DECLARING, "x = 2\n")  # other code, the same declarations
    fluster = {**FLUSTER, "build_network": True}
    allowed = [f"file://{tmp_path}/*"]
    async with serving(tmp_path, engine, fluster=fluster, bundle_allowed_urls=allowed) as (worker, client):
        ran = []
        for job_id, bundle in (("one", first), ("two", second)):
            run = pb.Worker.RunJobRequest(job_id=job_id, serialized_entrypoint=b"pickle", bundle_gcs_path=bundle)
            answer = await call(client, methods.RUN_JOB, run)
            status = await call(client, methods.GET_JOB_STATUS, pb.Worker.GetJobStatusRequest(job_id=job_id))
            assert answer.state == pb.JOB_STATE_PENDING, status.error
            (summary,) = (await worker.parts.jobs.find(JobQuery(labels={"fluster.job_id": job_id}))).jobs
            ran.append(await worker.parts.jobs.wait_final(summary.id, 10))
    one, two = ran
    assert (one.state, two.state) == (JobState.SUCCEEDED, JobState.SUCCEEDED), (one.message, two.message)
    assert one.spec.build is not None and "-- 'attrs>=23'" in one.spec.build.dockerfile
    assert (one.spec.build_context, one.spec.build_network) == ("files", "host")
    assert one.spec.bundle_sha256 == hashlib.sha256((tmp_path / "first.zip").read_bytes()).hexdigest()
    assert one.run.image == two.run.image and one.run.image is not None
    assert (one.run.image_cached, two.run.image_cached) == (False, True)


@pytest.mark.parametrize(
    ("fluster", "pyproject", "words"),
    [
        (FLUSTER, DECLARING, "project dependencies: attrs>=23), which this worker cannot install"),
        ({**FLUSTER, "build_network": True}, "[project\n", "pyproject.toml is not valid TOML"),
    ],
)
async def test_a_bundle_whose_environment_cannot_be_had_fails_its_job_at_once(
    tmp_path: Path, engine: FakeEngine, fluster: dict[str, Any], pyproject: str, words: str
) -> None:
    bundle = _bundle(tmp_path / "b.zip", pyproject, "")
    run = pb.Worker.RunJobRequest(job_id="env", serialized_entrypoint=b"pickle", bundle_gcs_path=bundle)
    allowed = [f"file://{tmp_path}/*"]
    async with serving(tmp_path, engine, fluster=fluster, bundle_allowed_urls=allowed) as (_, client):
        assert (await call(client, methods.RUN_JOB, run)).state == pb.JOB_STATE_FAILED
        status = await call(client, methods.GET_JOB_STATUS, pb.Worker.GetJobStatusRequest(job_id="env"))
    assert words in status.error
    assert engine.events == [], "nothing was built or run"


async def test_a_bundle_the_policy_refuses_is_not_fetched_and_the_job_says_why(
    tmp_path: Path, engine: FakeEngine
) -> None:
    bundle = _bundle(tmp_path / "b.zip", DECLARING, "")
    run = pb.Worker.RunJobRequest(job_id="far", serialized_entrypoint=b"pickle", bundle_gcs_path=bundle)
    async with serving(tmp_path, engine, fluster=FLUSTER) as (_, client):
        assert (await call(client, methods.RUN_JOB, run)).state == pb.JOB_STATE_FAILED
        status = await call(client, methods.GET_JOB_STATUS, pb.Worker.GetJobStatusRequest(job_id="far"))
    assert status.error.startswith("bundle_url is not allowed on this worker"), status.error
    assert not (tmp_path / "bundles" / "sources").exists(), "nothing fetched"
