"""DNS rebinding: a page on evil.example has its name resolve to 127.0.0.1 once it has loaded, and the browser of
anyone on the worker's machine who opens it then sends the page's requests to the open, loopback API, and lets the
page read the answers: it could list jobs, read their output and run its own. Those requests name evil.example
in `Host`. Now an API without tokens answers only loopback names and the configured ones (421 otherwise)."""

from __future__ import annotations

import pytest

from tests.acceptance.conftest import ServerFactory

pytestmark = pytest.mark.docker

EVIL = {"host": "evil.example:8080"}


def test_a_request_for_another_site_s_name_is_refused_by_a_loopback_worker(start_server: ServerFactory) -> None:
    server = start_server()
    job = {"id": "rebound", "image": "hatchway-test/busybox", "command": "echo the page ran this"}
    for method, path, body in (("POST", "/jobs", job), ("GET", "/jobs", None), ("GET", "/health", None)):
        answer = server.client.request(method, path, json=body, headers=EVIL)
        assert answer.status_code == 421, f"{method} {path} for evil.example: {answer.status_code} {answer.text[:300]}"
        assert answer.json()["error"]["code"] == "host_not_allowed"
    assert server.client.get("/jobs/rebound").status_code == 404, "the page's job was never created"
    # The worker's own names still work: 127.0.0.1 (the client's default), localhost and [::1] with their ports.
    for host in (f"localhost:{server.port}", f"[::1]:{server.port}", "127.0.0.1"):
        assert server.client.get("/jobs", headers={"host": host}).status_code == 200, host
    assert server.stop() == 0


def test_a_name_given_in_api_allowed_hosts_is_answered(start_server: ServerFactory) -> None:
    server = start_server(api_allowed_hosts="worker.internal")
    assert server.client.get("/jobs", headers={"host": "worker.internal:8080"}).status_code == 200
    assert server.client.get("/jobs", headers=EVIL).status_code == 421
    assert server.stop() == 0
