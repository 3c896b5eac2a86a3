"""A supervised sandbox's host cgroups as hatchway makes them (on a plain directory standing in for /sys/fs/cgroup)."""

from __future__ import annotations

from pathlib import Path

from hatchway.engines.cgroups import CONTROLLERS, MIB, SandboxCgroup


def test_a_sandbox_s_cgroups_are_root_s_alone_and_capped(tmp_path: Path) -> None:
    """They are mounted read-write into the container; a run's user must not even look inside (docs/grading.md,
    "The sandbox")."""
    cgroup = SandboxCgroup.for_sandbox("worker-1", "sandbox-1", root=tmp_path)
    cgroup.create(memory_mb=64, pids=32)
    for controller in CONTROLLERS:
        assert cgroup.path(controller).stat().st_mode & 0o7777 == 0o700, controller
    assert (cgroup.path("memory") / "memory.limit_in_bytes").read_text() == str(64 * MIB)
    assert (cgroup.path("pids") / "pids.max").read_text() == "32"
