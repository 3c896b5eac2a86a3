"""The open API answers only loopback `Host`s and the ones configured: the defence against DNS rebinding."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from hatchway.api.errors import install_error_handlers
from hatchway.api.hosts import allowed_hosts, host_name, install_host_check
from hatchway.settings import ApiToken, Role, Settings

TOKEN = ApiToken(token="t" * 32, role=Role.READ)


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("localhost", "localhost"),
        ("LocalHost.:8080", "localhost"),
        ("127.0.0.1:8080", "127.0.0.1"),
        ("[::1]:8080", "::1"),
        ("[::1]", "::1"),
        ("::1", "::1"),
        ("evil.example:80", "evil.example"),
    ],
)
def test_the_name_of_a_host_header_is_without_port_case_or_final_dot(header: str, name: str) -> None:
    assert host_name(header) == name


def settings(**fields: Any) -> Settings:
    return Settings.model_validate(fields)


def test_which_hosts_are_checked_follows_the_tokens_and_the_settings() -> None:
    assert allowed_hosts(settings()) == []
    assert allowed_hosts(settings(api_tokens=[TOKEN])) is None, "tokens keep rebinding out: no check"
    assert allowed_hosts(settings(api_tokens=[TOKEN], api_allowed_hosts="a.example")) == ["a.example"]
    assert allowed_hosts(settings(api_allowed_hosts="a.example, *")) is None
    exposed = settings(host="10.0.0.5", allow_unauthenticated=True, advertise_url="http://worker-3:8080")
    assert allowed_hosts(exposed) == ["10.0.0.5", "worker-3"], "the address it listens on and is advertised at"
    assert allowed_hosts(settings(host="0.0.0.0", allow_unauthenticated=True)) == []


async def answers(app_settings: Settings, host: str) -> httpx.Response:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/jobs")
    async def jobs() -> list[str]:
        return []

    install_host_check(app, app_settings)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as client:
        return await client.get("/jobs", headers={"host": host})


@pytest.mark.parametrize("host", ["localhost:8080", "127.0.0.1", "127.3.2.1:80", "[::1]:8080", "mine.example"])
async def test_loopback_and_configured_hosts_are_answered(host: str) -> None:
    assert (await answers(settings(api_allowed_hosts="mine.example"), host)).status_code == 200


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8080", "localhost.evil.example", "10.0.0.5"])
async def test_other_hosts_are_refused_with_421_in_the_api_s_error_format(host: str) -> None:
    refused = await answers(settings(api_allowed_hosts="mine.example"), host)
    assert refused.status_code == 421
    error = refused.json()["error"]
    assert error["code"] == "host_not_allowed" and "api_allowed_hosts" in error["message"]
    assert (await answers(settings(api_tokens=[TOKEN]), host)).status_code == 200, "not checked with tokens"
