"""API tokens, as a client meets them: every role against every endpoint of a real `hatchway serve`, the command
line's --token and HATCHWAY_TOKEN, the refusal to serve an open API beyond loopback, and no token in the log."""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import docker
import httpx
import pytest

from tests.acceptance.conftest import Server, ServerFactory, free_port
from tests.conftest import BUSYBOX, containers_of

pytestmark = pytest.mark.docker

ROLES = ("read", "submit", "admin")
TOKENS = {role: f"{role}-{secrets.token_urlsafe(24)}" for role in ROLES}
NAMES = {role: f"{role}-holder" for role in ROLES}

# What each endpoint needs, written out here rather than taken from api/auth.py, so the test checks the policy
# instead of repeating it. An endpoint not named here is expected to follow the default: GET needs read, any
# other method admin.
EXPECTED: dict[tuple[str, str], str | None] = {
    ("GET", "/health"): None,
    ("GET", "/"): None,  # the dashboard's page and files: a static shell, no data
    ("GET", "/ui/{name}"): None,
    ("GET", "/events"): "read",
    ("GET", "/workers"): "read",  # the fleet's registry
    ("POST", "/jobs"): "submit",
    ("POST", "/grade"): "submit",
    ("POST", "/submit"): "submit",  # the grader pool's dialect (docs/compatibility.md)
    ("POST", "/grade/batch"): "submit",
    ("DELETE", "/jobs/{job_id}"): "admin",
    ("DELETE", "/grade/{job_id}"): "admin",
    ("POST", "/images/import"): "admin",
}
KNOWN = {
    ("GET", "/jobs"), ("GET", "/jobs/{job_id}"), ("GET", "/jobs/{job_id}/logs"), ("GET", "/jobs/{job_id}/artifacts"),
    ("GET", "/jobs/{job_id}/artifacts/{path}"), ("GET", "/images"), ("GET", "/info"), ("GET", "/profiles"),
    ("GET", "/pools"), ("GET", "/workers/status"), ("GET", "/grade/{job_id}"), ("GET", "/sources"),
    ("GET", "/metrics"), ("GET", "/stats"), *EXPECTED,
}  # fmt: skip
# Routes the OpenAPI document leaves out: FastAPI's own, and the dashboard's shell.
DOCUMENT_ROUTES = {("GET", "/openapi.json"), ("GET", "/docs"), ("GET", "/docs/oauth2-redirect"), ("GET", "/redoc")}
DASHBOARD_ROUTES = {("GET", "/"), ("GET", "/ui/{name}")}


def expected_role(method: str, path: str) -> str | None:
    if (method, path) in EXPECTED:
        return EXPECTED[method, path]
    return "read" if method == "GET" else "admin"


def bearer(role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[role]}"}


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory, docker_client: docker.DockerClient) -> Iterator[Server]:
    """One server with a token of each role, shared by the module's tests."""
    worker_id = f"auth-{os.getpid()}-{free_port()}"
    tokens = [{"token": TOKENS[role], "role": role, "name": NAMES[role]} for role in ROLES]
    running = Server(tmp_path_factory.mktemp("auth"), worker_id, api_tokens=json.dumps(tokens))
    try:
        running.start()
    except AssertionError:
        if running.process is not None:
            running.kill9()
        raise
    yield running
    assert running.stop() == 0
    running.client.close()
    assert containers_of(docker_client, worker_id) == []


def endpoints(server: Server) -> list[tuple[str, str]]:
    """Every (method, path) the running server serves: its OpenAPI document, and the document's own routes."""
    document = server.client.get("/openapi.json", headers=bearer("read")).json()
    found = {(method.upper(), path) for path, operations in document["paths"].items() for method in operations}
    assert KNOWN - DASHBOARD_ROUTES <= found, f"endpoints missing from the document: {KNOWN - found}"
    assert not found & DASHBOARD_ROUTES, "the dashboard's shell is not part of the API's document"
    return sorted(found | DOCUMENT_ROUTES | DASHBOARD_ROUTES)


def concrete(path: str) -> str:
    """The path with a dummy value for each parameter: the answer may be a 404 or 422, but it is not about auth."""
    return re.sub(r"\{[^}]+\}", "no-such-thing", path)


def call(server: Server, method: str, url: str, headers: dict[str, str] | None = None) -> httpx.Response:
    """The answer's status and, for an error, its body: an endless stream (GET /events) is not read."""
    with server.client.stream(method, url, headers=headers) as response:
        if response.status_code >= 400:
            response.read()
        return response


def test_every_role_against_every_endpoint(guarded: Server) -> None:
    checked = 0
    for method, path in endpoints(guarded):
        needed = expected_role(method, path)
        url = concrete(path)
        anonymous = call(guarded, method, url)
        if needed is None:
            assert anonymous.status_code not in (401, 403), (method, path)
            continue
        assert anonymous.status_code == 401, (method, path, anonymous.text)
        assert anonymous.headers["www-authenticate"].startswith("Bearer")
        assert anonymous.json()["error"]["code"] == "unauthenticated"
        wrong = call(guarded, method, url, headers={"Authorization": "Bearer not-one-of-the-tokens"})
        assert wrong.status_code == 401, (method, path)
        for role in ROLES:
            response = call(guarded, method, url, headers=bearer(role))
            if ROLES.index(role) >= ROLES.index(needed):
                assert response.status_code not in (401, 403), (method, path, role, response.text)
            else:
                assert response.status_code == 403, (method, path, role, response.text)
                error = response.json()["error"]
                assert error["code"] == "insufficient_role" and f"role {needed}" in error["message"]
                assert error["details"] == {"required_role": needed, "role": role}
            checked += 1
    assert checked >= 3 * len(KNOWN)


