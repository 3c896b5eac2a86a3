"""How close hatchway comes to the Docker engine it drives, measured side by side in one run.

Usage: .venv/bin/python bench/bench_core.py [--quick] [--runs N] [--jobs N] [--submit N] [--queued N]

A measurement, not a test: it prints a table, ratios and PASS/MISS per target, and always exits 0.
See bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import docker
import httpx
import psutil
from _common import (
    ECHO_COMMAND,
    ECHO_JOB,
    IMAGE,
    Job,
    Server,
    floor_job,
    hatchway_server,
    measure_latency,
    post_raw,
    report_leftovers,
    stop_server,
)

COMMAND, JOB = ECHO_COMMAND, ECHO_JOB

Poster = Callable[[str, int, int], Awaitable[int]]


# One trivial job, three ways.


def cli_job() -> None:
    subprocess.run(["docker", "run", "--rm", "--network", "none", IMAGE, *COMMAND], check=True, capture_output=True)


def hatchway_job(client: httpx.Client) -> Job:
    def run() -> None:
        answer = client.post("/jobs", params={"wait": "true"}, json=JOB)
        job = answer.json()
        if answer.status_code != 201 or job.get("state") != "succeeded" or job.get("stdout") != "hi\n":
            raise RuntimeError(f"hatchway job went wrong: {answer.status_code} {answer.text[:300]}")

    return run


def _cpu_s(pid: int | None = None) -> float:
    """CPU seconds (user + system) process `pid`, or this one, has used so far."""
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


# Measurements.


def _burst(job: Job, count: int, clients: int) -> float:
    """Seconds to run `count` jobs from `clients` threads."""
    with ThreadPoolExecutor(clients) as pool:
        start = time.perf_counter()
        for _ in pool.map(lambda _: job(), range(count)):
            pass
        return time.perf_counter() - start


def measure_throughput(jobs: dict[str, Job], total: int, clients: int, rounds: int) -> dict[str, float]:
    """Jobs per second for each side over `total` jobs, split into interleaved rounds."""
    names = list(jobs)
    seconds = dict.fromkeys(names, 0.0)
    per_round = max(total // rounds, clients)
    for round_ in range(rounds):
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            seconds[name] += _burst(jobs[name], per_round, clients)
    return {name: per_round * rounds / spent for name, spent in seconds.items()}


async def _post_httpx(url: str, count: int, concurrency: int) -> int:
    """`post_raw`'s burst through one httpx.AsyncClient and its connection pool, as a typical Python client sends it."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    left, accepted = count, 0
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:

        async def submitter() -> None:
            nonlocal left, accepted
            while left > 0:
                left -= 1
                answer = await client.post("/jobs", json=JOB)  # not inside `accepted += ...`: that loses counts
                accepted += answer.status_code == 201

        await asyncio.gather(*(submitter() for _ in range(concurrency)))
        return accepted


def _timed_posts(poster: Poster, server: Server, count: int, concurrency: int) -> dict[str, float]:
    """accepted/s, failures, and CPU ms per POST of the server and of this (client) process."""
    server_cpu, client_cpu, start = _cpu_s(server.proc.pid), _cpu_s(), time.perf_counter()
    accepted = asyncio.run(poster(server.url, count, concurrency))
    return {
        "per_s": accepted / (time.perf_counter() - start),
        "failed": count - accepted,
        "server_ms": (_cpu_s(server.proc.pid) - server_cpu) * 1000 / count,
        "client_ms": (_cpu_s() - client_cpu) * 1000 / count,
    }


def measure_queue(args: argparse.Namespace, leftovers: dict[str, int]) -> dict[str, Any]:
    """Submissions/s into a saturated queue, then RSS with `args.queued` jobs waiting, on a max-1-job server."""
    result: dict[str, Any] = {}
    with hatchway_server(1, leftovers, shutdown_grace_s="0", kill_grace_s="0") as server:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            blocker = {"image": IMAGE, "command": ["sleep", "3600"], "limits": {"timeout_s": 3600}}
            blocker_id = client.post("/jobs", json=blocker).json()["id"]
            deadline = time.monotonic() + 30
            while client.get(f"/jobs/{blocker_id}").json()["state"] != "running":
                if time.monotonic() > deadline:
                    raise RuntimeError("the blocking sleep job did not start within 30s")
                time.sleep(0.05)
            result["rss_before_mb"] = server.rss_mb
            result["submit"] = _timed_posts(post_raw, server, args.submit, args.concurrency)
            result["httpx"] = _timed_posts(_post_httpx, server, args.httpx_posts, args.concurrency)
            fill = args.queued - args.submit - args.httpx_posts
            result["fill"] = _timed_posts(post_raw, server, fill, args.concurrency)
            result["queued_reported"] = client.get("/health").json()["queued"]
            result["rss_after_mb"] = server.rss_mb
        start = time.perf_counter()
        stop_server(server.proc)
        result["shutdown_s"] = time.perf_counter() - start
    return result


