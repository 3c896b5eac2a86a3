"""The API's bearer-token check: the policy table, the role ordering, constant-time lookup, and the middleware's
answers, on a small app of the same shape as the worker's."""

from __future__ import annotations

import hmac
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI, Request
from pydantic import BaseModel

from hatchway.api.auth import Tokens, install_authentication, required_role
from hatchway.api.errors import install_error_handlers
from hatchway.settings import ApiToken, Role

SECRETS = {
    Role.READ: "read-secret-0123456789",
    Role.SUBMIT: "submit-secret-0123456789",
    Role.ADMIN: "admin-secret-012345",
}
TOKENS = [ApiToken(token=secret, role=role, name=f"{role}-holder") for role, secret in SECRETS.items()]


class Body(BaseModel):
    command: list[str]


def make_app(tokens: list[ApiToken]) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    jobs = APIRouter(prefix="/jobs")

    @jobs.get("/{job_id}")
    async def get_job(job_id: str, request: Request) -> dict[str, Any]:
        return {"id": job_id, "token_name": getattr(request.state, "token_name", None)}

    @jobs.post("")
    async def create_job(body: Body) -> dict[str, Any]:
        return {"command": body.command}

    @jobs.delete("/{job_id}")
    async def kill_job(job_id: str) -> dict[str, str]:
        return {"id": job_id}

    app.include_router(jobs)

    @app.post("/sources")
    async def an_endpoint_nobody_classified() -> dict[str, str]:
        return {}

    install_authentication(app, tokens)
    return app


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=make_app(TOKENS))
    async with httpx.AsyncClient(transport=transport, base_url="http://worker") as http:
        yield http


def bearer(role: Role) -> dict[str, str]:
    return {"Authorization": f"Bearer {SECRETS[role]}"}


@pytest.mark.parametrize(
    ("method", "path", "role"),
    [
        ("GET", "/health", None),
        ("HEAD", "/health", None),
        ("GET", "/", None),
        ("GET", "/ui/app.js", None),
        ("HEAD", "/ui/style.css", None),
        ("GET", "/ui/", Role.READ),
        ("GET", "/ui/a/b.js", Role.READ),
        ("GET", "/stats", Role.READ),
        ("GET", "/workers", Role.READ),
        ("GET", "/workers/status", Role.READ),
        ("POST", "/workers", Role.ADMIN),
        ("POST", "/", Role.ADMIN),
        ("POST", "/ui/app.js", Role.ADMIN),
        ("GET", "/jobs", Role.READ),
        ("HEAD", "/jobs/{job_id}", Role.READ),
        ("GET", "/openapi.json", Role.READ),
        ("GET", "/nowhere", Role.READ),
        ("GET", "/health/", Role.READ),
        ("GET", "/healthz", Role.READ),
        ("POST", "/jobs", Role.SUBMIT),
        ("post", "/grade", Role.SUBMIT),
        ("DELETE", "/jobs/{job_id}", Role.ADMIN),
        ("DELETE", "/grade/{job_id}", Role.ADMIN),
        ("DELETE", "/jobs/job-1", Role.ADMIN),
        ("GET", "/jobs/job-1", Role.READ),
        ("POST", "/jobs/", Role.ADMIN),
        ("POST", "/images/import", Role.ADMIN),
        ("POST", "/health", Role.ADMIN),
        ("POST", "/sources", Role.ADMIN),
        ("PUT", "/jobs", Role.ADMIN),
        ("PATCH", "/nowhere", Role.ADMIN),
    ],
)
def test_the_policy_and_its_defaults(method: str, path: str, role: Role | None) -> None:
    assert required_role(method, path) is role


