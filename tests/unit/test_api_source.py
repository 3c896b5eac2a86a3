"""The HTTP API as a job source, served for real on 127.0.0.1 around a worker on the in-memory engine."""

from __future__ import annotations

import asyncio
import signal
import socket
from pathlib import Path

import httpx
import pytest

from hatchway.api.deps import ApiServices
from hatchway.api.server import ApiSource
from hatchway.engines.fake import FakeEngine, FakeProgram
from hatchway.errors import ConfigError
from tests.unit.test_runner import fake_worker


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def answering(client: httpx.AsyncClient) -> None:
    """Until the server listens: it starts in a task of the worker's, and says so to nobody."""
    async with asyncio.timeout(10):
        while True:
            try:
                await client.get("/health")
                return
            except httpx.ConnectError:
                await asyncio.sleep(0.02)


async def test_it_serves_the_api_counts_what_it_creates_and_leaves_signals_alone(tmp_path: Path) -> None:
    engine = FakeEngine()
    engine.programs["ok"] = FakeProgram(stdout=b"hi")
    worker = fake_worker(tmp_path, engine)
    api = ApiSource(ApiServices.of(worker.parts), host="127.0.0.1", port=free_port())
    worker.add_source(api)
    handlers = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    await worker.start(probe=False)
    async with httpx.AsyncClient(base_url=api.url, timeout=10) as client:
        await answering(client)
        assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == handlers, "uvicorn's own"
        listed = (await client.get("/sources")).json()
        assert listed == [
            {
                "name": "api",
                "kind": "http",
                "url": api.url,
                "pushes": True,
                "last_poll_at": None,
                "polls": 0,
                "claims": 0,
                "reports_sent": 0,
                "report_failures": 0,
                "reports_pending": 0,
                "errors": 0,
                "backoff_s": 0.0,
                "last_error": None,
                "events": None,
            }
        ]
        job = {"id": "once", "image": "img", "command": ["ok"]}
        assert (await client.post("/jobs", json=job, params={"wait": "true"})).status_code == 201
        assert (await client.post("/jobs", json=job)).status_code == 200, "the same job, not a new one"
        assert (await client.post("/jobs", json={"image": "img"})).status_code == 422
        assert [source["claims"] for source in (await client.get("/health")).json()["sources"]] == [1]
        metrics = (await client.get("/metrics")).text
        assert 'hatchway_source_claims_total{source="api"} 1.0' in metrics
        assert 'source="api"' not in metrics.replace('hatchway_source_claims_total{source="api"}', ""), (
            "it polls nothing and reports nothing"
        )

        await worker.drain()
        with pytest.raises(httpx.ConnectError):
            await client.get("/health")
    await worker.close()


async def test_a_port_it_cannot_listen_on_is_an_error_that_stops_the_worker(tmp_path: Path) -> None:
    worker = fake_worker(tmp_path, FakeEngine())
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        api = ApiSource(ApiServices.of(worker.parts), host="127.0.0.1", port=taken.getsockname()[1])
        worker.add_source(api)
        fatal = asyncio.Event()
        await worker.start(on_fatal=fatal.set, probe=False)
        await asyncio.wait_for(fatal.wait(), 10)
    await worker.shutdown()
    assert isinstance(api.failure, ConfigError)
    assert api.status().last_error == f"cannot listen on {api.url}"
