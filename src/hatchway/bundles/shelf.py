"""Where fetched archives are kept: shelves of files named by their content's sha256, one shelf per reader.

Cache layout, all in the cache directory:

- ``<sha256>`` and ``index.json``: the shelf of the HTTP API's clients;
- ``sources/<name>/<sha256>`` and ``sources/<name>/index.json``: job source `name`'s shelf. What its items fetch
  (with its credentials, from a master whose address others may not reach) is for its items alone: a client
  asking for the same sha256 looks on its own shelf, never this one, and fetches its own URL.
- ``.part-*``, ``.index-*`` on a shelf: a download and an index being written; removed when that fails.

A file gets its content name only by an atomic rename of a complete, fsynced and (when a hash was asked for)
verified download, so a name always stands for its content. ``index.json`` holds, for URLs fetched without a
hash, ``{"version": 1, "urls": {url: {"sha256", "etag", "last_modified"}}}``, so the next fetch can revalidate
with a conditional GET instead of downloading again: a cache of a cache, whose loss only costs a download.

An archive's modification time is when it was last used; `evict` removes the least recently used, on any shelf.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from hatchway.errors import BadBundle, FetchFailed
from hatchway.files import write_atomically

SHA256 = re.compile(r"[0-9a-f]{64}")
_INDEX_NAME = "index.json"
_SOURCES = "sources"


@dataclass(frozen=True)
class Validators:
    """What a URL served last time, and the HTTP validators to ask the server whether it has changed."""

    sha256: str
    etag: str | None
    last_modified: str | None


class Shelf:
    """One reader's archives (see the module's docstring)."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory

    @classmethod
    def of(cls, cache_dir: Path, source: str | None) -> Shelf:
        """The shelf of `source`'s items (a source name is a safe directory name), or of the API's clients."""
        return cls(cache_dir if source is None else cache_dir / _SOURCES / source)

    @staticmethod
    def every(cache_dir: Path) -> Iterator[Shelf]:
        """Every shelf that exists."""
        yield Shelf(cache_dir)
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(cache_dir / _SOURCES):
                if entry.is_dir(follow_symlinks=False):
                    yield Shelf(Path(entry.path))

    def path(self, digest: str) -> Path:
        return self.dir / digest

    def used(self, digest: str) -> bool:
        """Mark an archive used now; False if it is not on the shelf."""
        try:
            os.utime(self.path(digest))
        except FileNotFoundError:
            return False
        return True

    def part(self, limit: int, shown: str) -> Part:
        """A new download onto this shelf."""
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        return Part(self.dir, limit, shown)

    def keep(self, part: Part, digest: str, expected: str | None) -> tuple[Path, bool]:
        """Move a finished download to its content name unless it is not what was asked for; say if it was there."""
        if expected is not None and digest != expected:
            raise BadBundle(f"sha256 mismatch: expected {expected}, got {digest}")
        path = self.path(digest)
        existed = self.used(digest)
        if not existed:
            os.replace(part.path, path)
        return path, existed

    def archives(self) -> Iterator[tuple[float, int, Path]]:
        """(last used, size, path) of each archive on the shelf."""
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(self.dir):
                if SHA256.fullmatch(entry.name):
                    with contextlib.suppress(FileNotFoundError):
                        info = entry.stat(follow_symlinks=False)
                        yield info.st_mtime, info.st_size, Path(entry.path)

    def index(self) -> dict[str, Validators]:
        try:
            raw = json.loads((self.dir / _INDEX_NAME).read_text())
            entries = raw["urls"].items()
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            return {}
        found = ((url, _validators(entry)) for url, entry in entries)
        return {url: validators for url, validators in found if validators is not None}

    def remember(self, url: str, validators: Validators) -> None:
        # Read, change and write with no await in between, so tasks in this loop cannot lose each other's entries.
        index = self.index()
        index[url] = validators
        self._write_index(index)

    def forget(self, digests: set[str]) -> None:
        """Forget the URLs that named these archives."""
        index = self.index()
        kept = {url: known for url, known in index.items() if known.sha256 not in digests}
        if len(kept) != len(index):
            self._write_index(kept)

    def _write_index(self, index: dict[str, Validators]) -> None:
        document = {"version": 1, "urls": {key: asdict(value) for key, value in index.items()}}
        write_atomically(self.dir / _INDEX_NAME, json.dumps(document).encode())


def evict(cache_dir: Path, budget: int, in_use_s: float) -> list[Path]:
    """Remove the least recently used archives, on any shelf, until all of them fit in `budget` bytes, except those
    used in the last `in_use_s`; returns the paths removed."""
    archives = sorted(found for shelf in Shelf.every(cache_dir) for found in shelf.archives())
    total = sum(size for _, size, _ in archives)
    removed = []
    recent = time.time() - in_use_s
    for used_at, size, path in archives:
        if total <= budget or used_at > recent:
            break
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        total -= size
        removed.append(path)
    return removed


class Part:
    """An archive being written to a temporary file on a shelf, hashed and size-checked as it grows."""

    def __init__(self, directory: Path, limit: int, shown: str) -> None:
        fd, name = tempfile.mkstemp(dir=directory, prefix=".part-")
        self.path = Path(name)
        self.size = 0
        self._file: BinaryIO = open(fd, "wb")  # noqa: SIM115 - closed in __exit__
        self._hash = hashlib.sha256()
        self._limit = limit
        self._shown = shown

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self._limit:
            raise FetchFailed(f"{self._shown} is larger than the {self._limit}-byte limit (bundle_max_bytes)")
        self._hash.update(chunk)
        self._file.write(chunk)

    def finish(self) -> str:
        """Flush to disk and return the hash: a crash must not leave a short file under a content name."""
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        return self._hash.hexdigest()

    def __enter__(self) -> Part:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._file.close()
        self.path.unlink(missing_ok=True)  # already gone when it was kept


def _validators(entry: object) -> Validators | None:
    # Checked like input: the hash becomes a file name, so a damaged index must not name another path.
    if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str) or not SHA256.fullmatch(entry["sha256"]):
        return None
    etag, modified = entry.get("etag"), entry.get("last_modified")
    return Validators(
        entry["sha256"], etag if isinstance(etag, str) else None, modified if isinstance(modified, str) else None
    )
