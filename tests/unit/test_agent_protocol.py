"""The worker-agent protocol on hatchway's own paths (api/agent_protocol.py), on a worker with the in-memory engine:
a master's job posted, polled and cancelled in the protocol's words, hatchway's own clients answered as ever on the
same paths, and the two kinds of ids kept apart. Against a real worker and Docker:
tests/acceptance/test_agent_dropin.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from hatchway.api.agent_jobs import agent_job_id
from hatchway.api.app import create_app
from hatchway.api.deps import ApiServices
from hatchway.engines.base import image_name
from hatchway.engines.fake import FakeEngine, FakeProgram
from hatchway.models import JobState
from hatchway.settings import Settings
from hatchway.worker.worker import Worker
from tests.conftest import job_when
from tests.unit.test_runner import fake_worker

IMAGE = "hatchway-test/runner:1"

Client = httpx.AsyncClient


@asynccontextmanager
async def serving(tmp_path: Path, engine: FakeEngine, **settings: Any) -> AsyncIterator[tuple[Worker, Client]]:
    worker = fake_worker(tmp_path, engine, **settings)
    await worker.start()
    submitted: list[int] = []
    app = create_app(ApiServices.of(worker.parts), on_submit=lambda: submitted.append(1))
    app.state.submitted = submitted
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:9000") as client:
            yield worker, client
    finally:
        await worker.shutdown()


@pytest.fixture
def engine() -> FakeEngine:
    engine = FakeEngine()
    engine.programs["cat"] = FakeProgram(stdout=b"catted")
    engine.programs["fail"] = FakeProgram(stderr=b"bad", exit_code=3)
    engine.programs["wait"] = FakeProgram(runs_until_stopped=True)
    engine.programs[image_name(IMAGE)] = FakeProgram(stdout=b"the image's own")
    return engine


@pytest.fixture
async def api(tmp_path: Path, engine: FakeEngine) -> AsyncIterator[Client]:
    async with serving(tmp_path, engine) as (_, client):
        yield client


def agent_job(job_id: str, cmd: list[str] | None = None, **runtime: Any) -> dict[str, Any]:
    return {
        "protocol_version": 1,
        "job_id": job_id,
        "task": {"type": "debug_echo", "payload": {}},
        "runtime": {"mode": "image", "image": IMAGE, "cmd": cmd if cmd is not None else ["cat"], **runtime},
    }


async def final(client: Client, job_id: str, *, timeout_s: float = 10) -> dict[str, Any]:
    """Poll as a master does until the job is finished or failed."""
    async with asyncio.timeout(timeout_s):
        while True:
            answer = (await client.get(f"/jobs/{job_id}")).json()
            if answer["state"] in ("finished", "failed"):
                return answer
            await asyncio.sleep(0.02)


async def test_a_master_s_job_is_accepted_then_polled_to_its_end(api: Client) -> None:
    posted = await api.post("/jobs", json=agent_job("job-1"))
    assert (posted.status_code, posted.json()) == (202, {"accepted": True, "job_id": "job-1", "state": "queued"})
    done = await final(api, "job-1")
    assert (done["state"], done["exit_code"], done["stdout"], done["error"]) == ("finished", 0, "catted", None)
    assert done["hatchway_id"] == agent_job_id("job-1") and done["created_at"].endswith("Z")
    assert api._transport.app.state.submitted == [1]  # type: ignore[attr-defined]  # counted as the API's claim

    await api.post("/jobs", json=agent_job("job-2", ["fail"]))
    failed = await final(api, "job-2")
    assert (failed["state"], failed["exit_code"], failed["stderr"]) == ("failed", 3, "bad")
    assert failed["error"] == {"code": "NON_ZERO_EXIT", "message": "Job exited with code 3"}


async def test_without_cmd_the_image_s_own_command_runs(api: Client) -> None:
    await api.post("/jobs", json=agent_job("own", []))
    assert (await final(api, "own"))["stdout"] == "the image's own"


async def test_a_master_s_job_is_a_hatchway_job_at_its_hatchway_id(api: Client) -> None:
    """hatchway's own clients (its dashboard, its command line) find it by the id its listing gives."""
    await api.post("/jobs", json=agent_job("job-1"))
    await final(api, "job-1")
    listed = (await api.get("/jobs", params={"label": "source:agent"})).json()["jobs"]
    assert [(job["id"], job["external_id"], job["origin"]) for job in listed] == [
        (agent_job_id("job-1"), "job-1", "agent")
    ]
    ours = (await api.get(f"/jobs/{agent_job_id('job-1')}")).json()
    assert (ours["state"], ours["stdout"], ours["spec"]["image_defaults"]) == ("succeeded", "catted", True)


