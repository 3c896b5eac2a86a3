"""A grading's files on the host: its directories, its tests as files, and reading what runs wrote."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hatchway.judge.request import TestSpec

INLINE_BYTES = 256 * 1024
"""Files up to this size are read (and outputs checked) on the event loop: a thread hop would cost more."""


@dataclass(frozen=True)
class GradeTest:
    """One test as the session runs it: its input and expected output are files on the host."""

    name: str
    points: float
    input_path: Path
    """In the directory mounted at TESTS, which holds only inputs."""
    expected_path: Path
    time_limit_s: float | None = None
    memory_mb: int | None = None
    hidden: bool = False
    """Its result keeps no output, stderr or checker message (which could show its input or expected output)."""
    stack_mb: int | None = None


def _never_full() -> bool:
    return False


@dataclass(frozen=True)
class CompileDisk:
    """Where a compile step writes: `box` (its /box, the job user's) and `io` (root's: the compiler's messages).

    The grade runner gives each compile a size-limited volume (`engines.volumes`), so that a compiler, or whatever
    a profile's compile command runs, can write no more than `disk_mb`; `full` says whether it used it all.
    """

    box: Path
    io: Path
    disk_mb: int | None = None
    """None: a plain directory with no limit (the unit tests' harness)."""
    full: Callable[[], bool] = _never_full


@dataclass(frozen=True)
class Workspace:
    """The host directories of one grading: the tests and runs' I/O under `root`, and the compile steps' disks."""

    root: Path
    inputs: Path
    disk: CompileDisk | None = None
    """The submission's /box; None: `root/box` (and `root/compile-io`), a plain directory."""
    checker_disk: CompileDisk | None = None
    """The custom checker's /box; None: `root/checker-box` (and `root/compile-io`)."""

    @property
    def compile_disk(self) -> CompileDisk:
        return self.disk or CompileDisk(self.root / "box", self.root / "compile-io")

    @property
    def checker_compile_disk(self) -> CompileDisk:
        return self.checker_disk or CompileDisk(self.root / "checker-box", self.root / "compile-io")

    @property
    def box(self) -> Path:
        return self.compile_disk.box

    @property
    def io(self) -> Path:
        return self.root / "io"

    @property
    def checker_box(self) -> Path:
        return self.checker_compile_disk.box

    @property
    def checker_io(self) -> Path:
        return self.root / "checker-io"

    @property
    def check(self) -> Path:
        return self.root / "check"


async def read_file(path: Path, limit: int | None) -> bytes:
    """Up to `limit` bytes of a file (all of it for None); a missing file is empty. Small files are read on the
    loop: a thread hop would cost more than the read."""
    size = _size(path)
    if size is None:
        return b""
    if size > INLINE_BYTES:
        return await asyncio.to_thread(read_head, path, limit)
    return read_head(path, limit)


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return None


def read_head(path: Path, limit: int | None) -> bytes:
    """Up to `limit` bytes of a file (all of it for None), empty if it is missing; blocking."""
    try:
        with path.open("rb") as file:
            return file.read() if limit is None else file.read(limit)
    except FileNotFoundError:
        return b""


def write_owned(path: Path, text: str, uid: int, gid: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    for item in (path.parent, path):
        os.chown(item, uid, gid)


def show(directory: Path, files: dict[str, Path]) -> None:
    """Put `files` in `directory` for the checker to read: linked where possible, readable by anyone."""
    for name, source in files.items():
        target = directory / name
        target.unlink(missing_ok=True)
        try:
            os.link(source, target)
        except OSError:
            target.write_bytes(source.read_bytes())
        target.chmod(0o644)


def write_tests(workspace: Workspace, specs: list[TestSpec]) -> list[GradeTest]:
    """Inline tests as files: inputs where the sandbox mounts them, expected outputs beside (never mounted)."""
    workspace.inputs.mkdir(mode=0o700, exist_ok=True)
    expected = workspace.root / "expected"
    expected.mkdir(mode=0o700, exist_ok=True)
    tests = []
    for position, test in enumerate(specs, start=1):
        input_path = workspace.inputs / f"{position}.in"
        input_path.write_text(test.input)
        expected_path = expected / f"{position}.out"
        expected_path.write_text(test.expected_output)
        tests.append(
            GradeTest(
                name=test.name,
                points=test.points,
                input_path=input_path,
                expected_path=expected_path,
                time_limit_s=test.time_limit_s,
                memory_mb=test.memory_mb,
                hidden=test.hidden,
                stack_mb=test.stack_mb,
            )
        )
    return tests
