"""Host cgroups (v1) for supervised sandboxes on runc.

A supervised sandbox gets a cgroup of its own in each controller the supervisor uses, made by hatchway before
the container starts: `/sys/fs/cgroup/<controller>/hatchway/<worker>/<sandbox>`. Docker puts the container under
it (`cgroup_parent`), and the directory is bind-mounted into the container, so the supervisor can make a fresh
child cgroup per run with that run's limits, and read that run's own peak memory, OOM kills and CPU time. The
sandbox cgroup's own limits cap everything the supervisor could ever grant.

gVisor has no host cgroups inside its sandbox: there the supervisor measures from /proc and rusage instead.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path

CONTROLLERS = ("memory", "pids", "cpuacct")
ROOT = Path("/sys/fs/cgroup")
MIB = 1024 * 1024
_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


def available(root: Path = ROOT) -> bool:
    """Whether this host has the cgroup v1 controllers the supervisor uses, writable by us."""
    return all((root / name / "cgroup.procs").is_file() for name in CONTROLLERS) and os.access(root / "memory", os.W_OK)


@dataclass(frozen=True)
class SandboxCgroup:
    """One supervised sandbox's cgroup in every controller."""

    parent: str
    """The path below each controller's root, as Docker's `cgroup_parent` takes it."""
    root: Path = ROOT

    @classmethod
    def for_sandbox(cls, worker_id: str, name: str, root: Path = ROOT) -> SandboxCgroup:
        return cls(parent=f"{worker_parent(worker_id)}/{name}", root=root)

    @classmethod
    def of_worker(cls, worker_id: str, parent: str, root: Path = ROOT) -> SandboxCgroup | None:
        """The sandbox cgroup a container's `cgroup_parent` names, if it is one of this worker's."""
        return cls(parent=parent, root=root) if parent.startswith(worker_parent(worker_id) + "/") else None

    def path(self, controller: str) -> Path:
        return self.root / controller / self.parent.lstrip("/")

    def create(self, *, memory_mb: int, pids: int) -> None:
        """Make the directories, root's alone, and cap the whole sandbox: memory without swap, and processes.

        Mode 0700: these directories are mounted read-write into the container (for the supervisor, root there),
        and below them are control files of the host's cgroupfs, some writable by anyone on some kernels
        (`cgroup.event_control`). A run's user may not even look inside, whatever their modes."""
        for controller in CONTROLLERS:
            self.path(controller).mkdir(parents=True, exist_ok=True)
            self.path(controller).chmod(0o700)
        memory = self.path("memory")
        limit = str(memory_mb * MIB)
        (memory / "memory.limit_in_bytes").write_text(limit)
        memsw = memory / "memory.memsw.limit_in_bytes"
        if memsw.exists():
            memsw.write_text(limit)
        (self.path("pids") / "pids.max").write_text(str(pids))

    def remove(self) -> None:
        """Remove the directories, children first, in every hierarchy: the container runtime makes the sandbox's
        path in the hierarchies hatchway does not use too, and leaves it there. Cgroups still holding processes
        are left (and removed by the next sweep)."""
        for hierarchy in hierarchies(self.root):
            _remove_cgroup_tree(hierarchy / self.parent.lstrip("/"))


def worker_parent(worker_id: str) -> str:
    """Where a worker's sandbox cgroups live, below each controller's root."""
    return f"/hatchway/{_SAFE.sub('_', worker_id)}"


def hierarchies(root: Path = ROOT) -> list[Path]:
    """Every cgroup hierarchy mounted under `root` (v1 has one per controller or group of them)."""
    return list(_hierarchies(root))


@functools.cache
def _hierarchies(root: Path) -> tuple[Path, ...]:
    # Read once: hierarchies are mounted at boot, and this is asked for every sandbox removed.
    try:
        return tuple(sorted(path for path in root.iterdir() if (path / "cgroup.procs").is_file()))
    except OSError:
        return ()


def sweep(worker_id: str, root: Path = ROOT) -> None:
    """Remove this worker's sandbox cgroups that hold no process (left by a crash or a restart), in every
    hierarchy."""
    for hierarchy in hierarchies(root):
        base = hierarchy / worker_parent(worker_id).lstrip("/")
        if not base.is_dir():
            continue
        for child in base.iterdir():
            if child.is_dir():
                _remove_cgroup_tree(child)


def _remove_cgroup_tree(path: Path) -> None:
    """Remove a cgroup and its sub-cgroups (a cgroup directory holds only control files, which rmdir takes with
    it). Usually it has none left, and the first rmdir does it; a cgroup holding processes stays."""
    try:
        path.rmdir()
        return
    except FileNotFoundError:
        return
    except OSError:
        pass
    try:
        children = [entry.path for entry in os.scandir(path) if entry.is_dir(follow_symlinks=False)]
    except OSError:
        return
    for child in children:
        _remove_cgroup_tree(Path(child))
    with contextlib.suppress(OSError):
        path.rmdir()


def release(worker_id: str, root: Path = ROOT) -> None:
    """Remove the worker's own cgroup directory once it holds no sandbox (the worker is closing)."""
    for hierarchy in hierarchies(root):
        with contextlib.suppress(OSError):
            (hierarchy / worker_parent(worker_id).lstrip("/")).rmdir()
