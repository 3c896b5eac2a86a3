"""A fleet of workers on one PostgreSQL store, measured on one machine and one database in one run.

Usage: .venv/bin/python bench/bench_fleet.py [--quick] [--jobs N] [--rounds N] [--claims N] [--claimers K,...]
       [--notifies N] [--database URL]

- fleet throughput: trivial pooled jobs (`echo hi`; each worker has 4 slots and a reuse pool of 4) through 1, 2
  and 3 real `hatchway serve` workers sharing one `store_url`, each configuration alone, one after the other;
- the store alone: N queued jobs claimed (`claim_next`) by K concurrent `PostgresStore`s, one process each, as K
  workers would claim them (K = 1, 3 and 6): claims/s, and each claim's latency under that contention;
- NOTIFY: from an enqueue to its notification on channel `hatchway_queue` reaching a `LISTEN` connection.
Each part runs in a fresh schema of the database, dropped afterwards. A measurement, not a test: it prints
figures, ratios and PASS/MISS, and always exits 0. See bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import httpx
import psutil
import psycopg
from _common import QUIET_BUSY, pool_server, post_raw, quiet, report_leftovers, settle
from _store_alone import (
    ClaimRun,
    NotifyRun,
    fresh_schema,
    measure_claims,
    measure_notify,
    percentile,
    server_settings,
)

from hatchway.store.pg_schema import QUEUE_CHANNEL

DEFAULT_DATABASE = os.environ.get("HATCHWAY_TEST_POSTGRES_URL", "postgresql://hatchway@127.0.0.1:5439/hatchway")
SLOTS = 4  # each worker's job slots, and the size of its reuse pool (as bench_pool.py's reuse pool)
FLEETS = (1, 2, 3)
FINAL = ("succeeded", "failed", "killed")
CLAIM_TARGET = 20  # the store must claim at least this many times faster than the fleet runs jobs


# Fleet throughput.


@dataclass
class FleetRun:
    workers: int
    jobs_per_s: float
    per_worker: list[int]  # jobs each worker ran, warm-up included, most first
    cold: int  # jobs no pool served (warm-up included)
    worker_cpu_s: float  # CPU the worker processes spent, per timed job
    database_cpu_s: float | None  # CPU the PostgreSQL server's processes spent, per timed job (None: not local)


def measure_fleet(database: str, workers: int, total: int, rounds: int, leftovers: dict[str, int]) -> FleetRun:
    """`workers` workers on one fresh schema, once each has its pool full: jobs/s over `total` jobs POSTed in
    `rounds` bursts, split evenly over the workers (as a load balancer would). A round's time runs from its first
    POST to the last of its jobs stored final, and every round starts with every pool full and nothing starting.

    `POST /jobs?wait=true` is not used: a worker hears of a job another worker ended only through NOTIFY, which
    is not wired in yet; the database is polled for the count of ended jobs instead."""
    with fresh_schema(database) as url, ExitStack() as stack, psycopg.connect(url, autocommit=True) as db:
        clients = [
            stack.enter_context(pool_server(leftovers, "docker", 1_000_000, SLOTS, slots=SLOTS, store_url=url))
            for _ in range(workers)
        ]
        _burst(db, clients, SLOTS * workers)  # warm-up: every worker's connections and pool containers in use
        per_round = max(total // rounds, SLOTS * workers)
        seconds = 0.0
        server = _server_processes(db)
        worker_cpu, database_cpu = CpuMeter(psutil.Process().children), CpuMeter(server)
        for _ in range(rounds):
            settle(clients)
            seconds += _burst(db, clients, per_round)
        settle(clients)
        jobs = per_round * rounds
        database_s = database_cpu.spent() / jobs if server() else None
        return FleetRun(workers, jobs / seconds, *_check_jobs(db), worker_cpu.spent() / jobs, database_s)


class CpuMeter:
    """CPU seconds (user + system) a changing set of processes spends from now on. A process that exits before
    `spent` is not counted: what it spent is lost with it."""

    def __init__(self, processes: Callable[[], list[psutil.Process]]) -> None:
        self._processes = processes
        self._start = self._now()

    def _now(self) -> dict[int, float]:
        times = {}
        for process in self._processes():
            with contextlib.suppress(psutil.Error):
                cpu = process.cpu_times()
                times[process.pid] = cpu.user + cpu.system
        return times

    def spent(self) -> float:
        return sum(cpu - self._start.get(pid, 0.0) for pid, cpu in self._now().items())


def _server_processes(db: psycopg.Connection[Any]) -> Callable[[], list[psutil.Process]]:
    """The PostgreSQL server's processes (every session's, not only ours), if it runs on this machine."""
    row = db.execute("SELECT pg_backend_pid(), inet_server_addr()").fetchone()
    try:
        backend = psutil.Process(int(row[0])) if row is not None and str(row[1]).startswith("127.") else None
        postmaster = None if backend is None else backend.parent()
    except psutil.Error:
        postmaster = None
    if postmaster is None:
        return list
    return lambda: [postmaster, *postmaster.children()]


def _burst(db: psycopg.Connection[Any], clients: list[httpx.Client], count: int) -> float:
    """Seconds from POSTing `count` jobs, split over `clients`, until all of them are stored final."""
    ended = _final_count(db)
    shares = [count // len(clients) + (index < count % len(clients)) for index in range(len(clients))]

    async def post_all() -> list[int]:
        return await asyncio.gather(
            *(post_raw(str(client.base_url), share, 2) for client, share in zip(clients, shares, strict=True))
        )

    start = time.perf_counter()
    accepted = sum(asyncio.run(post_all()))
    if accepted != count:
        raise RuntimeError(f"only {accepted} of {count} POSTs were answered 201")
    deadline = time.monotonic() + 120
    while _final_count(db) < ended + count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{ended + count - _final_count(db)} of {count} jobs did not end within 120 s")
        time.sleep(0.002)
    return time.perf_counter() - start


def _final_count(db: psycopg.Connection[Any]) -> int:
    row = db.execute("SELECT count(*) FROM jobs WHERE state = ANY(%s)", (list(FINAL),)).fetchone()
    return 0 if row is None else int(row[0])


def _check_jobs(db: psycopg.Connection[Any]) -> tuple[list[int], int]:
    """Every job of the schema succeeded and printed "hi"; how many each worker ran, and how many no pool served
    (counted, not refused: a job that finds its pool's one idle container out for its periodic ping goes cold)."""
    wrong = db.execute(
        "SELECT id, state, stdout FROM jobs WHERE state <> 'succeeded' OR stdout <> %s LIMIT 3", ("hi\n",)
    ).fetchall()
    if wrong:
        raise RuntimeError(f"fleet jobs went wrong, for example: {wrong}")
    rows = db.execute("SELECT count(*) FROM jobs GROUP BY worker_id ORDER BY count(*) DESC").fetchall()
    cold = db.execute("SELECT count(*) FROM jobs WHERE (run::jsonb ->> 'pooled')::boolean IS NOT TRUE").fetchone()
    return [int(row[0]) for row in rows], 0 if cold is None else int(cold[0])


# Report.


def report(fleet: list[FleetRun], claims: list[ClaimRun], notify: NotifyRun, args: argparse.Namespace) -> None:
    print(f"\nfleet: echo hi, a reuse pool of {SLOTS} and {SLOTS} slots a worker, {args.jobs} jobs a configuration")
    print(
        f"{'workers':<9}{'jobs/s':>8}{'vs 1 worker':>13}{'CPU ms/job: workers':>21}{'PostgreSQL':>12}"
        f"{'not pooled':>12}   jobs each worker ran"
    )
    for run in fleet:
        ratio, each = run.jobs_per_s / fleet[0].jobs_per_s, " / ".join(map(str, run.per_worker))
        database = "n/a" if run.database_cpu_s is None else f"{run.database_cpu_s * 1000:.2f}"
        print(
            f"{run.workers:<9}{run.jobs_per_s:>8.1f}{ratio:>13.2f}{run.worker_cpu_s * 1000:>21.2f}{database:>12}"
            f"{run.cold:>12}   {each}"
        )
    print(
        "(CPU: the hatchway serve processes', and the whole PostgreSQL server's, whoever else uses it; the engine's\n"
        " and the containers' are not counted. Not pooled, and jobs each worker ran: the warm-up burst included.)"
    )

    print(f"\nthe store alone: {args.claims} queued jobs claimed by K PostgresStores, one process each")
    print(f"{'K':<6}{'claims/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'claimer CPU ms/claim':>22}{'enqueues/s':>12}")
    for run in claims:
        p50, p99 = percentile(run.latencies, 50) * 1000, percentile(run.latencies, 99) * 1000
        print(
            f"{run.claimers:<6}{run.claims_per_s:>10.0f}{p50:>9.2f}{p99:>9.2f}{run.claimer_cpu_s * 1000:>22.3f}"
            f"{run.enqueues_per_s:>12.0f}"
        )
    print("(enqueues/s: the N jobs queued first, 8 at once through one PostgresStore)")

    print(f"\nNOTIFY on {QUEUE_CHANNEL}: {args.notifies} enqueues, one at a time, to a LISTENing connection")
    print(f"{'':<40}{'p50 ms':>10}{'p99 ms':>10}")
    for label, values in (
        ("enqueue sent -> notification", notify.after_send),
        ("enqueue answered -> notification", notify.after_answer),
        ("enqueue round trip (for reference)", notify.enqueue),
    ):
        print(f"{label:<40}{percentile(values, 50) * 1000:>10.2f}{percentile(values, 99) * 1000:>10.2f}")

    best = max(run.jobs_per_s for run in fleet)
    contended = next((run for run in claims if run.claimers == FLEETS[-1]), claims[-1])  # as the fleet claims
    ratio = contended.claims_per_s / best
    print(f"\n{'target':<44}{'value':>9}  {'goal':<8}")
    label = f"store claims/s (K={contended.claimers}) / best fleet jobs/s"
    print(f"{label:<44}{ratio:>9.3g}  {f'>= {CLAIM_TARGET}':<8}{'PASS' if ratio >= CLAIM_TARGET else 'MISS'}")
    for run in fleet[1:]:
        label = f"{run.workers} workers / 1 worker, jobs/s (no target)"
        print(f"{label:<44}{run.jobs_per_s / fleet[0].jobs_per_s:>9.3g}")


def _after_quiet() -> str:
    """Wait for the machine to be quiet before a measurement; a note if it never was."""
    busy = quiet()
    return "" if busy < QUIET_BUSY else f" (the machine stayed {busy:.0%} busy: this figure is noisy)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a fast smoke run")
    parser.add_argument("--jobs", type=int, default=400, help="jobs a fleet configuration runs, timed")
    parser.add_argument("--rounds", type=int, default=4, help="bursts the timed jobs are split into")
    parser.add_argument("--claims", type=int, default=3000, help="jobs queued, then claimed, per claim figure")
    parser.add_argument(
        "--claimers", default="1,3,6", help=f"claimers at once (K), comma-separated; the target uses K={FLEETS[-1]}"
    )
    parser.add_argument("--notifies", type=int, default=200, help="NOTIFY latency samples")
    parser.add_argument("--database", default=DEFAULT_DATABASE, help="a PostgreSQL URL (a schema is made in it)")
    args = parser.parse_args()
    if args.quick:
        args.jobs, args.rounds, args.claims, args.notifies = 60, 2, 400, 30

    leftovers: dict[str, int] = {}
    started, load_before = time.perf_counter(), os.getloadavg()[0]
    try:
        fleet = []
        for workers in FLEETS:
            print(f"fleet of {workers}: {args.jobs} jobs ...{_after_quiet()}", flush=True)
            fleet.append(measure_fleet(args.database, workers, args.jobs, args.rounds, leftovers))
        claims = []
        for claimers in sorted({int(k) for k in args.claimers.split(",")}):
            print(f"store: {args.claims} claims by {claimers} claimer(s) ...{_after_quiet()}", flush=True)
            claims.append(measure_claims(args.database, args.claims, claimers))
        print(f"NOTIFY: {args.notifies} samples ...{_after_quiet()}", flush=True)
        notify = measure_notify(args.database, args.notifies)
    finally:
        report_leftovers(leftovers)
    report(fleet, claims, notify, args)
    durability = server_settings(args.database, "fsync", "synchronous_commit")
    print(f"\nthe database: {', '.join(f'{name} = {value}' for name, value in durability.items())}", end="")
    print(" (a commit costs less than on a durable server)" if "off" in durability.values() else "")
    load = f"load average (1 min) {load_before:.2f} before, {os.getloadavg()[0]:.2f} after, on {os.cpu_count()} CPUs"
    print(f"{load}; total bench time {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
