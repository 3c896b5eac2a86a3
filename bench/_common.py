"""What the benchmarks share: a `hatchway serve` under test (and one with a pool), container clean-up,
interleaved latency samples, a cheap HTTP client for bursts of submissions."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

import docker
import httpx
import psutil

IMAGE = "hatchway-test/busybox:latest"
ECHO_COMMAND = ["echo", "hi"]
ECHO_JOB = {"image": IMAGE, "command": ECHO_COMMAND}  # the trivial job
BENCH_LABEL = "hatchway-bench"
WORKER_LABEL = "hatchway.worker_id"
MIB = 1024 * 1024

Job = Callable[[], None]


def floor_job(api: docker.APIClient, command: list[str], output: bytes, runtime: str | None = None) -> Job:
    """create + start + wait + logs + remove through the SDK, network none: the least any worker has to do.

    `runtime` is a Docker runtime name (None: the engine's default, runc); the job must print `output`.
    """
    host_config = api.create_host_config(network_mode="none", runtime=runtime)

    def run() -> None:
        cid = api.create_container(IMAGE, command, labels={BENCH_LABEL: "1"}, host_config=host_config)["Id"]
        try:
            api.start(cid)
            api.wait(cid)
            out = api.logs(cid)
        finally:
            api.remove_container(cid, force=True)
        if out != output:
            raise RuntimeError(f"floor job {command} on {runtime or 'the default runtime'} printed {out!r}")

    return run


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    url: str

    @property
    def rss_mb(self) -> float:
        return psutil.Process(self.proc.pid).memory_info().rss / MIB


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def hatchway_server(max_concurrent_jobs: int, leftovers: dict[str, int], **settings: str) -> Iterator[Server]:
    """`hatchway serve` on a free port with a fresh data dir; SIGTERM-ed, waited for and cleaned up on exit.

    `settings` become HATCHWAY_<KEY> variables. How many containers the worker left behind is put in `leftovers`
    under its worker id (they are removed).
    """
    data_dir = Path(tempfile.mkdtemp(prefix="hatchway-bench-"))
    worker_id = f"bench-{uuid.uuid4().hex[:12]}"
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("HATCHWAY_")}
    env.update(
        HATCHWAY_DATA_DIR=str(data_dir / "data"),
        HATCHWAY_HOST="127.0.0.1",
        HATCHWAY_PORT=str(port),
        HATCHWAY_MAX_CONCURRENT_JOBS=str(max_concurrent_jobs),
        HATCHWAY_WORKER_ID=worker_id,
        **{f"HATCHWAY_{key.upper()}": value for key, value in settings.items()},
    )
    script = Path(sys.executable).with_name("hatchway")  # the console script of this virtualenv
    log_path, proc = data_dir / "server.log", None
    try:
        with log_path.open("wb") as log:
            proc = subprocess.Popen([str(script), "serve"], env=env, stdout=log, stderr=subprocess.STDOUT)
        server = Server(proc, f"http://127.0.0.1:{port}")
        _wait_healthy(server, log_path)
        yield server
    finally:
        if proc is not None:
            stop_server(proc)
        leftovers[worker_id] = remove_containers({"label": f"{WORKER_LABEL}={worker_id}"})
        shutil.rmtree(data_dir, ignore_errors=True)


def _wait_healthy(server: Server, log_path: Path, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            break
        try:
            if httpx.get(f"{server.url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    tail = log_path.read_text(errors="replace")[-2000:]
    raise RuntimeError(f"hatchway serve did not become healthy within {timeout_s}s; its log ends:\n{tail}")


def stop_server(proc: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    """SIGTERM, then wait; SIGKILL (and say so) if it ignores that for `timeout_s`."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            print(f"!! server {proc.pid} ignored SIGTERM for {timeout_s}s; killing it", file=sys.stderr)
            proc.kill()
            proc.wait()


def remove_containers(filters: dict[str, str]) -> int:
    """Force-remove every container matching `filters`; how many there were."""
    with closing(docker.from_env()) as client:
        found = client.containers.list(all=True, filters=filters)
        for container in found:
            container.remove(force=True)
        return len(found)


def report_leftovers(leftovers: dict[str, int]) -> None:
    """Say which workers left containers behind, and remove any floor container an error left."""
    stray = remove_containers({"label": BENCH_LABEL})
    for worker_id, count in leftovers.items():
        if count:
            print(f"!! hatchway worker {worker_id} left {count} container(s) behind after SIGTERM (removed)")
    if stray:
        print(f"!! removed {stray} floor container(s) left by an error")


def measure_latency(jobs: dict[str, Job], runs: int) -> dict[str, float]:
    """Median seconds per job, the sides interleaved (and their order rotated) run by run."""
    names = list(jobs)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for run in range(runs):
        for name in names[run % len(names) :] + names[: run % len(names)]:
            start = time.perf_counter()
            jobs[name]()
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in samples.items()}


