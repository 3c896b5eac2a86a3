"""Artifacts: the files a job leaves under `out/` in its working directory, kept after it ends."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
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
    """What `collect` kept, and what it left out over a limit (`over_bytes`: files that did not fit in the bytes
    left; `over_files`: everything from the first file that would have passed the count on)."""

    files: int
    bytes: int
    over_bytes: bool = False
    over_files: bool = False

    @property
    def truncated(self) -> bool:
        return self.over_bytes or self.over_files


class ArtifactStore:
    """Keeps each job's out/ files under `root/<job id>/`, up to `max_bytes` and `max_files` a job, for
    `retention_s`. Both bound what one job can take of the host: its disk, and its inodes (empty files cost no
    bytes, but each is an inode kept for days)."""

    def __init__(self, root: Path, *, max_bytes: int, max_files: int, retention_s: float) -> None:
        self._root = root
        self._max_bytes = max_bytes
        self._max_files = max_files
        self._retention_s = retention_s

    def left_out(self, collected: Collected) -> str:
        """What a job's result says when `collect` left files out."""
        over = [
            f"{name} = {limit}"
            for name, limit, hit in (
                ("artifacts_max_files", self._max_files, collected.over_files),
                ("artifacts_max_bytes", self._max_bytes, collected.over_bytes),
            )
            if hit
        ]
        return (
            f"some files under out/ were not kept, over the artifact limits ({', '.join(over)}); "
            f"{collected.files} files ({collected.bytes} bytes) were kept"
        )

    def collect(self, job_id: str, workspace: Path) -> Collected:
        """Copy regular files from workspace/out (links and special files are left out), in name order, until a
        cap: the files and directories made count against `max_files`, the files' sizes against `max_bytes`.
        Once the count is reached the rest is not even looked at."""
        source = workspace / OUT_DIR
        if not source.is_dir() or source.is_symlink():
            return Collected(files=0, bytes=0)
        target = self._root / job_id
        files = total = entries = 0
        made: set[Path] = set()
        over_bytes = False
        for path in _regular_files(source):
            size = path.stat().st_size
            relative = path.relative_to(source)
            parents = [parent for parent in reversed(relative.parents) if parent != Path(".") and parent not in made]
            if entries + len(parents) + 1 > self._max_files:
                return Collected(files=files, bytes=total, over_bytes=over_bytes, over_files=True)
            if total + size > self._max_bytes:
                over_bytes = True
                continue
            destination = target / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, destination, follow_symlinks=False)
            made.update(parents)
            entries += len(parents) + 1
            files += 1
            total += size
        return Collected(files=files, bytes=total, over_bytes=over_bytes)

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


def _regular_files(source: Path) -> Iterator[Path]:
    """The regular files under `source` in name order, read lazily (no link followed, nothing outside it)."""
    for directory, subdirectories, names in os.walk(source):
        subdirectories.sort()  # os.walk descends in this order; links to directories are listed, not entered
        base = Path(directory)
        for name in sorted(names):
            path = base / name
            if not path.is_symlink() and path.is_file() and not _escapes(path, source):
                yield path


def _escapes(path: Path, base: Path) -> bool:
    return not path.resolve().is_relative_to(base.resolve())
