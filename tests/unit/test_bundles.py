"""Bundles: fetching through a real local HTTP server into the cache, and unpacking honest and hostile archives."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import http.server
import io
import json
import os
import re
import socket
import stat
import struct
import tarfile
import threading
import time
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hatchway.bundles import BundleCache, FetchedBundle, unpack
from hatchway.bundles.archive import _Kind, _Member, _Writer
from hatchway.egress import AddressPolicy, SourceGrant, origin_of
from hatchway.errors import BadBundle, FetchFailed

LIMIT = 1 << 20
LOOPBACK = AddressPolicy.of(["127.0.0.0/8"])
"""The test servers are on loopback, which the worker reaches only when told to."""
Entry = tuple[tarfile.TarInfo, bytes | None]


@dataclass
class Server:
    root: Path
    url: str
    hits: Counter[str]
    conditional: list[str]  # paths asked for with If-Modified-Since
    keys: dict[str, str | None]  # the X-API-Key each path was last asked for with


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    root = tmp_path / "srv"
    root.mkdir()
    hits: Counter[str] = Counter()
    conditional: list[str] = []
    keys: dict[str, str | None] = {}
    release = threading.Event()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(root), **kwargs)  # type: ignore[arg-type]

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            hits[self.path] += 1
            keys[self.path] = self.headers.get("X-API-Key")
            if "If-Modified-Since" in self.headers:
                conditional.append(self.path)
            if self.path == "/slow":
                release.wait(10)  # until the test is over; the client must give up long before
            elif self.path.startswith("/redirect/"):
                self.send_response(302)
                self.send_header("Location", self.path.removeprefix("/redirect"))
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif self.path.startswith("/nolength/"):  # HTTP/1.0: the body ends when the connection closes
                self.send_response(200)
                self.end_headers()
                self.wfile.write((root / self.path.removeprefix("/nolength/")).read_bytes())
            else:
                super().do_GET()

    class Quiet(http.server.ThreadingHTTPServer):
        def handle_error(self, request: object, client_address: object) -> None:
            pass  # a client that hung up on purpose (size limit, time limit) is not news

    httpd = Quiet(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})  # how soon shutdown() acts
    thread.start()
    yield Server(root, f"http://127.0.0.1:{httpd.server_address[1]}", hits, conditional, keys)
    release.set()
    httpd.shutdown()
    httpd.server_close()
    thread.join()


@pytest.fixture
def cache(tmp_path: Path) -> BundleCache:
    return BundleCache(tmp_path / "cache", max_download_bytes=LIMIT, download_timeout_s=10, addresses=LOOPBACK)


def reg(name: str, data: bytes = b"x", mode: int = 0o644) -> Entry:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    return info, data


def special(name: str, kind: bytes, target: str = "") -> Entry:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


def make_tar(path: Path, entries: list[Entry], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tar:  # type: ignore[call-overload]
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def make_zip(path: Path, entries: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFREG | 0o755) << 16 if name.endswith(".sh") else 0
            archive.writestr(info, data, zipfile.ZIP_DEFLATED)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, target)
    return path


GOOD_TAR = [
    reg("README", b"hello"),
    reg("bin/run.sh", b"#!/bin/sh\n", 0o6777),
    special("docs/readme", tarfile.SYMTYPE, "../README"),
]


def make_good(path: Path, fmt: str) -> Path:
    if fmt == "zip":
        return make_zip(path, {"README": b"hello", "bin/run.sh": b"#!/bin/sh\n"}, {"docs/readme": "../README"})
    return make_tar(path, GOOD_TAR, "w:gz" if fmt == "tar.gz" else "w")


@pytest.mark.parametrize("fmt", ["tar.gz", "tar", "zip"])
async def test_download_then_unpack_each_format_told_by_content(
    server: Server, cache: BundleCache, tmp_path: Path, fmt: str
) -> None:
    body = make_good(server.root / "bundle.dat", fmt).read_bytes()
    fetched = await cache.fetch(f"{server.url}/bundle.dat", None)
    assert (fetched.cached, fetched.sha256) == (False, hashlib.sha256(body).hexdigest())
    assert fetched.path == tmp_path / "cache" / fetched.sha256 and fetched.path.read_bytes() == body
    dest = tmp_path / "work"
    result = unpack(fetched.path, dest, max_total_bytes=LIMIT, max_files=10)
    assert (result.files, result.total_bytes) == (5, 15)  # README, bin/, bin/run.sh, docs/, docs/readme
    assert (dest / "docs" / "readme").read_text() == "hello" and os.readlink(dest / "docs" / "readme") == "../README"
    assert stat.S_IMODE((dest / "bin" / "run.sh").stat().st_mode) == 0o755  # no setuid/setgid, no group/other write
    assert stat.S_IMODE((dest / "README").stat().st_mode) == 0o644


@pytest.mark.parametrize("sha_known", [True, False])
async def test_concurrent_fetches_share_one_download(server: Server, cache: BundleCache, sha_known: bool) -> None:
    body = make_good(server.root / "b.tgz", "tar.gz").read_bytes()
    sha = hashlib.sha256(body).hexdigest() if sha_known else None
    first, second = await asyncio.gather(*(cache.fetch(f"{server.url}/b.tgz", sha) for _ in range(2)))
    assert first == second and first.sha256 == hashlib.sha256(body).hexdigest()
    assert server.hits["/b.tgz"] == 1


async def test_known_sha256_is_served_from_the_cache_without_a_request(server: Server, cache: BundleCache) -> None:
    body = make_good(server.root / "b.tgz", "tar.gz").read_bytes()
    sha = hashlib.sha256(body).hexdigest()
    assert not (await cache.fetch(f"{server.url}/b.tgz", sha.upper())).cached
    (server.root / "b.tgz").unlink()  # a request now would fail
    again = await cache.fetch(f"{server.url}/b.tgz", sha)
    assert again.cached and again.sha256 == sha and server.hits["/b.tgz"] == 1


async def test_without_sha256_a_conditional_get_revalidates(server: Server, cache: BundleCache, tmp_path: Path) -> None:
    path = make_good(server.root / "b.tgz", "tar.gz")
    first = await cache.fetch(f"{server.url}/b.tgz", None)
    again = await cache.fetch(f"{server.url}/b.tgz", None)
    assert again == FetchedBundle(first.path, first.sha256, cached=True)
    assert server.hits["/b.tgz"] == 2 and server.conditional == ["/b.tgz"]
    make_tar(path, [reg("other", b"changed")])
    os.utime(path, (path.stat().st_mtime + 10,) * 2)
    changed = await cache.fetch(f"{server.url}/b.tgz", None)
    assert not changed.cached and changed.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == sorted(
        [first.sha256, changed.sha256, "index.json"]
    )


async def test_the_cache_evicts_the_least_recently_used_beyond_its_budget_but_none_in_use(
    server: Server, tmp_path: Path
) -> None:
    cache = BundleCache(
        tmp_path / "cache", max_download_bytes=LIMIT, download_timeout_s=10, budget_bytes=2500, addresses=LOOPBACK
    )
    fetched = {}
    for name in ("a", "b", "c"):
        (server.root / name).write_bytes(name.encode() * 1000)
        fetched[name] = await cache.fetch(f"{server.url}/{name}", None)
    assert await cache.evict() == [], "all three were used just now"
    hour_ago = time.time() - 3600
    for age, name in enumerate(("b", "a", "c")):  # b least recently used, then a
        os.utime(fetched[name].path, (hour_ago + age,) * 2)
    again = await cache.fetch(f"{server.url}/b", fetched["b"].sha256)  # a hit is a use: b is the newest now
    assert again.cached
    assert await cache.evict() == [fetched["a"].sha256], "the least recently used go until 2500 bytes are left"
    assert not fetched["a"].path.exists() and fetched["b"].path.exists() and fetched["c"].path.exists()
    index = json.loads((tmp_path / "cache" / "index.json").read_text())["urls"]
    assert sorted(index) == [f"{server.url}/b", f"{server.url}/c"], "the URLs that named it are forgotten"
    assert not (await cache.fetch(f"{server.url}/a", None)).cached, "downloaded again when asked again"


async def test_a_source_s_credentials_go_with_its_own_items_to_its_origin_only(server: Server, tmp_path: Path) -> None:
    make_good(server.root / "b.tgz", "tar.gz")
    grant = SourceGrant.of("judge", f"{server.url}/api", {"X-API-Key": "master-key"})  # its origin counts
    keyed = BundleCache(tmp_path / "keyed", max_download_bytes=LIMIT, download_timeout_s=10, grants={"judge": grant})
    # The source's item reaches its master although the master is on loopback, which nothing else may reach.
    await keyed.fetch(f"{server.url}/redirect/b.tgz", None, source="judge")
    assert (server.keys["/redirect/b.tgz"], server.keys["/b.tgz"]) == ("master-key", "master-key")
    with pytest.raises(FetchFailed) as refused:
        await keyed.fetch(f"{server.url}/b.tgz", None)  # a client's: no key, and loopback is refused
    assert "127.0.0.1 is 127.0.0.1, not a public address" in refused.value.detail
    assert server.hits["/b.tgz"] == 1, "the client's request never left"
    open_to_loopback = BundleCache(
        tmp_path / "open", max_download_bytes=LIMIT, download_timeout_s=10, addresses=LOOPBACK, grants={"judge": grant}
    )
    await open_to_loopback.fetch(f"{server.url}/b.tgz", None, source="other")
    assert server.keys["/b.tgz"] is None, "another source's item does not get the key"
    server.keys.clear()
    await open_to_loopback.fetch(f"{server.url}/b.tgz", None)
    assert server.keys["/b.tgz"] is None, "nor does a client's"


async def test_a_source_s_archives_are_on_its_own_shelf(server: Server, tmp_path: Path) -> None:
    body = make_good(server.root / "hidden.tgz", "tar.gz").read_bytes()
    sha = hashlib.sha256(body).hexdigest()
    grant = SourceGrant.of("judge", server.url, {"X-API-Key": "master-key"})
    cache = BundleCache(
        tmp_path / "cache", max_download_bytes=LIMIT, download_timeout_s=10, addresses=LOOPBACK, grants={"judge": grant}
    )
    mine = await cache.fetch(f"{server.url}/hidden.tgz", sha, source="judge")
    assert mine.path == tmp_path / "cache" / "sources" / "judge" / sha
    assert (await cache.fetch(f"{server.url}/elsewhere.tgz", sha, source="judge")).cached, "its own by hash alone"
    for reader in (None, "other"):  # anyone else's by hash is fetched from their own URL: here, nothing
        with pytest.raises(FetchFailed):
            await cache.fetch(f"{server.url}/missing.tgz", sha, source=reader)
    assert server.hits["/missing.tgz"] == 2


def test_an_origin_is_scheme_host_and_port() -> None:
    assert origin_of("http://Example.com/x") == origin_of("http://example.com:80/y") == "http://example.com:80"
    assert origin_of("https://example.com") == "https://example.com:443"
    assert origin_of("https://example.com:8443/a") != origin_of("https://example.com/a")


async def test_redirects_are_followed(server: Server, cache: BundleCache) -> None:
    make_good(server.root / "b.zip", "zip")
    assert not (await cache.fetch(f"{server.url}/redirect/b.zip", None)).cached
    assert server.hits == Counter({"/redirect/b.zip": 1, "/b.zip": 1})


async def test_every_redirect_is_checked_like_the_first_url(server: Server, tmp_path: Path) -> None:
    make_good(server.root / "b.zip", "zip")
    port = server.url.rpartition(":")[2]
    only_this_origin = AddressPolicy.of(origins=[server.url])
    cache = BundleCache(tmp_path / "cache", max_download_bytes=LIMIT, download_timeout_s=10, addresses=only_this_origin)
    assert not (await cache.fetch(f"{server.url}/b.zip", None)).cached
    with pytest.raises(FetchFailed) as refused:  # the same server by another name is another origin
        await cache.fetch(f"{server.url}/redirect//localhost:{port}/b.zip", None)
    assert "not a public address" in refused.value.detail
    patterns = BundleCache(
        tmp_path / "patterns",
        max_download_bytes=LIMIT,
        download_timeout_s=10,
        addresses=LOOPBACK,
        url_allowed=lambda url: "/redirect/" in url,
    )
    with pytest.raises(FetchFailed) as refused:
        await patterns.fetch(f"{server.url}/redirect/b.zip", None)
    assert refused.value.detail == f"{server.url}/b.zip does not match bundle_allowed_urls"
    assert server.hits["/b.zip"] == 1


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/b.zip",
        "http://localhost:{port}/b.zip",
        "http://[::ffff:127.0.0.1]:{port}/b.zip",
        "http://2130706433:{port}/b.zip",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/b.zip",
        "http://100.64.0.1/b.zip",
        "http://[::1]:{port}/b.zip",
        "http://0.0.0.0:{port}/b.zip",
    ],
)
async def test_addresses_that_are_not_public_are_refused_without_a_request(
    server: Server, tmp_path: Path, url: str
) -> None:
    make_good(server.root / "b.zip", "zip")
    cache = BundleCache(tmp_path / "cache", max_download_bytes=LIMIT, download_timeout_s=10)
    with pytest.raises(FetchFailed) as refused:
        await cache.fetch(url.format(port=server.url.rpartition(":")[2]), None)
    assert str(refused.value) == FetchFailed.MESSAGE and "not a public address" in refused.value.detail
    assert server.hits == Counter()


async def test_sha256_mismatch_keeps_nothing(server: Server, cache: BundleCache, tmp_path: Path) -> None:
    got = hashlib.sha256(make_good(server.root / "b.tgz", "tar.gz").read_bytes()).hexdigest()
    with pytest.raises(BadBundle, match=f"sha256 mismatch: expected {'0' * 64}, got {got}"):
        await cache.fetch(f"{server.url}/b.tgz", "0" * 64)
    assert list((tmp_path / "cache").iterdir()) == []


@pytest.mark.parametrize(
    ("path", "message"),
    [("big", r"Content-Length\), more than"), ("nolength/big", "larger than")],
    ids=["content-length", "streamed"],
)
async def test_size_limit(server: Server, cache: BundleCache, tmp_path: Path, path: str, message: str) -> None:
    (server.root / "big").write_bytes(b"\0" * (LIMIT + 1))
    with pytest.raises(FetchFailed) as failed:
        await cache.fetch(f"{server.url}/{path}", None)
    assert re.search(message, failed.value.detail)
    assert list((tmp_path / "cache").iterdir()) == []


async def test_http_error_status(server: Server, cache: BundleCache) -> None:
    with pytest.raises(FetchFailed) as failed:
        await cache.fetch(f"{server.url}/missing.tgz", None)
    assert str(failed.value) == FetchFailed.MESSAGE and failed.value.detail.endswith("answered HTTP 404")


async def test_unreachable_server(cache: BundleCache) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there now
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(FetchFailed) as caught:
        await cache.fetch(f"http://user:secret@127.0.0.1:{port}/b.tgz?token=t0ken", None)
    assert "ConnectError" in caught.value.detail
    assert str(caught.value) == FetchFailed.MESSAGE, "whoever asked learns nothing of what is at that address"
    assert "secret" not in caught.value.detail and "t0ken" not in caught.value.detail


async def test_time_limit_covers_the_whole_download(server: Server, tmp_path: Path) -> None:
    cache = BundleCache(tmp_path / "cache", max_download_bytes=LIMIT, download_timeout_s=0.2, addresses=LOOPBACK)
    with pytest.raises(FetchFailed) as caught:
        await asyncio.wait_for(cache.fetch(f"{server.url}/slow", None), 5)
    assert re.search("Timeout|took longer", caught.value.detail)


@pytest.mark.timeout(10)
async def test_file_url(cache: BundleCache, tmp_path: Path) -> None:
    path = make_good(tmp_path / "b.zip", "zip")
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    assert not (await cache.fetch(path.as_uri(), None)).cached
    assert (await cache.fetch(path.as_uri(), None)).cached
    assert (await cache.fetch("file:///nowhere/b.zip", sha)).cached  # by hash: the path is never read
    with pytest.raises(FetchFailed) as failed:
        await cache.fetch("file:///nowhere/b.zip", None)
    assert failed.value.detail == "cannot read /nowhere/b.zip: No such file or directory"
    os.mkfifo(tmp_path / "fifo")  # never opened: a FIFO would wait for a writer
    with pytest.raises(FetchFailed) as failed:
        await cache.fetch((tmp_path / "fifo").as_uri(), None)
    assert failed.value.detail == f"{tmp_path / 'fifo'} is not a regular file"


@pytest.mark.timeout(10)
async def test_a_file_url_is_checked_where_it_really_leads(tmp_path: Path) -> None:
    allowed = tmp_path / "bundles"
    allowed.mkdir()
    secret = make_good(tmp_path / "secret.zip", "zip")
    (allowed / "link.zip").symlink_to(secret)
    make_good(allowed / "ok.zip", "zip")
    cache = BundleCache(
        tmp_path / "cache",
        max_download_bytes=LIMIT,
        download_timeout_s=10,
        url_allowed=lambda url: url.startswith(allowed.as_uri() + "/"),
    )
    assert not (await cache.fetch(f"{allowed.as_uri()}/./sub/../ok.zip", None)).cached
    for url in (f"{allowed.as_uri()}/%2e%2e/secret.zip", f"{allowed.as_uri()}/link.zip"):
        with pytest.raises(FetchFailed) as refused:
            await cache.fetch(url, None)
        assert refused.value.detail.endswith("does not match bundle_allowed_urls")


@pytest.mark.parametrize(
    ("url", "sha", "message"),
    [
        ("ftp://example.org/b.tgz", None, "scheme 'ftp'"),
        ("file:///srv/b.tgz?x", None, "no query"),
        ("file://example.org/b.tgz", None, "local path"),
        ("http:///b.tgz", None, "no host"),
        ("http://example.org/b.tgz", "../../etc/passwd", "64 hexadecimal"),
    ],
)
async def test_bad_requests_are_refused_without_network(cache: BundleCache, url: str, sha: str, message: str) -> None:
    with pytest.raises(BadBundle, match=message):
        await cache.fetch(url, sha)


# ---- unpacking hostile archives: each is refused, and nothing appears outside dest ----


def zip_lying_bomb(path: Path) -> Path:
    """A member of 2 MiB whose local and central headers both claim 1000 bytes."""
    data = bytearray(make_zip(path, {"bomb": b"\0" * (2 * LIMIT)}).read_bytes())
    central = data.find(b"PK\x01\x02")
    struct.pack_into("<I", data, 22, 1000)
    struct.pack_into("<I", data, central + 24, 1000)
    path.write_bytes(bytes(data))
    return path


Build = Callable[[Path], Path]


def tar_of(*entries: Entry, mode: str = "w:gz") -> Build:
    return lambda path: make_tar(path, list(entries), mode)


def zip_of(entries: dict[str, bytes], links: dict[str, str] | None = None) -> Build:
    return lambda path: make_zip(path, entries, links)


def truncated(path: Path) -> Path:
    data = make_good(path, "tar.gz").read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def raw(data: bytes) -> Build:
    def build(path: Path) -> Path:
        path.write_bytes(data)
        return path

    return build


def pax_bomb(*comments: int, mode: str = "w:gz") -> Build:
    """Members whose pax headers carry comments of these sizes: memory and inflating that no member shows."""

    def build(path: Path) -> Path:
        with tarfile.open(path, mode, format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
            for index, size in enumerate(comments):
                info, data = reg(f"f{index}")
                info.pax_headers = {"comment": "x" * size}
                tar.addfile(info, io.BytesIO(data or b""))
        return path

    return build


HOSTILE: dict[str, tuple[Build, str]] = {
    "dotdot": (tar_of(reg("ok"), reg("../evil")), "'../evil' climbs out"),
    "nested-dotdot": (tar_of(reg("a/../../evil"), mode="w"), "climbs out"),
    "absolute": (tar_of(reg("/abs")), "absolute path"),
    "backslash": (tar_of(reg("..\\evil")), "backslash"),
    "link-to-etc": (tar_of(special("etc", tarfile.SYMTYPE, "/etc"), reg("etc/hatchway-pwned")), "through the symlink"),
    "link-absolute": (tar_of(special("etc", tarfile.SYMTYPE, "/etc")), "absolute path '/etc'"),
    "link-up": (tar_of(special("a/up", tarfile.SYMTYPE, "../../x")), "outside the bundle"),
    "link-write-out": (tar_of(special("o", tarfile.SYMTYPE, "../outside"), reg("o/pwned")), "through the symlink 'o'"),
    "link-inside-write": (tar_of(reg("d/f"), special("l", tarfile.SYMTYPE, "d"), reg("l/f2")), "through the symlink"),
    "link-via-link": (
        tar_of(special("d/l", tarfile.SYMTYPE, ".."), special("x", tarfile.SYMTYPE, "d/l/..")),
        "through the symlink 'd/l'",
    ),
    "hardlink-out": (tar_of(special("h", tarfile.LNKTYPE, "/etc/passwd")), "hard link"),
    "hardlink-in": (tar_of(reg("a"), special("h", tarfile.LNKTYPE, "a")), "hard link"),
    "chardev": (tar_of(special("null", tarfile.CHRTYPE)), "device file or FIFO"),
    "blockdev": (tar_of(special("sda", tarfile.BLKTYPE)), "device file or FIFO"),
    "fifo": (tar_of(special("pipe", tarfile.FIFOTYPE)), "device file or FIFO"),
    "unknown-type": (tar_of(special("odd", b"Z")), "unsupported tar type"),
    "file-then-link": (tar_of(reg("a"), special("a", tarfile.SYMTYPE, "b")), "replace the file"),
    "duplicate": (tar_of(reg("a"), reg("a")), "replace the file"),
    "file-as-parent": (tar_of(reg("a"), reg("a/b")), "through the file 'a'"),
    "too-many": (tar_of(*(reg(f"f{i}") for i in range(5))), "more than 4 members"),
    "too-many-dirs": (tar_of(reg("a/b/c/d/e")), "more than 4 files and directories"),
    "tgz-bomb": (tar_of(reg("bomb", b"\0" * (8 * LIMIT))), "declared size past"),
    "pax-header-bomb": (pax_bomb(3 * LIMIT), "tar header larger than"),
    "pax-header-bomb-plain": (pax_bomb(3 * LIMIT, mode="w"), "tar header larger than"),
    "pax-stream-bomb": (pax_bomb(900_000, 900_000), "tar stream goes past"),
    "zip-dotdot": (zip_of({"ok": b"1", "../evil": b"x"}), "'../evil' climbs out"),
    "zip-absolute": (zip_of({"/abs": b"x"}), "absolute path"),
    "zip-link-out": (zip_of({}, {"link": "../outside"}), "outside the bundle"),
    "zip-link-through": (zip_of({"l/pwned": b"x"}, {"l": "."}), "replace the directory"),
    "zip-bomb": (zip_of({"bomb": b"\0" * (8 * LIMIT)}), "declared size past"),
    "zip-lying-bomb": (zip_lying_bomb, "broken.*CRC"),
    "not-an-archive": (raw(b"just some text\n" * 40), "not a .tar.gz, .tar or .zip"),
    "gzip-not-tar": (raw(gzip.compress(b"hi\n" * 400)), "not a .tar"),
    "truncated-tgz": (truncated, "broken"),
}


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_archive_is_refused_and_nothing_escapes(tmp_path: Path, case: str) -> None:
    build, message = HOSTILE[case]
    archive = build(tmp_path / "bundle")
    box = tmp_path / "box"
    (box / "outside").mkdir(parents=True)
    with pytest.raises(BadBundle, match=message):
        unpack(archive, box / "dest", max_total_bytes=LIMIT, max_files=4)
    assert [p.name for p in box.iterdir() if p.name != "dest"] == ["outside"]
    assert list((box / "outside").iterdir()) == [] and not Path("/etc/hatchway-pwned").exists()
    written = list((box / "dest").iterdir())  # checked before writing, but for the lie only reading can expose
    assert written == [] or (
        case == "zip-lying-bomb" and [(p.name, p.stat().st_size <= 1000) for p in written] == [("bomb", True)]
    )


def test_writer_counts_real_bytes_not_claims(tmp_path: Path) -> None:
    liar = _Member("liar", _Kind.FILE, size=10, data=lambda: io.BytesIO(b"y" * 100), path=("liar",))
    with pytest.raises(BadBundle, match="more than the 10 bytes its header declares"):
        _Writer(tmp_path, 1000).write([liar])
    big = _Member("big", _Kind.FILE, size=100, data=lambda: io.BytesIO(b"y" * 100), path=("big",))
    with pytest.raises(BadBundle, match="unpacked size past the unpacked-size limit of 50 bytes"):
        _Writer(tmp_path, 50).write([big])
    assert (tmp_path / "liar").stat().st_size <= 10 and (tmp_path / "big").stat().st_size <= 50


def test_destination_must_be_empty(tmp_path: Path) -> None:
    archive = make_good(tmp_path / "b.tgz", "tar.gz")
    (tmp_path / "dest").mkdir()
    (tmp_path / "dest" / "link").symlink_to("/etc")
    with pytest.raises(ValueError, match="not empty"):
        unpack(archive, tmp_path / "dest", max_total_bytes=LIMIT, max_files=10)
