"""Grading speed: what a test costs in hatchway's prepared sandbox, against the program run on the host and against
one hatchway job per test, in a fresh container (the cold path) and in a container a pool started ahead. Prints
figures and ratios measured side by side in one run; exits 0.

Per-test overhead = (grade wall time - compile wall time) / tests - the program's own run time, where the own run
time is the median of the same program run directly on the host (a subprocess fed the same input), so what is
left is what hatchway adds per test: the supervisor's fork, limits and clean-up, the round trip over the attached
channel, reading and checking the output.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import hatchway_server, report_leftovers

C_SOURCE = r"""#include <stdio.h>
int main(void) { long a, b; if (scanf("%ld %ld", &a, &b) != 2) return 1; printf("%ld\n", a + b); return 0; }
"""
PY_SOURCE = "a, b = map(int, input().split())\nprint(a + b)\n"
TARGET_OVERHEAD_MS = 5.0
TARGET_SPEEDUP = 50.0
"""Against a container per test (issue 6: "a container per test costs ~300 ms here"); a pooled job is shown too."""
PROFILE_IMAGE = "hatchway-profile/python:latest"


def tests(count: int) -> list[dict[str, str]]:
    return [{"input": f"{i} {i * 7}\n", "expected_output": f"{i + i * 7}\n"} for i in range(count)]


def host_run_s(argv: list[str], runs: int) -> float:
    """Median seconds of the program run directly on the host with a test's input, as a subprocess."""
    samples = []
    for i in range(runs):
        start = time.perf_counter()
        done = subprocess.run(argv, input=f"{i} {i * 7}\n".encode(), capture_output=True, check=True)
        samples.append(time.perf_counter() - start)
        assert done.stdout == f"{i + i * 7}\n".encode()
    return statistics.median(samples)


def _host_python() -> str:
    return "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable


def grade(client: httpx.Client, language: str, code: str, count: int, runtime: str) -> tuple[float, float]:
    """Wall seconds of one grading seen by the client, and its compile's wall seconds."""
    body = {"language": language, "code": code, "tests": tests(count), "runtime": runtime}
    start = time.perf_counter()
    response = client.post("/grade", params={"wait": "true"}, json=body)
    wall = time.perf_counter() - start
    response.raise_for_status()
    result = response.json()
    if result["verdict"] != "AC" or result["passed"] != count:
        raise RuntimeError(f"{language} on {runtime} was not AC: {result['verdict']} {result.get('message')}")
    compiled = result.get("compile")
    return wall, (compiled or {}).get("wall_s") or 0.0


def job_per_test(client: httpx.Client, runtime: str, *, pooled: bool) -> float:
    """Wall seconds of one a+b test run as a plain hatchway job: in a container created for it (`pooled` False:
    its working directory is one no pool serves) or in one a pool started ahead."""
    body = {
        "image": PROFILE_IMAGE,
        "command": ["python3", "-c", PY_SOURCE],
        "stdin": "3 21\n",
        "runtime": runtime,
        **({} if pooled else {"workdir": "/srv/job"}),
    }
    if pooled:
        _pool_ready(client)
    start = time.perf_counter()
    response = client.post("/jobs", params={"wait": "true"}, json=body)
    wall = time.perf_counter() - start
    response.raise_for_status()
    job = response.json()
    if job["stdout"] != "24\n" or job["run"]["pooled"] != pooled:
        raise RuntimeError(f"the plain job failed or was not {'pooled' if pooled else 'cold'}: {job}")
    return wall