def measure_core(runs: int, jobs: int, rounds: int, leftovers: dict[str, int]) -> dict[str, dict[str, float]]:
    """Latency and throughput of the SDK floor, the docker CLI and hatchway, interleaved."""
    sdk = docker.from_env(max_pool_size=8)
    try:
        with (
            hatchway_server(4, leftovers) as server,
            httpx.Client(base_url=server.url, timeout=120, limits=httpx.Limits(max_connections=8)) as client,
        ):
            floor, hatchway = floor_job(sdk.api, COMMAND, b"hi\n"), hatchway_job(client)
            for warm_up in (floor, hatchway, cli_job):
                warm_up()
            latency = measure_latency({"floor": floor, "hatchway": hatchway, "cli": cli_job}, runs)
            sides = {"floor": floor, "hatchway": hatchway}
            return {
                "latency": latency,
                "tput1": measure_throughput(sides, jobs, 1, rounds),
                "tput4": measure_throughput(sides, jobs, 4, rounds),
            }
    finally:
        sdk.close()


# Report.


def report(core: dict[str, dict[str, float]], queue: dict[str, Any], args: argparse.Namespace) -> None:
    lat, t1, t4 = core["latency"], core["tput1"], core["tput4"]
    print(f"\n{'trivial job: echo hi':<32}{'SDK floor':>11}{'docker CLI':>12}{'hatchway':>10}")
    print(
        f"{'median latency, 1 client (ms)':<32}{lat['floor'] * 1000:>11.0f}{lat['cli'] * 1000:>12.0f}"
        f"{lat['hatchway'] * 1000:>10.0f}"
    )
    for label, tput in (("throughput, 1 client (jobs/s)", t1), ("throughput, 4 clients (jobs/s)", t4)):
        print(f"{label:<32}{tput['floor']:>11.2f}{'-':>12}{tput['hatchway']:>10.2f}")
    print(f"({args.runs} latency runs a side; {args.jobs} jobs a side per throughput figure, in {args.rounds} rounds)")

    print(f"\nsaturated queue: max_concurrent_jobs=1, one `sleep` running, {args.concurrency} connections")
    print(f"{'POSTs without wait':<40}{'accepted/s':>11}{'server CPU':>12}{'client CPU':>12}")
    for key, label in (
        ("submit", f"first {args.submit}, raw HTTP/1.1 client"),
        ("httpx", f"next {args.httpx_posts}, httpx.AsyncClient pool"),
        ("fill", f"the rest up to {args.queued}, raw client"),
    ):
        row = queue[key]
        print(f"{label:<40}{row['per_s']:>11.0f}{row['server_ms']:>9.2f} ms{row['client_ms']:>9.2f} ms")
        if row["failed"]:
            print(f"  !! {row['failed']} of these POSTs were not answered 201")
    print(
        f"server RSS idle / with {args.queued} queued: {queue['rss_before_mb']:.1f} / {queue['rss_after_mb']:.1f} MB"
        f" (/health: {queue['queued_reported']} queued); SIGTERM to exit: {queue['shutdown_s']:.2f} s"
    )

    lat_ratio, tput_ratio = lat["hatchway"] / lat["floor"], t4["hatchway"] / t4["floor"]
    submit_rate, rss = queue["submit"]["per_s"], queue["rss_after_mb"]
    checks = [
        ("API latency / SDK floor latency", lat_ratio, "<= 1.2", lat_ratio <= 1.2),
        ("API tput / floor tput, 4 clients", tput_ratio, ">= 0.9", tput_ratio >= 0.9),
        ("submissions accepted/s", submit_rate, ">= 500", submit_rate >= 500),
        (f"RSS MB with {args.queued} queued", rss, "< 150", rss < 150),
    ]
    print(f"\n{'target':<36}{'value':>9}  {'goal':<8}")
    for label, value, goal, ok in checks:
        print(f"{label:<36}{value:>9.3g}  {goal:<8}{'PASS' if ok else 'MISS'}")
    print(f"(for reference: docker CLI / SDK floor latency = {lat['cli'] / lat['floor']:.2f})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a fast smoke run")
    parser.add_argument("--runs", type=int, default=20, help="latency samples a side")
    parser.add_argument("--jobs", type=int, default=96, help="jobs a side for each throughput figure")
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds the throughput jobs are split into")
    parser.add_argument("--submit", type=int, default=2000, help="timed POSTs into the saturated queue")
    parser.add_argument("--httpx-posts", type=int, default=500, help="POSTs timed with httpx.AsyncClient")
    parser.add_argument("--queued", type=int, default=10_000, help="queued jobs when RSS is read")
    parser.add_argument("--concurrency", type=int, default=16, help="connections posting to the queue")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.jobs, args.rounds, args.submit, args.httpx_posts, args.queued = 5, 8, 2, 500, 200, 1000
    args.queued = max(args.queued, args.submit + args.httpx_posts)

    leftovers: dict[str, int] = {}
    started = time.perf_counter()
    try:
        print(f"latency and throughput: {args.runs} runs, {args.jobs} jobs a side...", flush=True)
        core = measure_core(args.runs, args.jobs, args.rounds, leftovers)
        print(f"saturated queue: {args.queued} POSTs...", flush=True)
        queue = measure_queue(args, leftovers)
        report(core, queue, args)
    finally:
        report_leftovers(leftovers)
    print(f"\ntotal bench time {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
