"""What the sandbox supervisor costs per run, against starting the process directly, measured side by side.

Usage: sudo .venv/bin/python bench/bench_supervisor.py [--quick] [--runs N]

Sides, each running `/bin/true` to its end, interleaved run by run (their order rotated) so that machine noise
hits all alike:
- supervisor, cgroup mode: one request to a supervisor started with `--cgroup` (fresh cgroup v1 memory, pids and
  cpuacct cgroups made for this run), the program as nobody; what a graded test pays on runc;
- supervisor, proc mode: the same without cgroups (limits from rlimits and /proc), as on gVisor;
- Python posix_spawn: `os.posix_spawn` and `waitpid`, the least a parent can do: the reference;
- Python subprocess.run: what a Python program usually does.
The supervisors run directly on this host, not in a container, so it needs root and cgroup v1 (as the host-tier
tests do). A measurement, not a test: it prints medians and ratios and exits 0.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from _common import measure_latency

from hatchway.errors import SandboxUnavailable
from hatchway.sandbox.binary import build_supervisor, supervisor_path
from hatchway.sandbox.protocol import RunRequest, parse_ready, parse_result

NOBODY = 65534
CGROUP_ROOT = Path("/sys/fs/cgroup")
CONTROLLERS = ("memory", "pids", "cpuacct")


class Supervisor:
    """A supervisor process; `run()` sends one `/bin/true` request and checks its answer."""

    def __init__(self, binary: Path, *args: str) -> None:
        self.proc = subprocess.Popen([str(binary), *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.stdin, self.stdout = self.proc.stdin, self.proc.stdout
        parse_ready(self.stdout.readline())
        self.request = RunRequest(argv=("/bin/true",), uid=NOBODY, gid=NOBODY).encode()

    def run(self) -> None:
        self.stdin.write(self.request)
        self.stdin.flush()
        result = parse_result(self.stdout.readline())
        if result.exit_code != 0:
            raise RuntimeError(f"/bin/true under the supervisor: {result}")

    def close(self) -> None:
        self.stdin.close()
        if self.proc.wait(timeout=10) != 0:
            raise RuntimeError(f"the supervisor exited {self.proc.returncode}")
        self.stdout.close()


@contextlib.contextmanager
def cgroup_dir(parent: Path) -> Iterator[Path]:
    """A --cgroup DIR under `parent`: symlinks to fresh cgroups in each controller, removed after."""
    name = f"hatchway-bench-{uuid.uuid4().hex[:12]}"
    links = parent / "cgroup"
    links.mkdir()
    made: list[Path] = []
    try:
        for controller in CONTROLLERS:
            real = CGROUP_ROOT / controller / name
            real.mkdir()
            made.append(real)
            (links / controller).symlink_to(real)
        yield links
    finally:
        for real in made:
            for child in [p for p in real.iterdir() if p.is_dir()]:
                remove_cgroup(child)
            remove_cgroup(real)


def remove_cgroup(path: Path) -> None:
    """Kill what is left in it, then remove it (the kernel may take a moment to release it)."""
    deadline = time.monotonic() + 30
    while True:
        with contextlib.suppress(FileNotFoundError):
            for pid in (path / "cgroup.procs").read_text().split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                raise
        time.sleep(0.01)


def spawn() -> None:
    pid = os.posix_spawn("/bin/true", ["/bin/true"], {})
    _, status = os.waitpid(pid, 0)
    if status != 0:
        raise RuntimeError(f"/bin/true: wait status {status}")


def binary(work: Path) -> Path:
    """The supervisor scripts/setup.sh built, or one built here."""
    try:
        return supervisor_path()
    except SandboxUnavailable:
        return build_supervisor(work / "hatchway-supervisor")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200, help="samples a side (default 200)")
    parser.add_argument("--quick", action="store_true", help="20 samples a side")
    args = parser.parse_args()
    runs = 20 if args.quick else args.runs
    missing = [c for c in CONTROLLERS if not (CGROUP_ROOT / c / "cgroup.procs").exists()]
    if os.geteuid() != 0 or missing:
        print(f"needs root and the cgroup v1 hierarchies {', '.join(CONTROLLERS)} (missing: {missing or 'root'})")
        return 2

    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="hatchway-bench-sv-")))
        cgroups = stack.enter_context(cgroup_dir(work))  # removed after the supervisors have ended
        built = binary(work)
        in_cgroups = Supervisor(built, "--cgroup", str(cgroups))
        stack.callback(in_cgroups.close)
        in_proc = Supervisor(built)
        stack.callback(in_proc.close)
        sides: dict[str, Callable[[], None]] = {
            "supervisor, cgroup mode": in_cgroups.run,
            "supervisor, proc mode": in_proc.run,
            "Python posix_spawn": spawn,
            "Python subprocess.run": lambda: subprocess.run(["/bin/true"], check=True),
        }
        for side in sides.values():  # warm-up: page cache, the first zygote
            side()
        medians = measure_latency(sides, runs)

    reference = medians["Python posix_spawn"]
    print(f"\n{'side (/bin/true)':<28}{'median ms':>10}{'+ms':>8}{'ratio':>8}")
    for name, seconds in medians.items():
        extra = (seconds - reference) * 1000
        print(f"{name:<28}{seconds * 1000:>10.2f}{extra:>+8.2f}{seconds / reference:>8.2f}")
    print(f"({runs} runs a side, interleaved; +ms and ratio: to posix_spawn)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
