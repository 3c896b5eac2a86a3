"""The host tier: hatchway's most security-critical parts run directly on this machine, not in a container.

The sandbox supervisor is started here as root: it changes uid, makes cgroup v1 cgroups and mounts; a job's disk
is a loop-mounted ext4 file. So these tests need root, the cgroup v1 memory, pids and cpuacct hierarchies, loop
devices, a C compiler with a static libc, and mkfs.ext4, mount and fstrim. CI's machine has all of them.

Where something is missing, each test that needs it fails and names what is missing. None is ever skipped: a
skipped isolation test reads like a passing one, and the code it guards would then run untested.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

CGROUP_ROOT = Path("/sys/fs/cgroup")
CGROUP_CONTROLLERS = ("memory", "pids", "cpuacct")


def _root() -> str | None:
    if os.geteuid() == 0:
        return None
    return f"root (running as uid {os.geteuid()}): the supervisor changes uid and makes cgroups, volumes mount"


def _cgroup_v1() -> str | None:
    absent = [c for c in CGROUP_CONTROLLERS if not (CGROUP_ROOT / c / "cgroup.procs").exists()]
    if not absent:
        return None
    return f"cgroup v1 hierarchies {', '.join(absent)} (no {CGROUP_ROOT}/<controller>/cgroup.procs: cgroup v2 host?)"


def _loop_devices() -> str | None:
    return None if Path("/dev/loop-control").exists() else "loop devices (no /dev/loop-control: modprobe loop)"


def _programs(*names: str) -> Callable[[], str | None]:
    def check() -> str | None:
        absent = [name for name in names if shutil.which(name) is None]
        return f"{', '.join(absent)} on PATH" if absent else None

    return check


NEEDS: dict[str, Callable[[], str | None]] = {
    "root": _root,
    "cgroup v1": _cgroup_v1,
    "loop devices": _loop_devices,
    "cc": _programs("cc"),
    "disk tools": _programs("mkfs.ext4", "mount", "umount", "fstrim"),
    "system python": lambda: None if os.access("/usr/bin/python3", os.X_OK) else "/usr/bin/python3",
}


def require(*needs: str) -> None:
    """Fail the running test, naming every one of `needs` (keys of NEEDS) this host lacks."""
    missing = [what for what in (NEEDS[need]() for need in needs) if what is not None]
    if missing:
        pytest.fail(f"this host cannot run this host-tier test; missing: {'; '.join(missing)}", pytrace=False)


@pytest.fixture(autouse=True)
def _host_has_root() -> None:
    require("root")


def pytest_report_header() -> str:
    missing = [what for what in (check() for check in NEEDS.values()) if what is not None]
    if not missing:
        return "host tier: this host has everything it needs"
    return f"host tier: its tests that need them will FAIL, this host lacks: {'; '.join(missing)}"
