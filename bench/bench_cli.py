"""`hatchway run` against `docker run`, measured side by side in one run.

Usage: .venv/bin/python bench/bench_cli.py [--quick] [--runs N]

Sides, each a fresh process running `echo hi` on the busybox test image, interleaved run by run (their order
rotated) so that machine noise hits all alike:
- hatchway run: `python -m hatchway.cli.main run IMAGE -- echo hi` with a worker running (`hatchway serve`, its
  defaults: a warm pool for an image that ran recently), which the job goes to, as `docker run` goes to dockerd;
- hatchway run --local: the same with no worker (an in-process worker runs the job);
- docker run: `docker run --rm IMAGE echo hi`, the target's reference;
- docker run, network none: `docker run --rm --network none IMAGE echo hi`, the same isolation as a hatchway job
  (on a daemon without a bridge the plain one gets a private loopback too, but is set up more cheaply);
- python start-up: `python -c pass`, and the import of what `hatchway run` imports, so the figures show where
  the time goes.
A measurement, not a test: it prints medians, ratios and PASS/MISS against the target of issue 9 (hatchway run
<= docker run + 10 %), and always exits 0.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from _common import IMAGE, hatchway_server, measure_latency, report_leftovers

TARGET_RATIO = 1.1


def process(argv: list[str], output: bytes, env: dict[str, str] | None = None) -> Callable[[], None]:
    """Run `argv` to its end; it must exit 0 and print `output`."""

    def run() -> None:
        done = subprocess.run(argv, capture_output=True, env=env)
        if done.returncode != 0 or done.stdout != output:
            raise RuntimeError(f"{argv[:4]} exited {done.returncode}: {done.stdout!r} {done.stderr[-500:]!r}")

    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="samples a side (default 15)")
    parser.add_argument("--quick", action="store_true", help="3 samples a side")
    args = parser.parse_args()
    runs = 3 if args.quick else args.runs

    source = Path(__file__).resolve().parent.parent / "src"
    leftovers: dict[str, int] = {}
    with (
        tempfile.TemporaryDirectory(prefix="hatchway-bench-cli-") as data_dir,
        hatchway_server(1, leftovers, log_level="WARNING") as server,
    ):
        env = {key: value for key, value in os.environ.items() if not key.startswith("HATCHWAY_")}
        env.update(HATCHWAY_DATA_DIR=data_dir, PYTHONPATH=str(source), HATCHWAY_URL=server.url)
        python = [sys.executable]
        hatchway_run = [*python, "-m", "hatchway.cli.main", "run", IMAGE, "--", "echo", "hi"]
        local_run = [*python, "-m", "hatchway.cli.main", "run", "--local", IMAGE, "--", "echo", "hi"]
        sides = {
            "hatchway run": process(hatchway_run, b"hi\n", env),
            "hatchway run --local": process(local_run, b"hi\n", env),
            "docker run": process(["docker", "run", "--rm", IMAGE, "echo", "hi"], b"hi\n"),
            "docker run --network none": process(
                ["docker", "run", "--rm", "--network", "none", IMAGE, "echo", "hi"], b"hi\n"
            ),
            "python -c pass": process([*python, "-c", "pass"], b""),
            "python: hatchway run's imports": process(
                [*python, "-c", "import hatchway.cli.main, hatchway.worker.bootstrap, hatchway.jobs.logs"], b"", env
            ),
        }
        for side in sides.values():  # warm-up: page cache, bytecode, the image's layers
            side()
        medians = measure_latency(sides, runs)

    print(f"\n{'side (echo hi, busybox)':<36}{'median ms':>10}{'ratio':>8}")
    reference = medians["docker run"]
    for name, seconds in medians.items():
        print(f"{name:<36}{seconds * 1000:>10.0f}{seconds / reference:>8.2f}")
    print(f"({runs} runs a side, interleaved; ratio: to docker run)")

    ratio = medians["hatchway run"] / reference
    like_for_like = medians["hatchway run"] / medians["docker run --network none"]
    print(f"\n{'target':<44}{'value':>7}  {'goal':<8}")
    print(f"{'hatchway run / docker run':<44}{ratio:>7.2f}  {'<= 1.1':<8}{'PASS' if ratio <= TARGET_RATIO else 'MISS'}")
    print(f"{'(hatchway run / docker run --network none)':<44}{like_for_like:>7.2f}")
    local = medians["hatchway run --local"] / reference
    print(f"{'(hatchway run --local / docker run)':<44}{local:>7.2f}")
    report_leftovers(leftovers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
