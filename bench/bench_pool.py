"""Pools of started containers against the cold floor, measured side by side in one run.

Usage: .venv/bin/python bench/bench_pool.py [--quick] [--runs N] [--jobs N] [--rounds N]

Sides, all running `echo hi` on the busybox test image:
- SDK floor: create + start + wait + logs + remove through the Docker SDK (runc, and runsc for gVisor);
- one-use pool: `POST /jobs?wait=true` on a worker whose pool replaces each container after its job;
- reuse pool: the same on a worker whose pool resets and reuses its containers;
- miss: a job that pool cannot serve (another working directory) on the one-use worker: the cold path.
A measurement, not a test: it prints figures, ratios and PASS/MISS per target of issue 7, and always exits 0.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack

import docker
import httpx
from _common import ECHO_COMMAND, IMAGE, Job, floor_job, pool_server, report_leftovers, settle

COMMAND = ECHO_COMMAND
CLIENTS = 4


def pooled_job(client: httpx.Client, *, runtime: str = "docker", pooled: bool | None = True, **fields: object) -> Job:
    """POST the job and wait; `pooled` (unless None) is whether a pool must have served it."""
    body = {"image": IMAGE, "command": COMMAND, "runtime": runtime, **fields}

    def run() -> None:
        answer = client.post("/jobs", params={"wait": "true"}, json=body)
        job = answer.json()
        if answer.status_code != 201 or job.get("state") != "succeeded" or job.get("stdout") != "hi\n":
            raise RuntimeError(f"hatchway job went wrong: {answer.status_code} {answer.text[:300]}")
        if pooled is not None and job["run"]["pooled"] != pooled:
            raise RuntimeError(f"expected pooled={pooled}: {job['run']}")

    return run


def measure_throughput(
    jobs: dict[str, tuple[Job, list[httpx.Client]]], total: int, rounds: int, everyone: list[httpx.Client]
) -> dict[str, float]:
    """Jobs/s per side at CLIENTS clients, in interleaved rounds. Each round starts on a quiet machine (every pool
    full), and a side's time runs until its own pools are full again: what its jobs caused in the background (a
    one-use pool's refill) is its cost, and no other side's."""
    names = list(jobs)
    seconds = dict.fromkeys(names, 0.0)
    per_round = max(total // rounds, CLIENTS)
    for round_ in range(rounds):
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            job, own = jobs[name]
            settle(everyone)
            start = time.perf_counter()
            with ThreadPoolExecutor(CLIENTS) as pool:
                list(pool.map(_run, [job] * per_round))
            settle(own)
            seconds[name] += time.perf_counter() - start
    return {name: per_round * rounds / spent for name, spent in seconds.items()}


def _run(job: Job) -> None:
    job()


def measure_settled(jobs: dict[str, Job], runs: int, clients: list[httpx.Client]) -> dict[str, float]:
    """Median seconds per job, sides interleaved (order rotated each run), every sample taken on settled pools."""
    names = list(jobs)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for run in range(runs):
        for name in names[run % len(names) :] + names[: run % len(names)]:
            settle(clients)
            start = time.perf_counter()
            jobs[name]()
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a fast smoke run")
    parser.add_argument("--runs", type=int, default=30, help="latency samples a side")
    parser.add_argument("--jobs", type=int, default=200, help="jobs a side for each throughput figure")
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds of the throughput jobs")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.jobs, args.rounds = 8, 40, 2
    leftovers: dict[str, int] = {}
    sdk = docker.from_env(max_pool_size=8)
    size = CLIENTS
    try:
        with ExitStack() as stack:
            one_use = stack.enter_context(pool_server(leftovers, "docker", 0, size))
            reuse = stack.enter_context(pool_server(leftovers, "docker", 1_000_000, size))
            gvisor = stack.enter_context(pool_server(leftovers, "gvisor", 1_000_000, 2))
            floor = floor_job(sdk.api, COMMAND, b"hi\n")
            floor_gvisor = floor_job(sdk.api, COMMAND, b"hi\n", runtime="runsc")
            sides = {
                "floor": floor,
                "one-use pool": pooled_job(one_use),
                "reuse pool": pooled_job(reuse),
                "miss (cold path)": pooled_job(one_use, pooled=False, workdir="/srv/job"),
                "gVisor floor": floor_gvisor,
                "gVisor reuse pool": pooled_job(gvisor, runtime="gvisor"),
            }
            for name, warm_up in sides.items():
                settle([one_use, reuse, gvisor])
                try:
                    warm_up()
                except RuntimeError as exc:
                    raise RuntimeError(f"{name}: {exc}") from exc
            print(f"latency: {args.runs} interleaved runs a side ...", flush=True)
            latency = measure_settled(sides, args.runs, [one_use, reuse, gvisor])
            print(f"throughput: {args.jobs} jobs a side at {CLIENTS} clients ...", flush=True)
            tput = measure_throughput(
                {
                    "floor": (floor, []),
                    "one-use pool": (pooled_job(one_use, pooled=None), [one_use]),
                    "reuse pool": (pooled_job(reuse), [reuse]),
                },
                args.jobs,
                args.rounds,
                [one_use, reuse, gvisor],
            )
    finally:
        sdk.close()
        report_leftovers(leftovers)

    print(f"\n{'trivial job: echo hi':<28}{'median latency':>16}")
    for name, seconds in latency.items():
        print(f"{name:<28}{seconds * 1000:>13.1f} ms")
    print(f"\n{'4 clients':<28}{'jobs/s':>16}")
    for name, per_s in tput.items():
        print(f"{name:<28}{per_s:>16.1f}")

    pooled_ms = latency["reuse pool"] * 1000
    one_use_ms = latency["one-use pool"] * 1000
    checks = [
        ("pooled latency (reuse), ms", pooled_ms, "<= 25"),
        ("pooled latency (one-use), ms", one_use_ms, "<= 25"),
        ("pooled / SDK floor latency", latency["reuse pool"] / latency["floor"], "<= 0.1"),
        ("one-use / SDK floor latency", latency["one-use pool"] / latency["floor"], "<= 0.1"),
        ("gVisor pooled / gVisor floor", latency["gVisor reuse pool"] / latency["gVisor floor"], "<= 0.1"),
        ("miss / SDK floor latency", latency["miss (cold path)"] / latency["floor"], "<= 1.2"),
        ("one-use tput / floor tput", tput["one-use pool"] / tput["floor"], ">= 1.0"),
        ("reuse tput, jobs/s", tput["reuse pool"], ">= 100"),
        ("reuse tput / floor tput", tput["reuse pool"] / tput["floor"], ">= 20"),
    ]
    print(f"\n{'target':<32}{'value':>9}  {'goal':<8}")
    for label, value, goal in checks:
        bound = float(goal.split()[1])
        ok = value <= bound if goal.startswith("<=") else value >= bound
        print(f"{label:<32}{value:>9.3g}  {goal:<8}{'PASS' if ok else 'MISS'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
