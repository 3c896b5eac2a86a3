"""A real `hatchway serve` process, driven over HTTP on 127.0.0.1 the way a user would."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest

from tests.conftest import containers_of, mounts_under
from tests.postgres_db import fresh_schema_sync


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Server:
    """One worker process; `start` can be called again after `stop` or `kill9` (same data, same id). It listens on
    a free port, unless `port` names one (a client that hard-codes the worker's port, such as the worker-agent
    system's dashboard)."""

    def __init__(self, data_dir: Path, worker_id: str, port: int | None = None, **settings: Any) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.worker_id = worker_id
        self.log_path = data_dir / "server.log"
        self.env = {key: value for key, value in os.environ.items() if not key.startswith("HATCHWAY_")}
        self.env.update(
            HATCHWAY_DATA_DIR=str(data_dir),
            HATCHWAY_WORKER_ID=worker_id,
            HATCHWAY_HOST="127.0.0.1",
            HATCHWAY_PORT=str(self.port),
            HATCHWAY_ALLOWED_IMAGES="hatchway-test/*",
            # The fake masters, archive servers and callback receivers listen on loopback, which a worker reaches
            # for someone else only when told to. Hostile tests set it back to "" (none).
            HATCHWAY_ALLOWED_PRIVATE_NETWORKS="127.0.0.0/8",
            HATCHWAY_KILL_GRACE_S="1",
            HATCHWAY_SHUTDOWN_GRACE_S="2",
        )
        self.env.update({f"HATCHWAY_{key.upper()}": str(value) for key, value in settings.items()})
        self.process: subprocess.Popen[bytes] | None = None
        self.client = httpx.Client(base_url=self.url, timeout=60)

    def start(self) -> Server:
        data_dir = Path(self.env["HATCHWAY_DATA_DIR"])
        data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "hatchway.cli.main", "serve"], env=self.env, stdout=log, stderr=log
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"server exited early:\n{self.log_path.read_text()}"
            try:
                if self.client.get("/health").status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)  # waiting for another process to listen: there is no event to await
        raise AssertionError(f"server did not become healthy:\n{self.log_path.read_text()}")

    def stop(self, timeout_s: float = 60) -> int:
        """SIGTERM, and the exit code once it has drained."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout_s)

    def kill9(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=10)

    def post_job(self, wait: bool = False, **body: Any) -> httpx.Response:
        return self.client.post("/jobs", json=body, params={"wait": "true"} if wait else None)

    def wait_state(self, job_id: str, *states: str, timeout_s: float = 60) -> dict[str, Any]:
        """Poll the job over HTTP (a client has no other way) until it is in one of `states`."""
        deadline = time.monotonic() + timeout_s
        while True:
            job: dict[str, Any] = self.client.get(f"/jobs/{job_id}").json()
            if job["state"] in states:
                return job
            assert time.monotonic() < deadline, f"job stuck in {job['state']}, wanted {states}"
            time.sleep(0.1)


ServerFactory = Callable[..., Server]


def all_reported(server: Server, source: str, timeout_s: float = 30) -> list[dict[str, Any]]:
    """The jobs of `source`, polled over HTTP until each has its report recorded (just after the master's answer)."""
    deadline = time.monotonic() + timeout_s
    while True:
        jobs: list[dict[str, Any]] = server.client.get("/jobs", params={"label": f"source:{source}"}).json()["jobs"]
        if jobs and all(job["reported_at"] is not None for job in jobs):
            return jobs
        assert time.monotonic() < deadline, f"reports never recorded: {jobs}"
        time.sleep(0.05)


@pytest.fixture
def start_server(tmp_path: Path, worker_id: str, docker_client: docker.DockerClient) -> Iterator[ServerFactory]:
    """Start servers for one test; every one is stopped and must leave no container behind."""
    servers: list[Server] = []

    def _start(**settings: Any) -> Server:
        server = Server(tmp_path / f"data-{len(servers)}", f"{worker_id}-{len(servers)}", **settings)
        servers.append(server)
        return server.start()

    yield _start
    for server in servers:
        if server.process is not None and server.process.poll() is None:
            server.stop()
        server.client.close()
        assert containers_of(docker_client, server.worker_id) == [], "containers left behind"
        assert mounts_under(server.log_path.parent) == [], "a job's disk left mounted"


@pytest.fixture
def start_fleet(start_server: ServerFactory) -> Iterator[ServerFactory]:
    """Start workers of one fleet: each on the same fresh PostgreSQL store (`store_url`), which goes once they have
    all stopped."""
    with fresh_schema_sync() as url:
        started: list[Server] = []

        def _start(**settings: Any) -> Server:
            server = start_server(store_url=url, **settings)
            started.append(server)
            return server

        yield _start
        for server in started:
            if server.process is not None and server.process.poll() is None:
                server.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, docker_client: docker.DockerClient) -> Iterator[Server]:
    """One server shared by a module's tests that do not restart it."""
    worker_id = f"shared-{os.getpid()}-{free_port()}"
    running = Server(tmp_path_factory.mktemp("shared"), worker_id, max_concurrent_jobs=2).start()
    yield running
    assert running.stop() == 0
    running.client.close()
    assert containers_of(docker_client, worker_id) == []