@contextmanager
def pool_server(
    leftovers: dict[str, int], runtime: str, reuse_jobs: int, size: int, *, slots: int = 4, **settings: str
) -> Iterator[httpx.Client]:
    """A worker with `slots` job slots and one pool of `size` busybox containers on `runtime` (`reuse_jobs` as in
    the pool settings), once its pool is full; `settings` as for `hatchway_server`."""
    pools = json.dumps([{"image": IMAGE, "runtime": runtime, "size": size, "reuse_jobs": reuse_jobs}])
    with (
        hatchway_server(slots, leftovers, pools=pools, pool_warm_total="0", log_level="WARNING", **settings) as server,
        httpx.Client(base_url=server.url, timeout=120, limits=httpx.Limits(max_connections=8)) as client,
    ):
        deadline = time.monotonic() + 120
        while client.get("/pools").json()[0]["idle"] < size:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the pool did not fill: {client.get('/pools').json()}")
            time.sleep(0.1)
        yield client


def settle(clients: list[httpx.Client]) -> None:
    """Wait until every worker's pools are full and nothing starts: a sample must not pay for the background
    refill another side's job caused."""
    deadline = time.monotonic() + 60
    for client in clients:
        while time.monotonic() < deadline:
            pools = client.get("/pools").json()
            if all(pool["idle"] >= pool["size"] and pool["starting"] == 0 for pool in pools):
                break
            time.sleep(0.01)


QUIET_BUSY = 0.15
"""The share of the machine's CPU time busy, at most, for it to count as quiet (`quiet`)."""


def quiet(timeout_s: float = 30) -> float:
    """Wait until the machine is quiet (less than `QUIET_BUSY` of its CPU time busy over half a second), so that a
    measurement is not paying for what the one before left running (containers being removed, a server's
    processes exiting); at most `timeout_s`. Returns the share busy at the last look, to be reported if high."""
    deadline = time.monotonic() + timeout_s
    while True:
        busy = psutil.cpu_percent(interval=0.5) / 100
        if busy < QUIET_BUSY or time.monotonic() >= deadline:
            return busy


async def post_raw(url: str, count: int, concurrency: int, body: Mapping[str, object] = ECHO_JOB) -> int:
    """POST `count` jobs (no wait) over `concurrency` keep-alive HTTP/1.1 connections; how many got a 201.

    Hand-rolled so the client costs ~0.2 ms CPU a request: httpx.AsyncClient's pool costs ~5 ms here,
    and on a 2-core machine that would measure the client rather than the server.
    """
    host, port = httpx.URL(url).host, httpx.URL(url).port or 80
    payload = json.dumps(body).encode()
    head = f"POST /jobs HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
    request = f"{head}Content-Length: {len(payload)}\r\n\r\n".encode() + payload
    left, accepted = count, 0

    async def submitter() -> None:
        nonlocal left, accepted
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while left > 0:
                left -= 1
                writer.write(request)
                status, length = await reader.readline(), 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = line.partition(b":")
                    length = int(value) if name.strip().lower() == b"content-length" else length
                await reader.readexactly(length)
                accepted += status.split()[1:2] == [b"201"]
        finally:
            writer.close()

    await asyncio.gather(*(submitter() for _ in range(concurrency)))
    return accepted
