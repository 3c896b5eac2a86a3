"""A supervised sandbox on runc has the host's cgroup v1 directories of its sandbox mounted read-write (for the
supervisor, which makes a cgroup per run in them), and every container sees the kernel's /proc and /sys. A test
program (or a pooled job) that could open any file there for writing could act on the host: its cgroups, the
kernel's settings, the whole machine's pressure triggers. It runs as an unprivileged uid with no capabilities and
`no_new_privs`, so all of that must be closed to it by owner and mode, or by a read-only mount; the sandbox's cgroup
directories are root's alone (0700), so that no kernel's file modes below them matter (`cgroup.event_control` is
world-writable on some). docs/security.md ("Isolation") says why this holds and what would break it.

The program walks every file it can see and tries each for writing, within a grading on runc and on gVisor and as a
pooled job on runc."""

from __future__ import annotations

import errno
import json
from typing import Any

import pytest

from tests.acceptance.conftest import ServerFactory
from tests.hostile.sandboxes import WALK, job, pool_server, printed

pytestmark = [pytest.mark.docker, pytest.mark.timeout(300)]

HARMLESS_DEVICES = {
    (1, 3): "null",
    (1, 5): "zero",
    (1, 7): "full",
    (1, 8): "random",
    (1, 9): "urandom",
    (5, 2): "ptmx",
    (10, 200): "tun (gVisor's own, no network)",
    (10, 229): "fuse (gVisor's own)",
}
"""Devices anyone may write to. Docker masks /proc files such as /proc/keys with /dev/null."""


def walked_in_a_grading(start_server: ServerFactory, runtime: str) -> dict[str, Any]:
    server = start_server(allowed_images="hatchway-test/*,hatchway-profile/*", allowed_runtimes="docker,gvisor")
    grading = {
        "language": "python",
        "code": WALK,
        "runtime": runtime,
        "tests": [{"input": "", "expected_output": ""}],
        "limits": {"time_limit_s": 30, "wall_limit_s": 120, "output_bytes": 1 << 20},
    }
    answer = server.client.post("/grade", params={"wait": "true"}, json=grading)
    assert answer.status_code == 201, answer.text
    [test] = answer.json()["tests"]
    assert test["exit_code"] == 0, test
    walked: dict[str, Any] = json.loads(test["output"])
    return walked


def walked_in_a_pool(start_server: ServerFactory, runtime: str) -> dict[str, Any]:
    server = pool_server(start_server, runtime)
    return printed(job(server, runtime, "python3 walk.py", files={"walk.py": WALK}, limits={"timeout_s": 120}))


@pytest.mark.parametrize(("where", "runtime"), [("grading", "docker"), ("grading", "gvisor"), ("pool", "docker")])
def test_nothing_under_cgroupfs_proc_or_sys_opens_for_writing(
    start_server: ServerFactory, where: str, runtime: str
) -> None:
    walk = walked_in_a_grading if where == "grading" else walked_in_a_pool
    walked = walk(start_server, runtime)
    assert walked["seen"]["/sys"] > 0 and walked["seen"]["/proc"] > 0, walked["seen"]
    dangerous = [
        [path, device, wrote]
        for path, device, wrote in walked["writable"]
        if not (device is not None and tuple(device) in HARMLESS_DEVICES)
        and not (path.startswith("/proc/") and wrote is False)  # another process's: the kernel refused the write
    ]
    assert dangerous == [], f"opened for writing: {dangerous}"
    if runtime == "docker":
        # The supervisor's cgroups are there, and a test may not even list them.
        mounted = {f"/.hatchway/cgroup/{name}" for name in ("memory", "pids", "cpuacct")}
        assert {path for path, code in walked["unlistable"] if code == errno.EACCES} >= mounted, walked["unlistable"]
