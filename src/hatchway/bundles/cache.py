"""Fetching bundles: download each archive once and keep it by content hash.

Cache layout, all in ``cache_dir``:

- ``<sha256>``: one archive, named by the hash of its bytes. Files get there only by an atomic rename of a
  complete, fsynced and (when a hash was asked for) verified download, so a name always stands for its content.
- ``.part-*``, ``.index-*``: a download and an index being written; removed when that fails.
- ``index.json``: for URLs fetched without a hash, ``{"version": 1, "urls": {url: {"sha256", "etag",
  "last_modified"}}}``, so the next fetch can revalidate with a conditional GET instead of downloading again.
  It is a cache of a cache: a missing or unreadable index only costs a download.

An archive's modification time is when it was last used. `evict` keeps the cache within its budget, least
recently used first, and never removes one used in the last `IN_USE_S` (a fetched archive is unpacked within
moments of its fetch; one already opened is read to the end even if removed).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import re
import stat
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

import httpx

from hatchway.errors import BadBundle, DownloadUnavailable, may_pass
from hatchway.files import write_atomically

log = logging.getLogger(__name__)

_SHA256 = re.compile(r"[0-9a-f]{64}")
_CHUNK_BYTES = 64 * 1024
_MAX_REDIRECTS = 5
_INDEX_NAME = "index.json"
IN_USE_S = 600.0
"""An archive used this recently is never evicted."""


@dataclass(frozen=True)
class FetchedBundle:
    """An archive in the cache: its file, its sha256, and whether it was already there (nothing downloaded)."""

    path: Path
    sha256: str
    cached: bool


@dataclass(frozen=True)
class _Validators:
    """What a URL served last time, and the HTTP validators to ask the server whether it has changed."""

    sha256: str
    etag: str | None
    last_modified: str | None


class BundleCache:
    """Downloads bundles once, keeps them by content hash (sha256) under `cache_dir`.

    Concurrent fetches of the same (url, sha256) share one download. `evict` keeps it within `budget_bytes`.
    """

    def __init__(
        self,
        cache_dir: Path,
        *,
        max_download_bytes: int,
        download_timeout_s: float,
        budget_bytes: int | None = None,
        url_allowed: Callable[[str], bool] = lambda url: True,
        credentials: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        self._url_allowed = url_allowed
        # Headers sent to one origin only (a master's X-API-Key to the master that serves its archives): on a
        # redirect elsewhere they are dropped.
        self._credentials = {origin_of(origin): dict(headers) for origin, headers in (credentials or {}).items()}
        self._credential_names = {name.lower() for headers in self._credentials.values() for name in headers}
        self._budget = budget_bytes
        self._dir = cache_dir
        self._max_bytes = max_download_bytes
        self._timeout_s = download_timeout_s
        self._inflight: dict[tuple[str, str | None], asyncio.Task[FetchedBundle]] = {}
        cache_dir.mkdir(mode=0o700, parents=True, exist_ok=True)

    async def _check_request(self, request: httpx.Request) -> None:
        # Every request, redirects included, must go where policy lets bundles come from.
        if not self._url_allowed(str(request.url)):
            raise BadBundle(f"bundle download went to {_shown(str(request.url))}, which bundle_allowed_urls forbids")
        for name in self._credential_names:
            request.headers.pop(name, None)
        request.headers.update(self._credentials.get(origin_of(str(request.url)), {}))

    async def fetch(self, url: str, sha256: str | None) -> FetchedBundle:
        """The archive at `url` (http, https or file:///abs/path), verified against `sha256` when given.

        With a `sha256` already in the cache, nothing is read at all. Raises `BadBundle` for an unsupported URL,
        a failed or too large or too slow download, or a hash mismatch.
        """
        expected = _parse_sha256(sha256)
        key = (url, expected)
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.create_task(self._fetch(url, expected), name=f"bundle fetch {_shown(url)}")
            self._inflight[key] = task
            task.add_done_callback(lambda done: self._forget(key, done))
        # Shielded: one waiter giving up (its job was killed) must not cancel the download the others wait for.
        # The download itself is still bounded by the time limit.
        return await asyncio.shield(task)

    def _forget(self, key: tuple[str, str | None], task: asyncio.Task[FetchedBundle]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if not task.cancelled():
            task.exception()  # mark it retrieved: a failure nobody waited for any more is not worth a warning

    async def _fetch(self, url: str, expected: str | None) -> FetchedBundle:
        if expected is not None and _used(self._path(expected)):
            return FetchedBundle(self._path(expected), expected, cached=True)
        parts = _split(url)
        if parts.scheme == "file":
            # Reading, hashing and fsyncing a local file blocks; keep it off the event loop.
            return await asyncio.to_thread(self._copy_local, _local_path(parts), expected)
        try:
            async with asyncio.timeout(self._timeout_s):
                return await self._download(url, expected)
        except TimeoutError as exc:
            raise DownloadUnavailable(f"download of {_shown(url)} took longer than {self._timeout_s:g} s") from exc

    async def _download(self, url: str, expected: str | None) -> FetchedBundle:
        # Only a fetch without a hash revalidates: with one, the cache hit was already checked by name.
        known = self._index().get(url) if expected is None else None
        if known is not None and not self._path(known.sha256).is_file():
            known = None
        # Identity: the body is stored and hashed as served, and a compressed transfer could inflate beyond the
        # limit inside a single chunk before we count it.
        headers = {"Accept-Encoding": "identity"}
        if known is not None and known.etag:
            headers["If-None-Match"] = known.etag
        if known is not None and known.last_modified:
            headers["If-Modified-Since"] = known.last_modified
        shown = _shown(url)
        with _Part(self._dir, self._max_bytes, shown) as part:
            try:
                async with (
                    httpx.AsyncClient(
                        follow_redirects=True,
                        max_redirects=_MAX_REDIRECTS,
                        timeout=self._timeout_s,
                        event_hooks={"request": [self._check_request]},
                    ) as client,
                    client.stream("GET", url, headers=headers) as response,
                ):
                    if response.status_code == 304 and known is not None and _used(self._path(known.sha256)):
                        return FetchedBundle(self._path(known.sha256), known.sha256, cached=True)
                    if not response.is_success:
                        failed = DownloadUnavailable if may_pass(response.status_code) else BadBundle
                        raise failed(f"download of {shown} failed: HTTP {response.status_code}")
                    length = response.headers.get("content-length", "")
                    if length.isdigit() and int(length) > self._max_bytes:
                        raise BadBundle(
                            f"bundle {shown} is {length} bytes (Content-Length), more than the "
                            f"{self._max_bytes}-byte limit"
                        )
                    async for chunk in response.aiter_bytes(_CHUNK_BYTES):
                        part.write(chunk)
                    etag, last_modified = response.headers.get("etag"), response.headers.get("last-modified")
            except httpx.TimeoutException as exc:
                raise DownloadUnavailable(f"download of {shown} timed out ({type(exc).__name__})") from exc
            except httpx.ConnectError as exc:
                raise DownloadUnavailable(f"cannot connect to download {shown}: {exc}") from exc
            except httpx.TransportError as exc:  # the connection broke: worth another try
                raise DownloadUnavailable(f"download of {shown} failed: {type(exc).__name__}: {exc}") from exc
            except httpx.HTTPError as exc:
                raise BadBundle(f"download of {shown} failed: {type(exc).__name__}: {exc}") from exc
            digest = await asyncio.to_thread(part.finish)
            path, _ = self._keep(part, digest, expected)
        self._remember(url, _Validators(digest, etag, last_modified))
        log.info(
            "bundle downloaded",
            extra={"event": "bundle_downloaded", "url": shown, "sha256": digest, "bytes": part.size},
        )
        return FetchedBundle(path, digest, cached=False)

    def _copy_local(self, source: Path, expected: str | None) -> FetchedBundle:
        try:
            # O_NONBLOCK: opening a FIFO would otherwise wait for a writer forever, in a thread nothing can cancel.
            fd = os.open(source, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            raise BadBundle(f"cannot read bundle {source}: {exc.strerror}") from exc
        with open(fd, "rb") as src, _Part(self._dir, self._max_bytes, str(source)) as part:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise BadBundle(f"bundle {source} is not a regular file")
            # Copied while hashing, not hashed then copied: the file may change between two reads.
            while chunk := src.read(_CHUNK_BYTES):
                part.write(chunk)
            path, existed = self._keep(part, part.finish(), expected)
        return FetchedBundle(path, path.name, cached=existed)

    def _keep(self, part: _Part, digest: str, expected: str | None) -> tuple[Path, bool]:
        """Move a finished download to its content name unless it is not what was asked for; say if it was there."""
        if expected is not None and digest != expected:
            raise BadBundle(f"sha256 mismatch: expected {expected}, got {digest}")
        path = self._path(digest)
        existed = _used(path)
        if not existed:
            os.replace(part.path, path)
        return path, existed

    async def evict(self) -> list[str]:
        """Remove the least recently used archives until the cache is within its budget (none used in the last
        `IN_USE_S`), and forget the URLs that named them; returns the hashes removed."""
        if self._budget is None:
            return []
        removed = await asyncio.to_thread(self._evict, self._budget)
        if removed:
            gone = set(removed)
            # In the loop, with no await in between, like `_remember`.
            self._write_index({url: known for url, known in self._index().items() if known.sha256 not in gone})
            log.info("bundles evicted", extra={"event": "bundles_evicted", "count": len(removed)})
        return removed

    def _evict(self, budget: int) -> list[str]:
        archives = []
        for entry in os.scandir(self._dir):
            if _SHA256.fullmatch(entry.name):
                with contextlib.suppress(FileNotFoundError):
                    info = entry.stat()
                    archives.append((info.st_mtime, info.st_size, entry.name))
        total = sum(size for _, size, _ in archives)
        removed = []
        recent = time.time() - IN_USE_S
        for used_at, size, name in sorted(archives):
            if total <= budget or used_at > recent:
                break
            with contextlib.suppress(FileNotFoundError):
                self._path(name).unlink()
            total -= size
            removed.append(name)
        return removed

    def _path(self, digest: str) -> Path:
        return self._dir / digest

    def _index(self) -> dict[str, _Validators]:
        try:
            raw = json.loads((self._dir / _INDEX_NAME).read_text())
            entries = raw["urls"].items()
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            return {}
        found = ((url, _validators(entry)) for url, entry in entries)
        return {url: validators for url, validators in found if validators is not None}

    def _remember(self, url: str, validators: _Validators) -> None:
        # Read, change and write with no await in between, so tasks in this loop cannot lose each other's entries.
        index = self._index()
        index[url] = validators
        self._write_index(index)

    def _write_index(self, index: dict[str, _Validators]) -> None:
        document = {"version": 1, "urls": {key: asdict(value) for key, value in index.items()}}
        write_atomically(self._dir / _INDEX_NAME, json.dumps(document).encode())


class _Part:
    """An archive being written to a temporary file in the cache, hashed and size-checked as it grows."""

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
            raise BadBundle(f"bundle {self._shown} is larger than the {self._limit}-byte limit")
        self._hash.update(chunk)
        self._file.write(chunk)

    def finish(self) -> str:
        """Flush to disk and return the hash: a crash must not leave a short file under a content name."""
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        return self._hash.hexdigest()

    def __enter__(self) -> _Part:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._file.close()
        self.path.unlink(missing_ok=True)  # already gone when it was kept


def origin_of(url: str) -> str:
    """`scheme://host:port` of a URL, the port always given: what credentials are kept by."""
    parts = urllib.parse.urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    default = {"http": 80, "https": 443}.get(parts.scheme, 0)
    return f"{parts.scheme}://{(parts.hostname or '').lower()}:{port or default}"


def _used(path: Path) -> bool:
    """Mark an archive used now; False if it is not in the cache."""
    try:
        os.utime(path)
    except FileNotFoundError:
        return False
    return True


def _validators(entry: object) -> _Validators | None:
    # Checked like input: the hash becomes a file name, so a damaged index must not name another path.
    if (
        not isinstance(entry, dict)
        or not isinstance(entry.get("sha256"), str)
        or not _SHA256.fullmatch(entry["sha256"])
    ):
        return None
    etag, modified = entry.get("etag"), entry.get("last_modified")
    return _Validators(
        entry["sha256"], etag if isinstance(etag, str) else None, modified if isinstance(modified, str) else None
    )


def _parse_sha256(sha256: str | None) -> str | None:
    if sha256 is None:
        return None
    # The hash names a file in the cache: anything but 64 hex digits could name another path.
    digest = sha256.strip().lower()
    if not _SHA256.fullmatch(digest):
        raise BadBundle(f"bundle sha256 must be 64 hexadecimal digits, not {sha256!r}")
    return digest


def _split(url: str) -> urllib.parse.SplitResult:
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError as exc:
        raise BadBundle(f"bundle URL {url!r} is malformed: {exc}") from exc
    if parts.scheme not in ("http", "https", "file"):
        raise BadBundle(f"bundle URL scheme {parts.scheme!r} is not supported; use http, https or file")
    if parts.scheme != "file" and not parts.hostname:
        raise BadBundle(f"bundle URL {_shown(url)} has no host")
    return parts


def _local_path(parts: urllib.parse.SplitResult) -> Path:
    if parts.netloc not in ("", "localhost"):
        raise BadBundle(f"file URL must name a local path (file:///abs/path), not host {parts.netloc!r}")
    path = Path(urllib.request.url2pathname(parts.path))
    if not path.is_absolute():
        raise BadBundle(f"file URL must name an absolute path, not {parts.path!r}")
    return path


def _shown(url: str) -> str:
    """The URL for messages and logs, without credentials or query (signed URLs carry tokens there)."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "<malformed URL>"
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))
