"""What the worker-agent system's dashboard reads, from a page of another origin (its own server, port 10000):
the fields of /info and /health, and CORS for the origins `cors_origins` names (none by default), with and without
API tokens. In a real browser: tests/browser/test_agent_dashboard.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from hatchway.engines.fake import FakeEngine
from hatchway.settings import Settings
from tests.unit.test_agent_protocol import agent_job, engine, serving

__all__ = ["engine"]  # the fixture, shared

DASHBOARD = "http://127.0.0.1:10000"
ADMIN = "an-admin-token-of-16+"


async def test_info_and_health_carry_what_the_dashboard_reads(tmp_path: Path, engine: FakeEngine) -> None:
    async with serving(tmp_path, engine, worker_labels={"rack": "b2", "gpu": ""}) as (_, api):
        info = (await api.get("/info")).json()
        health = (await api.get("/health")).json()
    assert (info["worker_id"], info["protocol_version"], info["labels"]) == ("unit", 1, ["rack=b2", "gpu"])
    for name, kind in [("hostname", str), ("os", str), ("os_architecture", str), ("cpu_threads", int)]:
        assert isinstance(info[name], kind) and info[name], name
    assert info["memory_mb"] > 0 and (info["cpu_model"] is None or isinstance(info["cpu_model"], str))
    assert info["cpu_cores"] is None or info["cpu_cores"] >= 1
    assert health["status"] == "ok" and health["running_jobs"] == health["running"] == 0
    assert health["max_concurrent_jobs"] == 2 and health["cpu_threads"] == info["cpu_threads"]
    assert len(health["load_average"]) == 3 and health["uptime_seconds"] >= 0
    assert 0 < health["memory_available_mb"] <= health["memory_total_mb"]
    assert "temperature_c" in health


def preflight(origin: str, method: str = "POST") -> dict[str, str]:
    return {"Origin": origin, "Access-Control-Request-Method": method, "Access-Control-Request-Headers": "content-type"}


async def test_no_origin_is_allowed_by_default(tmp_path: Path, engine: FakeEngine) -> None:
    async with serving(tmp_path, engine) as (_, api):
        answer = await api.get("/info", headers={"Origin": DASHBOARD})
        assert answer.status_code == 200 and "access-control-allow-origin" not in answer.headers
        preflown = await api.options("/jobs", headers=preflight(DASHBOARD))
        assert "access-control-allow-origin" not in preflown.headers


async def test_an_allowed_origin_may_read_and_post_others_may_not(tmp_path: Path, engine: FakeEngine) -> None:
    async with serving(tmp_path, engine, cors_origins=[DASHBOARD]) as (_, api):
        for path in ("/info", "/health"):
            answer = await api.get(path, headers={"Origin": DASHBOARD})
            assert answer.headers["access-control-allow-origin"] == DASHBOARD
        allowed = await api.options("/jobs", headers=preflight(DASHBOARD))
        assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == DASHBOARD
        assert "POST" in allowed.headers["access-control-allow-methods"]
        elsewhere = "http://evil.example"
        assert "access-control-allow-origin" not in (await api.get("/info", headers={"Origin": elsewhere})).headers
        assert (await api.options("/jobs", headers=preflight(elsewhere))).status_code == 400


async def test_with_tokens_the_page_gets_the_refusal_it_can_read_and_only_health(
    tmp_path: Path, engine: FakeEngine
) -> None:
    """The dashboard sends no token: /info refuses it (401, readable from the page), /health answers."""
    tokens = [{"token": ADMIN, "role": "admin"}]
    async with serving(tmp_path, engine, cors_origins=[DASHBOARD], api_tokens=tokens) as (_, api):
        assert (await api.options("/jobs", headers=preflight(DASHBOARD))).status_code == 200  # no token in one
        info = await api.get("/info", headers={"Origin": DASHBOARD})
        assert (info.status_code, info.headers["access-control-allow-origin"]) == (401, DASHBOARD)
        assert (await api.get("/health", headers={"Origin": DASHBOARD})).status_code == 200
        without = await api.post("/jobs", json=agent_job("j"))
        assert without.status_code == 401, "a master needs a token here like any client"
        bearer = {"Authorization": f"Bearer {ADMIN}"}
        assert (await api.post("/jobs", json=agent_job("j"), headers=bearer)).status_code == 202


@pytest.mark.parametrize("origins", ["http://a:10000, https://b.example", ["*"]])
def test_cors_origins_are_read_as_browsers_write_them(origins: Any, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, cors_origins=origins)
    assert settings.cors_origins in (["http://a:10000", "https://b.example"], ["*"])


@pytest.mark.parametrize("origin", ["http://a/path", "ftp://a", "a:10000", "http://a:10000/x"])
def test_an_origin_with_a_path_or_another_scheme_is_refused(origin: str, tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="an origin is scheme://host"):
        Settings(data_dir=tmp_path, cors_origins=[origin])
