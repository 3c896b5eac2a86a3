"""What execution environments cost: gVisor against runc, bundles with and without the cache, image builds.

Usage: .venv/bin/python bench/bench_env.py [--quick] [--runs N] [--bundle-mb MB]

A measurement, not a test: it prints tables with ratios and always exits 0. Every image it built is removed at
the end. See bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import io
import itertools
import os
import statistics
import sys
import tarfile
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import docker
import docker.errors
import httpx
from _common import IMAGE, MIB, Job, floor_job, hatchway_server, measure_latency, report_leftovers

from hatchway.engines.images import build_tag

COMMAND = ["true"]
DOCKERFILE = f"FROM {IMAGE}\nCOPY app.txt /app.txt\nRUN cat /app.txt\n"
BUILD_PREFIX = "hatchway-build:"
SMALL_FILES = 400

Body = Callable[[], dict[str, Any]]


class Jobs:
    """Runs jobs through POST /jobs?wait=true, keeping each side's `run` records and the images its builds made."""

    def __init__(self, client: httpx.Client) -> None:
        self.client = client
        self.runs: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.built: set[str] = set()
        self.unanswered: set[str] = set()  # tags of builds posted whose answer never came (an interrupted run)
        self.warming = False  # a warm-up job only has to succeed: it is what fills the caches

    def side(self, name: str, body: Body, **expect: Any) -> Job:
        """A job for `name`: `body()` is posted each time; the job must succeed with these `run` fields."""

        def run() -> None:
            request = {"command": COMMAND, **body()}
            pending = _tags(request)
            self.unanswered |= pending
            answer = self.client.post("/jobs", params={"wait": "true"}, json=request)
            self.unanswered -= pending
            job = answer.json() if answer.headers.get("content-type") == "application/json" else {}
            info = job.get("run") or {}
            image = info.get("image") or ""
            if image.startswith(BUILD_PREFIX) and info.get("image_cached") is False:
                self.built.add(image)  # ours to remove: this job built it
            checked = {} if self.warming else expect
            wrong = {key: info.get(key) for key, value in checked.items() if info.get(key) != value}
            if answer.status_code != 201 or job.get("state") != "succeeded" or wrong:
                raise RuntimeError(
                    f"{name} job went wrong (run {wrong or info}): {answer.status_code} {answer.text[:400]}"
                )
            self.runs[name].append(info)

        return run

    def measure(self, sides: dict[str, Job], runs: int) -> dict[str, float]:
        """Median seconds a side after one warm-up job each, interleaved; `self.runs` keeps only measured jobs."""
        self.warming = True
        for warm_up in sides.values():
            warm_up()
        self.warming = False
        self.runs.clear()
        return measure_latency(sides, runs)

    def prepare_s(self, name: str) -> float | None:
        values = [info["prepare_s"] for info in self.runs.get(name, []) if info.get("prepare_s") is not None]
        return statistics.median(values) if values else None


def _tags(request: dict[str, Any]) -> set[str]:
    """The tag of the image `request` builds (none without a build), as hatchway names it: a hash of its inputs."""
    build = request.get("build")
    if build is None:
        return set()
    return {build_tag(build["dockerfile"], {path: text.encode() for path, text in build["files"].items()})}