def test_health_needs_no_token(guarded: Server) -> None:
    response = guarded.client.get("/health")
    assert response.status_code == 200 and response.json()["status"] == "ok"


def test_the_dashboard_shell_loads_without_a_token_and_its_data_does_not(guarded: Server) -> None:
    page = guarded.client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert guarded.client.get("/ui/app.js").status_code == 200
    assert guarded.client.get("/ui/no-such-file.js").status_code == 404
    for data in ("/stats", "/jobs", "/ui/app.js/../../jobs", "/ui/x/y"):
        assert guarded.client.get(data).status_code == 401, data


def hatchway(*args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("HATCHWAY_")}
    if token is not None:
        env["HATCHWAY_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "hatchway.cli.main", *args], capture_output=True, text=True, timeout=120, env=env
    )


def test_the_command_line_shows_its_token(guarded: Server) -> None:
    url = ["--url", guarded.url]
    submit = ["submit", *url, "--token", TOKENS["submit"], "--wait", "--json"]
    submitted = hatchway(*submit, BUSYBOX, "--", "echo", "with-token")
    assert submitted.returncode == 0, submitted.stderr
    job = json.loads(submitted.stdout)
    assert job["stdout"] == "with-token\n"
    assert json.loads(hatchway("status", *url, "--json", job["id"], token=TOKENS["read"]).stdout)["id"] == job["id"]
    assert hatchway("logs", *url, job["id"], token=TOKENS["read"]).stdout == "with-token\n"
    assert job["id"] in hatchway("list", *url, token=TOKENS["read"]).stdout
    assert hatchway("images", "list", *url, token=TOKENS["read"]).returncode == 0
    flag_wins = hatchway("status", *url, "--token", TOKENS["read"], job["id"], token="not-one-of-the-tokens")
    assert flag_wins.returncode == 0, flag_wins.stderr

    for command in (["status", job["id"]], ["logs", job["id"]], ["list"], ["kill", job["id"]]):
        anonymous = hatchway(*command, *url)
        assert anonymous.returncode == 1
        assert anonymous.stderr == "hatchway: the server needs a token: pass --token or set HATCHWAY_TOKEN\n"
    rejected = hatchway("status", *url, job["id"], token="not-one-of-the-tokens")
    assert rejected.returncode == 1 and "does not accept this token" in rejected.stderr
    weak = hatchway("kill", *url, job["id"], token=TOKENS["submit"])
    assert weak.returncode == 1
    assert weak.stderr.startswith("hatchway: the token's role may not do this (403): ")
    assert "needs a token with role admin" in weak.stderr and "Traceback" not in weak.stderr
    finished = hatchway("kill", *url, job["id"], token=TOKENS["admin"])
    assert finished.returncode == 1 and "409" in finished.stderr  # past the token check: the job had ended


def test_no_token_ever_reaches_the_log(guarded: Server) -> None:
    guarded.client.delete("/jobs/no-such-job", headers=bearer("read"))
    guarded.client.delete("/jobs/no-such-job", headers=bearer("admin"))
    guarded.client.get("/jobs", headers={"Authorization": "Bearer guessed-guessed-guessed"})
    log = guarded.log_path.read_text()
    events = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    refused = [e for e in events if e.get("event") == "auth_refused"]
    assert {"status": 403, "token_name": "read-holder"}.items() <= refused[-2].items()
    assert {"status": 401, "token_name": None}.items() <= refused[-1].items()
    assert any(e.get("event") == "admin_call" and e.get("token_name") == "admin-holder" for e in events)
    for secret in [*TOKENS.values(), "guessed-guessed-guessed"]:
        assert secret not in log


def test_an_open_api_is_served_beyond_loopback_only_when_allowed(
    tmp_path: Path, worker_id: str, start_server: ServerFactory
) -> None:
    refused = Server(tmp_path / "refused", worker_id, host="0.0.0.0")
    result = subprocess.run(
        [sys.executable, "-m", "hatchway.cli.main", "serve"],
        env=refused.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    refused.client.close()
    assert result.returncode == 2
    assert "refusing to listen on 0.0.0.0" in result.stderr
    assert "api_tokens" in result.stderr and "allow_unauthenticated" in result.stderr
    assert not (tmp_path / "refused").exists(), "it refused before preparing anything"

    # Listening on every address for a moment; the test talks to it over 127.0.0.1 only.
    allowed = start_server(host="0.0.0.0", allow_unauthenticated="true")
    assert allowed.client.get("/jobs").status_code == 200
    assert "api_unauthenticated" in allowed.log_path.read_text()


def test_an_unknown_endpoint_needs_a_token_too(guarded: Server) -> None:
    assert guarded.client.get("/nowhere").status_code == 401
    assert guarded.client.get("/nowhere", headers=bearer("read")).status_code == 404
    assert httpx.post(f"{guarded.url}/jobs", content=b"{not json", timeout=10).status_code == 401
