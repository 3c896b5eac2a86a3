"""Artifacts: the files a job leaves under `out/` in its working directory, kept after it ends."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from hatchway.errors import ArtifactNotFound

OUT_DIR = "out"


@dataclass(frozen=True)
class Artifact:
    """One kept file: its path under out/ and its size."""

    path: str
    size: int


@dataclass(frozen=True)
class Collected:
    files: int
    bytes: int
    truncated: bool


class ArtifactStore:
    """Keeps each job's out/ files under `root/<job id>/`, up to `max_bytes` a job, for `retention_s`."""

    def __init__(self, root: Path, *, max_bytes: int, retention_s: float) -> None:
        self._root = root
        self._max_bytes = max_bytes
        self._retention_s = retention_s

    def collect(self, job_id: str, workspace: Path) -> Collected:
        """Copy regular files from workspace/out (links and special files are left out) until the cap."""
        source = workspace / OUT_DIR
        if not source.is_dir() or source.is_symlink():
            return Collected(files=0, bytes=0, truncated=False)
        target = self._root / job_id
        files = total = 0
        truncated = False
        for path in sorted(source.rglob("*")):
            if path.is_symlink() or not path.is_file() or _escapes(path, source):
                continue
            size = path.stat().st_size
            if total + size > self._max_bytes:
                truncated = True
                continue
            destination = target / path.relative_to(source)
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, destination, follow_symlinks=False)
            files += 1
            total += size
        return Collected(files=files, bytes=total, truncated=truncated)

    def listing(self, job_id: str) -> list[Artifact]:
        base = self._root / job_id
        if not base.is_dir():
            return []
        return [
            Artifact(path=path.relative_to(base).as_posix(), size=path.stat().st_size)
            for path in sorted(base.rglob("*"))
            if path.is_file()
        ]

    def path(self, job_id: str, relative: str) -> Path:
        """The kept file at `relative`; ArtifactNotFound for anything else, including paths that escape."""
        base = (self._root / job_id).resolve()
        candidate = (base / relative).resolve()
        if not candidate.is_relative_to(base) or not candidate.is_file():
            raise ArtifactNotFound(f"job {job_id!r} has no artifact {relative!r}")
        return candidate

    def expire(self, now: float | None = None) -> list[str]:
        """Delete the artifacts of jobs that ended longer ago than the retention; their ids."""
        if not self._root.is_dir():
            return []
        cutoff = (now if now is not None else time.time()) - self._retention_s
        expired = [entry for entry in self._root.iterdir() if entry.stat().st_mtime < cutoff]
        for entry in expired:
            shutil.rmtree(entry, ignore_errors=True)
        return [entry.name for entry in expired]


def _escapes(path: Path, base: Path) -> bool:
    return not path.resolve().is_relative_to(base.resolve())