# Bundles and the server that hands them out.


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def file_server(directory: Path) -> Iterator[str]:
    """`directory` over HTTP on a free 127.0.0.1 port, from a thread; yields the base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(directory)))
    thread = threading.Thread(target=server.serve_forever, name="bundle-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def make_bundles(directory: Path, names: list[str], size_mb: float) -> dict[str, str]:
    """A .tar.gz of about `size_mb` per name: SMALL_FILES text files and one random file, all alike but one
    file holding the name, so each has content of its own. Returns name -> sha256."""
    small = {
        f"src/pkg{i // 40}/mod{i}.py": f"# module {i}\n" + f"VALUE = {i}  # padding\n" * 60 for i in range(SMALL_FILES)
    }
    big = os.urandom(max(int(size_mb * MIB) - 256 * 1024, MIB))
    members = [*((path, text.encode()) for path, text in small.items()), ("data/big.bin", big)]
    digests = {}
    for name in names:
        with tarfile.open(directory / name, "w:gz", compresslevel=6) as tar:
            for member, data in [*members, ("id", name.encode())]:
                info = tarfile.TarInfo(member)
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))
        digests[name] = hashlib.sha256((directory / name).read_bytes()).hexdigest()
    return digests


# The three comparisons.


def measure_runtimes(jobs: Jobs, sdk: docker.APIClient, runs: int) -> dict[str, float]:
    sides = {
        "floor runc": floor_job(sdk, COMMAND, b""),
        "floor gvisor": floor_job(sdk, COMMAND, b"", runtime="runsc"),
        "runc": jobs.side("runc", lambda: {"image": IMAGE, "runtime": "docker"}, engine="docker"),
        "gvisor": jobs.side("gvisor", lambda: {"image": IMAGE, "runtime": "gvisor"}, engine="gvisor"),
    }
    return jobs.measure(sides, runs)


def measure_bundles(jobs: Jobs, base_url: str, digests: dict[str, str], runs: int) -> dict[str, float]:
    fresh = iter(name for name in digests if name.startswith("fresh-"))  # one a run, and one to warm up

    def uncached() -> dict[str, Any]:
        name = next(fresh)
        return {"image": IMAGE, "bundle_url": f"{base_url}/{name}", "bundle_sha256": digests[name]}

    same = {"image": IMAGE, "bundle_url": f"{base_url}/same.tar.gz"}
    sides = {
        "none": jobs.side("none", lambda: {"image": IMAGE}),
        "uncached": jobs.side("uncached", uncached, bundle_cached=False),
        "cached": jobs.side("cached", lambda: {**same, "bundle_sha256": digests["same.tar.gz"]}, bundle_cached=True),
        "revalidated": jobs.side("revalidated", lambda: same, bundle_cached=True),
    }
    return jobs.measure(sides, runs)


def measure_builds(jobs: Jobs, runs: int) -> dict[str, float]:
    nonce, counter = uuid.uuid4().hex, itertools.count()

    def build(text: str) -> dict[str, Any]:
        return {"build": {"dockerfile": DOCKERFILE, "files": {"app.txt": text}}}

    sides = {
        "plain": jobs.side("plain", lambda: {"image": IMAGE}, image_cached=True),
        "cached": jobs.side("cached", lambda: build(f"bench {nonce}\n"), image_cached=True),
        "uncached": jobs.side("uncached", lambda: build(f"bench {nonce} {next(counter)}\n"), image_cached=False),
    }
    return jobs.measure(sides, runs)


def remove_images(tags: set[str]) -> int:
    """Remove the images this run built (by the tags its jobs reported); how many were there."""
    removed = 0
    with closing(docker.from_env()) as client:
        for tag in sorted(tags):
            try:
                client.images.remove(tag)
                removed += 1
            except docker.errors.ImageNotFound:
                pass
    return removed


# Report.


def table(title: str, rows: list[tuple[str, str]], latency: dict[str, float], jobs: Jobs) -> None:
    """One line per (label, side): median wall and prepare_s, and the wall time against the first row's."""
    base = latency[rows[0][1]]
    print(f"\n{title:<52}{'wall ms':>9}{'prepare ms':>12}{'+ms':>8}{'ratio':>7}")
    for label, name in rows:
        wall, prepare = latency[name], jobs.prepare_s(name)
        shown = "-" if prepare is None else f"{prepare * 1000:.0f}"
        print(f"{label:<52}{wall * 1000:>9.0f}{shown:>12}{(wall - base) * 1000:>+8.0f}{wall / base:>7.2f}")


