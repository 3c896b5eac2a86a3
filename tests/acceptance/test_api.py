"""The HTTP contract, as a client sees it."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.acceptance.conftest import Server
from tests.conftest import BUSYBOX

pytestmark = pytest.mark.docker

JOB_FIELDS = {
    "id", "state", "reason", "exit_code", "stdout", "stderr", "stdout_truncated", "stderr_truncated",
    "created_at", "started_at", "finished_at", "duration_s", "worker_id", "image", "labels", "resources", "spec",
}  # fmt: skip


def test_health_and_info(server: Server) -> None:
    health = server.client.get("/health").json()
    assert health["status"] == "ok" and health["engine_ok"] is True
    assert health["worker_id"] == server.worker_id and health["max_concurrent_jobs"] == 2
    assert {"running", "queued"} <= health.keys()
    assert {"cpu_percent", "load_average", "memory_used_bytes", "temperature_c"} <= health["host"].keys()
    info = server.client.get("/info").json()
    assert info["worker_id"] == server.worker_id and info["version"]
    both = [{"name": "docker", "available": True}, {"name": "gvisor", "available": True}]
    assert info["engines"] == both and health["engines"] == both
    assert info["runtimes"] == ["docker", "gvisor"] and info["default_runtime"] == "docker"
    assert info["allowed_images"] == ["hatchway-test/*"]
    assert info["default_limits"]["timeout_s"] > 0 and info["max_limits"]["memory_mb"] > 0


def test_openapi_document_describes_the_api(server: Server) -> None:
    document = server.client.get("/openapi.json").json()
    paths = {"/jobs", "/jobs/{job_id}", "/jobs/{job_id}/logs", "/jobs/{job_id}/artifacts", "/images", "/info"}
    assert paths <= document["paths"].keys()
    request = document["components"]["schemas"]["JobRequest"]
    assert request["required"] == ["command"]  # and one of image or build
    fields = {"image", "build", "env", "stdin", "files", "bundle_url", "bundle_sha256", "workdir", "limits"}
    assert fields | {"network", "runtime", "ports", "priority", "labels", "id"} <= set(request["properties"])


def test_create_with_wait_returns_the_finished_job(server: Server) -> None:
    response = server.post_job(wait=True, image=BUSYBOX, command="echo hi; echo there >&2", labels={"team": "a"})
    assert response.status_code == 201
    job = response.json()
    assert JOB_FIELDS <= job.keys()
    assert (job["state"], job["reason"], job["exit_code"]) == ("succeeded", None, 0)
    assert (job["stdout"], job["stderr"]) == ("hi\n", "there\n")
    assert job["spec"]["command"] == ["/bin/sh", "-c", "echo hi; echo there >&2"]
    assert job["spec"]["limits"]["timeout_s"] > 0 and job["labels"] == {"team": "a"}
    assert server.client.get(f"/jobs/{job['id']}").json()["stdout"] == "hi\n"
    (listed,) = server.client.get("/jobs", params={"label": "team:a", "limit": 1}).json()["jobs"]
    assert listed["id"] == job["id"] and listed["state"] == "succeeded", "a listing holds the job..."
    assert not {"stdout", "stderr", "build_output"} & listed.keys(), "...but not its output"


def test_resubmitting_an_id_returns_the_existing_job(server: Server) -> None:
    job_id = f"idem-{uuid.uuid4().hex[:8]}"
    first = server.post_job(id=job_id, image=BUSYBOX, command=["echo", "x"])
    second = server.post_job(id=job_id, image=BUSYBOX, command=["echo", "x"])
    assert (first.status_code, second.status_code) == (201, 200)
    assert second.json()["id"] == job_id and second.json()["created_at"] == first.json()["created_at"]
    clash = server.post_job(id=job_id, image=BUSYBOX, command=["echo", "different"])
    assert clash.status_code == 409 and clash.json()["error"]["code"] == "job_conflict"


def test_list_filters_and_pages_newest_first(server: Server) -> None:
    batch = uuid.uuid4().hex[:8]
    ids = [server.post_job(image=BUSYBOX, command=["true"], labels={"batch": batch}).json()["id"] for _ in range(5)]
    for job_id in ids:
        server.wait_state(job_id, "succeeded")
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"label": f"batch:{batch}", "limit": 2, "state": "succeeded"}
        if cursor:
            params["cursor"] = cursor
        page = server.client.get("/jobs", params=params).json()
        seen += [job["id"] for job in page["jobs"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))
    assert server.client.get("/jobs", params={"label": f"batch:{batch}", "state": "queued"}).json()["jobs"] == []


def test_logs_by_stream_and_tail(server: Server) -> None:
    job = server.post_job(wait=True, image=BUSYBOX, command="seq 1 5; echo e1 >&2; echo e2 >&2").json()
    logs = lambda **params: server.client.get(f"/jobs/{job['id']}/logs", params=params).text  # noqa: E731
    assert logs(stream="stdout") == "1\n2\n3\n4\n5\n"
    assert logs(stream="stderr") == "e1\ne2\n"
    assert logs() == "1\n2\n3\n4\n5\ne1\ne2\n"
    assert logs(stream="stdout", tail=2) == "4\n5\n"
    assert logs(stream="both", tail=1) == "5\ne2\n"


def test_follow_streams_output_while_the_job_runs(server: Server) -> None:
    job = server.post_job(image=BUSYBOX, command="echo first; sleep 3; echo second").json()
    received: list[tuple[str, str]] = []

    def follow() -> None:
        with httpx.stream("GET", f"{server.url}/jobs/{job['id']}/logs", params={"follow": "true"}, timeout=60) as r:
            for text in r.iter_text():
                state = server.client.get(f"/jobs/{job['id']}").json()["state"]
                received.append((text, state))

    reader = threading.Thread(target=follow)
    reader.start()
    reader.join(timeout=60)
    assert not reader.is_alive()
    assert "".join(text for text, _ in received) == "first\nsecond\n"
    first_text, state_then = received[0]
    assert first_text == "first\n" and state_then == "running", "the first line must arrive while the job runs"


def test_kill_running_and_cancel_queued_over_http(server: Server) -> None:
    running = [server.post_job(image=BUSYBOX, command=["sleep", "60"]).json() for _ in range(2)]
    queued = server.post_job(image=BUSYBOX, command=["echo", "never"]).json()
    for job in running:
        server.wait_state(job["id"], "running")
    cancelled = server.client.delete(f"/jobs/{queued['id']}")
    assert cancelled.status_code == 200
    assert (cancelled.json()["state"], cancelled.json()["reason"]) == ("killed", "cancelled")
    killed = server.client.delete(f"/jobs/{running[0]['id']}", params={"grace_s": 0}).json()
    assert (killed["state"], killed["reason"]) == ("killed", "killed")
    server.client.delete(f"/jobs/{running[1]['id']}", params={"grace_s": 0})
    again = server.client.delete(f"/jobs/{running[0]['id']}")
    assert again.status_code == 409 and again.json()["error"]["code"] == "job_finished"


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ("{not json", 400, "not valid JSON"),
        ('["a list"]', 422, "(body)"),
        ('{"command": ["true"]}', 422, "image"),
        ('{"image": "hatchway-test/busybox"}', 422, "command"),
        ('{"image": "hatchway-test/busybox", "command": []}', 422, "command"),
        ('{"image": "hatchway-test/busybox", "command": 5}', 422, "command"),
        ('{"image": "hatchway-test/busybox", "command": ["true"], "colour": "red"}', 422, "colour"),
        ('{"image": "hatchway-test/busybox", "command": ["true"], "env": {"A": 1}}', 422, "env.A"),
        ('{"image": "hatchway-test/busybox", "command": ["true"], "files": {"../x": "y"}}', 422, "inside"),
        ('{"image": "hatchway-test/busybox", "command": ["true"], "workdir": "/"}', 422, "reserved"),
        ('{"image": "hatchway-test/busybox", "command": ["true"], "limits": {"memory_mb": -1}}', 422, "memory_mb"),
        ('{"image": "hatchway-test/busybox", "command": ["true"], "network": "bridge"}', 422, "network"),
        ('{"image": "hatchway-test/busybox", "command": ["true"], "id": "bad id!"}', 422, "id"),
        ('{"image": "evil/miner", "command": ["true"]}', 403, "evil/miner"),
        ('{"image": "hatchway-test/busybox", "command": ["true"], "network": "host"}', 403, "host"),
        ('{"image": "hatchway-test/busybox", "command": ["true"], "limits": {"timeout_s": 1e9}}', 422, "timeout_s"),
    ],
)
def test_bad_input_gets_a_clear_4xx(server: Server, body: str, status: int, words: str) -> None:
    response = server.client.post("/jobs", content=body, headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert words in error["message"] or any(words in d["field"] for d in error.get("details", []))
    assert server.client.get("/health").status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "params", "status"),
    [
        ("GET", "/jobs/nope", None, 404),
        ("DELETE", "/jobs/nope", None, 404),
        ("GET", "/jobs/nope/logs", None, 404),
        ("GET", "/jobs", {"state": "sleeping"}, 422),
        ("GET", "/jobs", {"label": "no-colon"}, 422),
        ("GET", "/jobs", {"cursor": "xyz"}, 422),
        ("GET", "/jobs", {"limit": 0}, 422),
        ("GET", "/nowhere", None, 404),
        ("PUT", "/jobs", None, 405),
    ],
)
def test_bad_queries_get_a_clear_4xx(
    server: Server, method: str, path: str, params: dict[str, Any] | None, status: int
) -> None:
    response = server.client.request(method, path, params=params)
    assert response.status_code == status
    assert response.json()["error"]["message"]


def test_wait_s_bounds_the_wait(server: Server) -> None:
    started = time.monotonic()
    response = server.client.post("/jobs", params={"wait": "true", "wait_s": 1}, json={
        "image": BUSYBOX, "command": ["sleep", "5"]
    })  # fmt: skip
    assert response.status_code == 201 and response.json()["state"] in ("queued", "building", "running")
    assert time.monotonic() - started < 4
    server.client.delete(f"/jobs/{response.json()['id']}", params={"grace_s": 0})


def test_metrics_count_what_the_worker_did_in_the_prometheus_format(server: Server) -> None:
    def sample(text: str, name: str, **labels: str) -> float:
        return sum(
            found.value
            for family in text_string_to_metric_families(text)
            for found in family.samples
            if found.name == name and labels.items() <= found.labels.items()
        )

    before = server.client.get("/metrics").text
    server.post_job(wait=True, image=BUSYBOX, command="exit 3")
    response = server.client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    after = response.text
    failed = {"kind": "job", "state": "failed", "reason": "exit_code"}
    assert (
        sample(after, "hatchway_jobs_finished_total", **failed)
        == sample(before, "hatchway_jobs_finished_total", **failed) + 1
    )
    assert sample(after, "hatchway_engine_available", engine="docker") == 1
    assert "hatchway_container_start_seconds_bucket" in after and "hatchway_job_queue_wait_seconds_bucket" in after
    answered = sample(after, "hatchway_http_requests_total", method="POST", route="/jobs", status="201")
    assert answered >= 1