def _pool_ready(client: httpx.Client) -> None:
    deadline = time.monotonic() + 120
    while not all(pool["idle"] >= pool["size"] and pool["starting"] == 0 for pool in client.get("/pools").json()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the pools did not fill: {client.get('/pools').json()}")
        time.sleep(0.05)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tests", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5, help="gradings per language and runtime, interleaved")
    parser.add_argument("--jobs", type=int, default=5, help="plain jobs per runtime for the one-job-per-test side")
    parser.add_argument("--runtimes", default="docker,gvisor")
    parser.add_argument("--quick", action="store_true", help="2 rounds, 2 jobs")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.jobs = 2, 2
    runtimes = args.runtimes.split(",")

    scratch = Path(tempfile.mkdtemp(prefix="hatchway-bench-grade-"))
    try:
        (scratch / "main.c").write_text(C_SOURCE)
        subprocess.run(["gcc", "-O2", "-static", "-o", str(scratch / "main"), str(scratch / "main.c")], check=True)
        (scratch / "main.py").write_text(PY_SOURCE)
        own = {
            "c": host_run_s([str(scratch / "main")], args.tests),
            # Debian's python3 is the interpreter the python profile's image holds; the virtualenv's may differ.
            "python": host_run_s([_host_python(), str(scratch / "main.py")], args.tests),
        }
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"program run directly on the host (median of {args.tests}): C {own['c'] * 1e3:.2f} ms, "
          f"Python {own['python'] * 1e3:.2f} ms")  # fmt: skip

    leftovers: dict[str, int] = {}
    pools = json.dumps([{"image": PROFILE_IMAGE, "runtime": runtime, "size": 1} for runtime in runtimes])
    with (
        hatchway_server(1, leftovers, pools=pools, pool_warm_total="0") as server,
        httpx.Client(base_url=server.url, timeout=600) as client,
    ):
        for runtime in runtimes:
            walls: dict[str, list[float]] = {"c": [], "python": []}
            compiles: dict[str, list[float]] = {"c": [], "python": []}
            jobs: dict[str, list[float]] = {"cold": [], "pooled": []}
            grade(client, "c", C_SOURCE, 2, runtime)  # warm the images' page cache before measuring
            for round_ in range(args.rounds):
                order = [("c", C_SOURCE), ("python", PY_SOURCE)]
                for language, code in order[round_ % 2 :] + order[: round_ % 2]:
                    wall, compiled = grade(client, language, code, args.tests, runtime)
                    walls[language].append(wall)
                    compiles[language].append(compiled)
                if round_ < args.jobs:
                    jobs["cold"].append(job_per_test(client, runtime, pooled=False))
                    jobs["pooled"].append(job_per_test(client, runtime, pooled=True))
            report(runtime, args.tests, walls=walls, compiles=compiles, jobs=jobs, own=own)
    report_leftovers(leftovers)
    return 0


def report(
    runtime: str,
    count: int,
    *,
    walls: dict[str, list[float]],
    compiles: dict[str, list[float]],
    jobs: dict[str, list[float]],
    own: dict[str, float],
) -> None:
    print(f"\n== {runtime}: {count} tests of a+b, {len(walls['c'])} gradings per language")
    per_test: dict[str, float] = {}
    for language in ("c", "python"):
        tests_s = [wall - compiled for wall, compiled in zip(walls[language], compiles[language], strict=True)]
        overheads = [(seconds / count - own[language]) * 1e3 for seconds in tests_s]
        per_test[language] = statistics.median(tests_s) / count
        median_overhead = statistics.median(overheads)
        verdict = _verdict(median_overhead <= TARGET_OVERHEAD_MS) if runtime == "docker" else "(no target)"
        print(
            f"{language:>6}: grading total {statistics.median(walls[language]):.2f} s "
            f"(compile {statistics.median(compiles[language]):.2f} s), tests {per_test[language] * 1e3:.2f} ms each; "
            f"per-test overhead {median_overhead:.2f} ms median (min {min(overheads):.2f}, max {max(overheads):.2f})"
            f"  target <= {TARGET_OVERHEAD_MS:g} ms: {verdict}"
        )
    cold, pooled = statistics.median(jobs["cold"]), statistics.median(jobs["pooled"])
    for language in ("c", "python"):
        speedup = cold / per_test[language]
        verdict = _verdict(speedup >= TARGET_SPEEDUP) if runtime == "docker" else "(no target)"
        print(
            f"a job per test, fresh container: {cold * 1e3:.0f} ms; {language} graded test "
            f"{per_test[language] * 1e3:.2f} ms -> {speedup:.0f}x faster  target >= {TARGET_SPEEDUP:g}x: {verdict}"
        )
    for language in ("c", "python"):
        print(
            f"a job per test, pooled container: {pooled * 1e3:.0f} ms; {language} graded test "
            f"{per_test[language] * 1e3:.2f} ms -> {pooled / per_test[language]:.0f}x faster  (no target)"
        )


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


if __name__ == "__main__":
    sys.exit(main())