def report(lat: dict[str, dict[str, float]], jobs: dict[str, Jobs], args: argparse.Namespace, mb: float) -> None:
    run = lat["runtimes"]
    print(f"\n1. start latency of `true` in {IMAGE}, network none, one job at a time")
    print(f"{'':<44}{'runc ms':>9}{'gVisor ms':>11}{'gVisor/runc':>13}")
    for label, runc, gvisor in (
        ("SDK floor: create+start+wait+logs+remove", run["floor runc"], run["floor gvisor"]),
        ("hatchway POST /jobs?wait=true", run["runc"], run["gvisor"]),
    ):
        print(f"{label:<44}{runc * 1000:>9.0f}{gvisor * 1000:>11.0f}{gvisor / runc:>13.2f}")
    prep = [jobs["runtimes"].prepare_s(name) or 0.0 for name in ("runc", "gvisor")]
    print(f"{'hatchway run.prepare_s':<44}{prep[0] * 1000:>9.0f}{prep[1] * 1000:>11.0f}")
    ratios = (run["runc"] / run["floor runc"], run["gvisor"] / run["floor gvisor"])
    print(f"{'hatchway / SDK floor':<44}{ratios[0]:>9.2f}{ratios[1]:>11.2f}")
    table(
        f"2. bundle: {mb:.1f} MB .tar.gz, {SMALL_FILES + 2} files",
        [
            ("no bundle", "none"),
            ("uncached: new URL and content each run, + sha256", "uncached"),
            ("cached: same URL + bundle_sha256", "cached"),
            ("cached: same URL, no sha256 (conditional GET)", "revalidated"),
        ],
        lat["bundles"],
        jobs["bundles"],
    )
    table(
        "3. build: FROM busybox, COPY app.txt, RUN cat",
        [
            ("plain image", "plain"),
            ("cached build (same inputs)", "cached"),
            ("uncached build (app.txt differs every run)", "uncached"),
        ],
        lat["builds"],
        jobs["builds"],
    )
    print(f"\n(medians of {args.runs} runs a side after one warm-up each, sides interleaved in rotating order;")
    print(" +ms and ratio are against the first row of each table)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a fast smoke run (2 runs a side)")
    parser.add_argument("--runs", type=int, default=15, help="latency samples a side")
    parser.add_argument("--bundle-mb", type=float, default=5.0, help="size of each bundle .tar.gz")
    args = parser.parse_args()
    if args.quick:
        args.runs = 2
    leftovers: dict[str, int] = {}
    built: set[str] = set()
    started = time.perf_counter()
    sdk = docker.from_env()
    try:
        with tempfile.TemporaryDirectory(prefix="hatchway-bench-bundles-") as tmp:
            names = ["same.tar.gz", *(f"fresh-{i}.tar.gz" for i in range(args.runs + 1))]
            print(f"making {len(names)} bundles of {args.bundle_mb:g} MB...", flush=True)
            digests = make_bundles(Path(tmp), names, args.bundle_mb)
            mb = (Path(tmp) / "same.tar.gz").stat().st_size / MIB
            with (
                file_server(Path(tmp)) as base_url,
                hatchway_server(
                    4, leftovers, bundle_allowed_urls="http://127.0.0.1:*", allowed_private_networks="127.0.0.0/8"
                ) as server,
                httpx.Client(base_url=server.url, timeout=600) as client,
            ):
                jobs = {name: Jobs(client) for name in ("runtimes", "bundles", "builds")}
                try:
                    lat: dict[str, dict[str, float]] = {}
                    print(f"1. runc vs gVisor: {args.runs} runs a side...", flush=True)
                    lat["runtimes"] = measure_runtimes(jobs["runtimes"], sdk.api, args.runs)
                    print(f"2. bundles: {args.runs} runs a side...", flush=True)
                    lat["bundles"] = measure_bundles(jobs["bundles"], base_url, digests, args.runs)
                    print(f"3. builds: {args.runs} runs a side...", flush=True)
                    lat["builds"] = measure_builds(jobs["builds"], args.runs)
                finally:
                    built = set().union(*(side.built | side.unanswered for side in jobs.values()))
        report(lat, jobs, args, mb)
    finally:
        sdk.close()
        report_leftovers(leftovers)
        removed = remove_images(built)  # after the server stopped, so no job of it still uses one
        elapsed = time.perf_counter() - started
        print(f"\nremoved {removed} of {len(built)} image(s) this run built; total bench time {elapsed:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