async def test_hatchway_s_own_jobs_are_answered_as_ever_on_the_same_paths(api: Client) -> None:
    created = await api.post("/jobs", json={"id": "mine", "image": IMAGE, "command": ["cat"]}, params={"wait": "true"})
    assert created.status_code == 201 and created.json()["state"] == "succeeded"
    got = (await api.get("/jobs/mine")).json()
    assert (got["id"], got["state"], got["stdout"]) == ("mine", "succeeded", "catted")
    assert (await api.delete("/jobs/mine")).status_code == 409  # hatchway's: it has ended
    refused = await api.post("/jobs", json={"image": IMAGE, "command": ["cat"], "colour": "red"})
    assert refused.status_code == 422 and "colour" in refused.text
    assert (await api.post("/jobs", json=["a list"])).status_code == 422
    squatting = await api.post("/jobs", json={"id": "agent.x.123", "image": IMAGE, "command": ["cat"]})
    assert squatting.status_code == 422 and "namespace" in squatting.json()["error"]["message"]


async def test_an_id_is_one_kind_of_client_s_only(api: Client) -> None:
    await api.post("/jobs", json={"id": "taken", "image": IMAGE, "command": ["cat"]})
    clash = await api.post("/jobs", json=agent_job("taken"))
    assert (clash.status_code, clash.json()["error"]["code"]) == (409, "JOB_ID_ALREADY_EXISTS")
    await api.post("/jobs", json=agent_job("theirs"))
    ours = await api.post("/jobs", json={"id": "theirs", "image": IMAGE, "command": ["cat"]})
    assert (ours.status_code, ours.json()["error"]["code"]) == (409, "job_conflict")
    assert "worker-agent protocol" in ours.json()["error"]["message"]


async def test_a_reused_job_id_is_409_whatever_the_job(api: Client) -> None:
    assert (await api.post("/jobs", json=agent_job("twice"))).status_code == 202
    for body in (agent_job("twice"), agent_job("twice", ["fail"])):
        again = await api.post("/jobs", json=body)
        assert again.status_code == 409
        assert again.json() == {
            "accepted": False,
            "job_id": "twice",
            "state": "rejected",
            "error": {"code": "JOB_ID_ALREADY_EXISTS", "message": "Job with id twice already exists"},
        }


async def test_a_rejection_is_400_in_the_protocol_s_shape(api: Client) -> None:
    refused = await api.post("/jobs", json={**agent_job("bad"), "protocol_version": 2})
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "UNSUPPORTED_PROTOCOL_VERSION"
    not_json = await api.post("/jobs", content=b'{"protocol_version": 1}', headers={"content-type": "text/plain"})
    assert (not_json.status_code, not_json.json()["error"]["code"]) == (400, "INVALID_BODY")
    assert (await api.get("/jobs/bad")).status_code == 404, "a rejected job is not kept"


async def test_an_unknown_id_is_404_in_both_shapes(api: Client) -> None:
    for method in ("GET", "DELETE"):
        missing = await api.request(method, "/jobs/nobody")
        assert missing.status_code == 404
        assert missing.json() == {
            "error": {"code": "job_not_found", "message": "no job has id 'nobody'"},
            "job_id": "nobody",
            "state": "not_found",
        }


async def test_a_job_id_with_a_slash_is_found_as_sent(api: Client) -> None:
    await api.post("/jobs", json=agent_job("batch/7"))
    assert (await final(api, "batch%2F7"))["job_id"] == "batch/7"


async def test_delete_cancels_a_queued_job_and_stops_a_running_one(tmp_path: Path, engine: FakeEngine) -> None:
    async with serving(tmp_path, engine, max_concurrent_jobs=1) as (worker, api):
        await api.post("/jobs", json=agent_job("running", ["wait"]))
        await api.post("/jobs", json=agent_job("queued", ["wait"]))
        await job_when(worker, agent_job_id("running"), lambda job: job.state is JobState.RUNNING)

        cancelled = await api.delete("/jobs/queued")
        assert (cancelled.status_code, cancelled.json()) == (
            200,
            {"job_id": "queued", "state": "failed", "note": "Job cancelled before start"},
        )
        record = (await api.get("/jobs/queued")).json()
        assert record["error"] == {"code": "CANCELLED", "message": "Job was cancelled before it started running"}
        assert record["finished_at"] is not None and record["started_at"] is None

        stopping = await api.delete("/jobs/running")
        assert (stopping.status_code, stopping.json()) == (
            202,
            {"job_id": "running", "state": "running", "note": "Cancellation requested"},
        )
        stopped = await final(api, "running")
        assert stopped["error"] == {"code": "CANCELLED", "message": "Job was cancelled while it was running"}

        ended = await api.delete("/jobs/running")
        assert (ended.status_code, ended.json()["note"]) == (200, "Job has already ended")


def test_no_source_may_be_named_agent(tmp_path: Path) -> None:
    source = {"name": "agent", "kind": "tasks", "url": "http://q:8081"}
    with pytest.raises(ValidationError, match="worker-agent protocol"):
        Settings(data_dir=tmp_path, sources=[source])
