"""Fetching bundles: download each archive once and keep it by content hash, on the shelf of whoever asked.

Every URL is someone else's (a client's, a master's), so every fetch goes through the same checks, for each
redirect hop too: the URL normalised (`hatchway.egress.normalise`) and matched against `bundle_allowed_urls`, its
host's addresses checked and connected to as checked (`hatchway.egress.GuardedTransport`), local files opened only
where the patterns allow, once symbolic links are resolved. A job source's items may also reach its master's
origin, with its credentials, and nobody else's may: what they fetch is kept on the source's shelf
(`hatchway.bundles.shelf`). A fetch that is refused or fails tells the caller only that (`FetchFailed`); the
worker's log says what happened.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from hatchway.bundles.shelf import SHA256, Shelf, Validators, evict
from hatchway.egress import AddressPolicy, GuardedTransport, Refused, SourceGrant, local_path, normalise, shown
from hatchway.errors import BadBundle, DownloadUnavailable, FetchFailed, may_pass

log = logging.getLogger(__name__)

_CHUNK_BYTES = 64 * 1024
_MAX_REDIRECTS = 5
IN_USE_S = 600.0
"""An archive used this recently is never evicted."""


@dataclass(frozen=True)
class FetchedBundle:
    """An archive in the cache: its file, its sha256, and whether it was already there (nothing downloaded)."""

    path: Path
    sha256: str
    cached: bool


class BundleCache:
    """Downloads bundles once, keeps them by content hash (sha256) under `cache_dir`.

    `url_allowed` says which (normalised) URLs may be fetched, `addresses` which addresses reached; `grants` are
    the job sources', by name. Concurrent fetches of the same (reader, url, sha256) share one download. `evict`
    keeps the cache within `budget_bytes`.
    """

    def __init__(
        self,
        cache_dir: Path,
        *,
        max_download_bytes: int,
        download_timeout_s: float,
        budget_bytes: int | None = None,
        url_allowed: Callable[[str], bool] = lambda url: True,
        addresses: AddressPolicy | None = None,
        grants: Mapping[str, SourceGrant] | None = None,
    ) -> None:
        self._url_allowed = url_allowed
        self._addresses = addresses or AddressPolicy()
        self._grants = dict(grants or {})
        self._budget = budget_bytes
        self._dir = cache_dir
        self._max_bytes = max_download_bytes
        self._timeout_s = download_timeout_s
        self._inflight: dict[tuple[str | None, str, str | None], asyncio.Task[FetchedBundle]] = {}
        cache_dir.mkdir(mode=0o700, parents=True, exist_ok=True)

    async def fetch(self, url: str, sha256: str | None, *, source: str | None = None) -> FetchedBundle:
        """The archive at `url` (http, https or file:///abs/path), verified against `sha256` when given, for an
        item of job source `source` (None: for a client of the HTTP API).

        With a `sha256` already on the asker's shelf, nothing is read at all. Raises `FetchFailed` (saying no more)
        when the URL or an address it leads to is refused or the download fails, `BadBundle` for a malformed URL
        or hash, or a hash mismatch.
        """
        expected = _parse_sha256(sha256)
        try:
            url = normalise(url)
        except ValueError as exc:
            raise BadBundle(f"bundle URL: {exc}") from exc
        key = (source, url, expected)
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.create_task(self._fetch(url, expected, source), name=f"bundle fetch {shown(url)}")
            self._inflight[key] = task
            task.add_done_callback(lambda done: self._forget(key, done))
        # Shielded: one waiter giving up (its job was killed) must not cancel the download the others wait for.
        # The download itself is still bounded by the time limit.
        return await asyncio.shield(task)

    def _forget(self, key: tuple[str | None, str, str | None], task: asyncio.Task[FetchedBundle]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if not task.cancelled():
            task.exception()  # mark it retrieved: a failure nobody waited for any more is not worth a warning

    async def _fetch(self, url: str, expected: str | None, source: str | None) -> FetchedBundle:
        shelf = Shelf.of(self._dir, source)
        if expected is not None and shelf.used(expected):
            return FetchedBundle(shelf.path(expected), expected, cached=True)
        try:
            if url.startswith("file:"):
                # Reading, hashing and fsyncing a local file blocks; keep it off the event loop.
                return await asyncio.to_thread(self._copy_local, shelf, url, expected)
            try:
                async with asyncio.timeout(self._timeout_s):
                    return await self._download(shelf, url, expected, self._grants.get(source or ""))
            except TimeoutError as exc:
                raise DownloadUnavailable(f"the download took longer than {self._timeout_s:g} s") from exc
        except FetchFailed as exc:
            log.warning(
                "fetching %s failed: %s",
                shown(url),
                exc.detail,
                extra={"event": "bundle_fetch_failed", "url": shown(url), "source": source},
            )
            raise

    async def _download(self, shelf: Shelf, url: str, expected: str | None, grant: SourceGrant | None) -> FetchedBundle:
        # Only a fetch without a hash revalidates: with one, the cache hit was already checked by name.
        known = shelf.index().get(url) if expected is None else None
        if known is not None and not shelf.path(known.sha256).is_file():
            known = None
        # Identity: the body is stored and hashed as served, and a compressed transfer could inflate beyond the
        # limit inside a single chunk before we count it.
        headers = {"Accept-Encoding": "identity"}
        if known is not None and known.etag:
            headers["If-None-Match"] = known.etag
        if known is not None and known.last_modified:
            headers["If-Modified-Since"] = known.last_modified
        trusted = frozenset() if grant is None else frozenset({grant.origin})
        transport = GuardedTransport(self._addresses, trusted=trusted)
        with shelf.part(self._max_bytes, shown(url)) as part:
            try:
                async with httpx.AsyncClient(transport=transport, timeout=self._timeout_s, trust_env=False) as client:
                    response = await self._follow(client, url, headers, grant)
                    try:
                        if response.status_code == 304 and known is not None and shelf.used(known.sha256):
                            return FetchedBundle(shelf.path(known.sha256), known.sha256, cached=True)
                        if not response.is_success:
                            failed = DownloadUnavailable if may_pass(response.status_code) else FetchFailed
                            raise failed(f"{shown(str(response.url))} answered HTTP {response.status_code}")
                        length = response.headers.get("content-length", "")
                        if length.isdigit() and int(length) > self._max_bytes:
                            raise FetchFailed(
                                f"it is {length} bytes (Content-Length), more than the {self._max_bytes}-byte limit"
                            )
                        async for chunk in response.aiter_bytes(_CHUNK_BYTES):
                            part.write(chunk)
                        etag, last_modified = response.headers.get("etag"), response.headers.get("last-modified")
                    finally:
                        await response.aclose()
            except Refused as exc:
                raise FetchFailed(str(exc)) from exc
            except httpx.TransportError as exc:  # unreachable, timed out, the connection broke: worth another try
                raise DownloadUnavailable(f"{type(exc).__name__}: {exc}") from exc
            except httpx.HTTPError as exc:
                raise FetchFailed(f"{type(exc).__name__}: {exc}") from exc
            digest = await asyncio.to_thread(part.finish)
            path, _ = shelf.keep(part, digest, expected)
        shelf.remember(url, Validators(digest, etag, last_modified))
        log.info(
            "bundle downloaded",
            extra={"event": "bundle_downloaded", "url": shown(url), "sha256": digest, "bytes": part.size},
        )
        return FetchedBundle(path, digest, cached=False)

    async def _follow(
        self, client: httpx.AsyncClient, url: str, headers: dict[str, str], grant: SourceGrant | None
    ) -> httpx.Response:
        """The first answer to GET `url` that is not a redirect, each hop checked as the first: on the grant's
        origin (with its credentials, which go nowhere else), or allowed by `bundle_allowed_urls`."""
        for _ in range(_MAX_REDIRECTS + 1):
            granted = grant.headers if grant is not None and grant.covers(url) else None
            if granted is None and not self._url_allowed(url):
                raise FetchFailed(f"{shown(url)} does not match bundle_allowed_urls")
            request = client.build_request("GET", url, headers={**headers, **(granted or {})})
            response = await client.send(request, stream=True)
            if not response.has_redirect_location:
                return response
            await response.aclose()
            try:
                url = normalise(str(response.url.join(response.headers["location"])))
            except (ValueError, httpx.InvalidURL) as exc:
                raise FetchFailed(f"{shown(url)} redirects to a URL that cannot be fetched: {exc}") from exc
            if not url.startswith("http"):
                raise FetchFailed(f"a redirect to {shown(url)}: redirects go to http and https only")
        raise FetchFailed(f"more than {_MAX_REDIRECTS} redirects")

    def _copy_local(self, shelf: Shelf, url: str, expected: str | None) -> FetchedBundle:
        """Copy the file a normalised file URL names, if the patterns allow both it and, symbolic links resolved,
        the file it really is. Nothing is opened before both are checked, and what is opened is checked again."""
        source = local_path(url)
        real = os.path.realpath(source)
        if not self._url_allowed(url) or not self._url_allowed(Path(real).as_uri()):
            raise FetchFailed(f"{source} (really {real}) does not match bundle_allowed_urls")
        try:
            if not stat.S_ISREG(os.stat(real, follow_symlinks=False).st_mode):
                raise FetchFailed(f"{real} is not a regular file")
            # O_NOFOLLOW: a link swapped in since cannot lead elsewhere; O_NONBLOCK: a FIFO swapped in would wait for
            # a writer forever, in a thread nothing can cancel.
            fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError as exc:
            raise FetchFailed(f"cannot read {real}: {exc.strerror}") from exc
        with open(fd, "rb") as src, shelf.part(self._max_bytes, str(source)) as part:
            if not stat.S_ISREG(os.fstat(fd).st_mode) or os.readlink(f"/proc/self/fd/{fd}") != real:
                raise FetchFailed(f"{real} changed while it was opened")
            # Copied while hashing, not hashed then copied: the file may change between two reads.
            while chunk := src.read(_CHUNK_BYTES):
                part.write(chunk)
            path, existed = shelf.keep(part, part.finish(), expected)
        return FetchedBundle(path, path.name, cached=existed)

    async def evict(self) -> list[str]:
        """Remove the least recently used archives until the cache is within its budget (none used in the last
        `IN_USE_S`), and forget the URLs that named them; returns the hashes removed."""
        if self._budget is None:
            return []
        removed = await asyncio.to_thread(evict, self._dir, self._budget, IN_USE_S)
        if removed:
            # In the loop, with no await in between, like `Shelf.remember`.
            for shelf in Shelf.every(self._dir):
                shelf.forget({path.name for path in removed if path.parent == shelf.dir})
            log.info("bundles evicted", extra={"event": "bundles_evicted", "count": len(removed)})
        return [path.name for path in removed]


def _parse_sha256(sha256: str | None) -> str | None:
    if sha256 is None:
        return None
    # The hash names a file in the cache: anything but 64 hex digits could name another path.
    digest = sha256.strip().lower()
    if not SHA256.fullmatch(digest):
        raise BadBundle(f"bundle sha256 must be 64 hexadecimal digits, not {sha256!r}")
    return digest