def test_a_token_is_compared_with_every_configured_one(monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    tokens = Tokens(TOKENS)
    found = tokens.identify(SECRETS[Role.READ].encode())  # the first: the others are still compared
    assert found is not None and found.role is Role.READ
    assert len(compared) == len(TOKENS) and all(len(a) == len(b) == 32 for a, b in compared)
    compared.clear()
    assert tokens.identify(b"nope") is None and len(compared) == len(TOKENS)
    assert tokens.identify(SECRETS[Role.READ].encode() + b"x") is None
    assert tokens.identify(SECRETS[Role.READ][:-1].encode()) is None


async def test_no_token_is_a_401_asking_for_a_bearer_token(client: httpx.AsyncClient) -> None:
    for headers in ({}, {"Authorization": "Basic dXNlcjpwYXNz"}, {"Authorization": "Bearer "}):
        response = await client.get("/jobs/x", headers=headers)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == 'Bearer realm="hatchway"'
        error = response.json()["error"]
        assert error["code"] == "unauthenticated" and "Authorization: Bearer" in error["message"]
        assert error["details"] == {"required_role": "read"}


async def test_an_unknown_token_is_a_401_that_says_it_is_invalid(client: httpx.AsyncClient) -> None:
    response = await client.get("/jobs/x", headers={"Authorization": "Bearer not-a-real-token-at-all"})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="hatchway", error="invalid_token"'
    assert response.json()["error"]["message"] == "the API token is not valid on this worker"
    assert "not-a-real-token" not in response.text


async def test_a_weak_role_is_a_403_naming_the_role_needed(client: httpx.AsyncClient) -> None:
    response = await client.delete("/jobs/x", headers=bearer(Role.SUBMIT))
    assert response.status_code == 403 and "www-authenticate" not in response.headers
    error = response.json()["error"]
    assert error["code"] == "insufficient_role"
    assert error["message"] == "DELETE /jobs/x needs a token with role admin (or above); this token's role is submit"
    assert error["details"] == {"required_role": "admin", "role": "submit"}


async def test_a_strong_enough_role_passes_and_its_name_is_in_the_request_state(client: httpx.AsyncClient) -> None:
    for role in Role:
        response = await client.get("/jobs/x", headers=bearer(role))
        assert response.json() == {"id": "x", "token_name": f"{role}-holder"}
    scheme_in_any_case = {"Authorization": f"bEaReR {SECRETS[Role.SUBMIT]}"}
    created = await client.post("/jobs", json={"command": ["true"]}, headers=scheme_in_any_case)
    assert created.status_code == 200
    assert (await client.delete("/jobs/x", headers=bearer(Role.ADMIN))).status_code == 200


async def test_health_is_open(client: httpx.AsyncClient) -> None:
    assert (await client.get("/health")).status_code == 200
    assert (await client.get("/health", headers={"Authorization": "Bearer wrong-wrong-wrong"})).status_code == 200


async def test_an_unclassified_endpoint_needs_admin_and_an_unknown_path_needs_a_token(
    client: httpx.AsyncClient,
) -> None:
    assert (await client.post("/sources", headers=bearer(Role.SUBMIT))).status_code == 403
    assert (await client.post("/sources", headers=bearer(Role.ADMIN))).status_code == 200
    assert (await client.get("/nowhere")).status_code == 401
    assert (await client.get("/nowhere", headers=bearer(Role.READ))).status_code == 404
    assert (await client.put("/jobs/x", headers=bearer(Role.SUBMIT))).status_code == 403
    assert (await client.put("/jobs/x", headers=bearer(Role.ADMIN))).status_code == 405


async def test_the_token_is_checked_before_the_body_is_read(client: httpx.AsyncClient) -> None:
    response = await client.post("/jobs", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 401
    weak = await client.post("/jobs", content=b"{not json", headers={**bearer(Role.READ), "content-type": "x"})
    assert weak.status_code == 403


async def test_the_openapi_document_names_the_scheme_and_each_operations_role(client: httpx.AsyncClient) -> None:
    assert (await client.get("/openapi.json")).status_code == 401
    document = (await client.get("/openapi.json", headers=bearer(Role.READ))).json()
    assert document["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}
    paths = document["paths"]
    assert paths["/health"]["get"]["security"] == [] and paths["/health"]["get"]["x-required-role"] is None
    assert paths["/jobs"]["post"]["x-required-role"] == "submit"
    assert paths["/jobs/{job_id}"]["delete"]["security"] == [{"bearer": []}]
    assert paths["/jobs/{job_id}"]["get"]["x-required-role"] == "read"


async def test_refusals_and_admin_calls_are_logged_by_name_never_with_the_token(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="hatchway.api.auth")
    await client.delete("/jobs/x", headers=bearer(Role.READ))
    await client.delete("/jobs/x", headers=bearer(Role.ADMIN))
    await client.get("/jobs/x", headers={"Authorization": "Bearer guessed-token-guessed"})
    events = [(r.event, r.status if r.event == "auth_refused" else None, r.token_name) for r in caplog.records]  # type: ignore[attr-defined]
    assert events == [
        ("auth_refused", 403, "read-holder"),
        ("admin_call", None, "admin-holder"),
        ("auth_refused", 401, None),
    ]
    logged = caplog.text + repr([record.__dict__ for record in caplog.records])
    assert not any(secret in logged for secret in [*SECRETS.values(), "guessed-token-guessed"])


async def test_without_tokens_everything_is_open() -> None:
    transport = httpx.ASGITransport(app=make_app([]))
    async with httpx.AsyncClient(transport=transport, base_url="http://worker") as http:
        assert (await http.delete("/jobs/x")).status_code == 200
        assert (await http.get("/jobs/x")).json() == {"id": "x", "token_name": None}
        assert "securitySchemes" not in (await http.get("/openapi.json")).json().get("components", {})
