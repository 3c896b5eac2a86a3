"""Problem archives from a URL: fetched through the bundle cache (same URL policy, size and time limits, safe
unpack) and read in the judge's layout. Checked once when a grading is submitted, so a broken archive is a clear
4xx, and unpacked again when the grading runs (the download itself is cached). A submission's own files may come
as an archive too (a judge's master hands them out so): read the same way, into text."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from hatchway.bundles import BundleCache, FetchedBundle, unpack
from hatchway.errors import BadBundle, InvalidRequest, ProblemError
from hatchway.jobs.prepare import BundleLimits
from hatchway.judge.problem import ProblemTest, load_problem
from hatchway.judge.request import Group
from hatchway.judge.verdicts import check_groups


class ProblemArchives:
    """Fetch, unpack and read problem archives."""

    def __init__(self, *, bundles: BundleCache, limits: BundleLimits) -> None:
        self._bundles = bundles
        self._limits = limits

    async def load(
        self, url: str, sha256: str | None, dest: Path, groups: Sequence[Group], *, source: str | None = None
    ) -> tuple[list[ProblemTest], bool]:
        """The problem's tests, unpacked into `dest`, and whether the download was cached; `source` is the job
        source whose item it is (None: a client's). Raises BadBundle for a download or a hostile archive,
        ProblemError for one not in the judge's layout or not fitting `groups`."""
        tests, fetched = await self._load(url, sha256, dest, groups, source=source)
        return tests, fetched.cached

    async def _load(
        self, url: str, sha256: str | None, dest: Path, groups: Sequence[Group], *, source: str | None
    ) -> tuple[list[ProblemTest], FetchedBundle]:
        fetched = await self._bundles.fetch(url, sha256, source=source)
        await asyncio.to_thread(
            unpack,
            fetched.path,
            dest,
            max_total_bytes=self._limits.max_unpacked_bytes,
            max_files=self._limits.max_files,
        )
        tests = await asyncio.to_thread(load_problem, dest)
        try:
            check_groups([test.name for test in tests], groups)
        except ValueError as exc:
            raise ProblemError(f"the groups do not fit the problem's tests: {exc}") from exc
        return tests, fetched

    async def source_files(self, url: str, folder: str, scratch: Path, *, source: str | None) -> dict[str, str]:
        """The files of the archive at `url`, as text, keyed by their path: inside `folder` if that folder is all
        the archive holds at its top, else the archive's own (flat). Raises BadBundle for a download or a hostile
        archive, and for one that holds no files or something other than UTF-8 text files."""
        dest = Path(await asyncio.to_thread(_scratch_dir, scratch))
        try:
            fetched = await self._bundles.fetch(url, None, source=source)
            await asyncio.to_thread(
                unpack,
                fetched.path,
                dest / "archive",
                max_total_bytes=self._limits.max_unpacked_bytes,
                max_files=self._limits.max_files,
            )
            return await asyncio.to_thread(_read_folder, dest / "archive", folder)
        finally:
            await asyncio.to_thread(shutil.rmtree, dest, ignore_errors=True)

    async def check(
        self, url: str, sha256: str | None, groups: Sequence[Group], scratch: Path, *, source: str | None = None
    ) -> str:
        """The sha256 of the archive at `url` once checked to be a usable problem; raises InvalidRequest, naming
        the problem, if it is not."""
        dest = Path(await asyncio.to_thread(_scratch_dir, scratch))
        try:
            _, fetched = await self._load(url, sha256, dest / "problem", groups, source=source)
            return fetched.sha256
        except BadBundle as exc:
            raise InvalidRequest(f"problem_url: {exc}") from exc
        finally:
            await asyncio.to_thread(shutil.rmtree, dest, ignore_errors=True)


def _scratch_dir(parent: Path) -> str:
    parent.mkdir(parents=True, exist_ok=True)
    return tempfile.mkdtemp(prefix="problem-", dir=parent)


def _read_folder(root: Path, folder: str) -> dict[str, str]:
    base = root / folder
    inside = [entry.name for entry in root.iterdir()] == [folder] and base.is_dir() and not base.is_symlink()
    if not inside:
        base, folder = root, ""
    files: dict[str, str] = {}
    for path in sorted(base.rglob("*")):
        name = path.relative_to(base).as_posix()
        if path.is_symlink():
            raise BadBundle(f"{folder}/{name}".lstrip("/") + " is a symbolic link; give regular files only")
        if not path.is_file():
            continue
        try:
            files[name] = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise BadBundle(f"{folder}/{name}".lstrip("/") + " is not UTF-8 text") from exc
    if not files:
        raise BadBundle(f"the archive's {folder}/ folder holds no files" if folder else "the archive holds no files")
    return files
