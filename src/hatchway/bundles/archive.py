"""Unpacking bundles: a .tar.gz, .tar or .zip written into an empty directory, and nowhere else.

Two passes. The first reads every member's header and refuses the whole archive, before anything is written,
if a member is absolute or climbs with '..', is a hard link, a device, a FIFO or another special file, is a
symlink whose target is absolute or leaves the bundle, would be written through a symlink or over another
member, or if the members are too many or declare too many bytes (a zip's count and directory size are checked
from its end record before zipfile reads the directory: `zip_directory`). The second writes the members itself (never
``tarfile.extractall``) through directory descriptors opened with O_NOFOLLOW and files created with O_EXCL, so
no path is ever followed through a link even if a check above were wrong, and it counts the bytes it actually
writes, because a zip's sizes are only claims.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import gzip
import io
import os
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO

from hatchway.bundles.zip_directory import check_zip_directory
from hatchway.errors import BadBundle

_CHUNK_BYTES = 64 * 1024
# A zip stores a symlink's target as its content; anything longer than PATH_MAX is not a target.
_MAX_LINK_BYTES = 4096
# A tar stream may only reach the content allowed plus this much per member (a header block, a pax header,
# padding), and no single header may be larger than _MAX_READ_BYTES: see _BoundedStream.
_MAX_READ_BYTES = 1024 * 1024
_TAR_OVERHEAD_PER_MEMBER = 8 * 1024
_TAR_OVERHEAD_FIXED = 64 * 1024
_NOT_AN_ARCHIVE = "bundle is not a .tar.gz, .tar or .zip archive"


@dataclass(frozen=True)
class UnpackedBundle:
    """What was written: `files` entries (files, directories and symlinks) holding `total_bytes` of content."""

    files: int
    total_bytes: int


class _Kind(enum.Enum):
    FILE = "file"
    DIR = "directory"
    LINK = "symlink"


@dataclass(frozen=True)
class _Member:
    name: str  # as the archive spells it, for messages
    kind: _Kind
    size: int = 0  # declared content size of a file
    executable: bool = False
    target: str = ""  # of a symlink
    data: Callable[[], IO[bytes]] | None = None  # opens a file's content
    path: tuple[str, ...] = ()  # normalised; set by _plan


def unpack(
    archive: Path, dest: Path, *, max_total_bytes: int, max_files: int, limit_name: str = "unpacked-size limit"
) -> UnpackedBundle:
    """Write the bundle `archive` into `dest`, which must be empty or absent. Blocking: run it in a thread.

    `max_files` bounds the entries created (files, directories, symlinks), `max_total_bytes` the content written
    (`limit_name` says in messages what that limit is). A bundle whose declared content is past it is refused before
    anything is written.
    Raises `BadBundle`, naming the member and the problem, for a hostile, broken or too large archive. Nothing
    is ever written outside `dest`; after a failure `dest` may hold part of the bundle, for the caller to remove.
    """
    dest.mkdir(parents=True, exist_ok=True)
    if any(dest.iterdir()):
        # The link checks reason about the bundle's own members only; a link already in dest could undo them.
        raise ValueError(f"unpack needs an empty destination; {dest} is not empty")
    try:
        with _members(archive, max_total_bytes=max_total_bytes, max_files=max_files) as members:
            planned, entries = _plan(
                members, max_total_bytes=max_total_bytes, max_files=max_files, limit_name=limit_name
            )
            total_bytes = _Writer(dest, max_total_bytes, limit_name).write(planned)
    except (tarfile.TarError, zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, OSError) as exc:
        # OSError here is reading the archive (gzip.BadGzipFile is one); write errors were named in _Writer.
        raise BadBundle(f"bundle archive is broken: {exc}") from exc
    return UnpackedBundle(files=entries, total_bytes=total_bytes)


def read_member(archive: Path, name: str, *, max_bytes: int, max_total_bytes: int, max_files: int) -> bytes | None:
    """The content of the regular file `name` (a path inside the bundle) of `archive`, or None if it has none,
    read without unpacking anything, as far as that member only. Blocking: run it in a thread.

    The archive is read under the same limits as `unpack` (`max_total_bytes`, `max_files`); the member may hold at
    most `max_bytes`. Raises `BadBundle` for a broken archive, a member past `max_bytes`, or `name` as something
    other than a regular file (a symlink could point anywhere the bundle's own checks have not yet seen)."""
    wanted = _normalised(name)
    try:
        with _members(archive, max_total_bytes=max_total_bytes, max_files=max_files) as members:
            for count, member in enumerate(members, start=1):
                if count > max_files:
                    raise BadBundle(f"bundle has more than {max_files} members")
                if _normalised(member.name) != wanted:
                    continue
                if member.kind is not _Kind.FILE or member.data is None:
                    raise _refused(member.name, f"is a {member.kind.value}, not a file")
                if member.size > max_bytes:
                    raise _refused(member.name, f"holds {member.size} bytes, more than the {max_bytes} allowed")
                with member.data() as data:
                    content = data.read(max_bytes + 1)  # a zip's size is only a claim
                if len(content) > max_bytes:
                    raise _refused(member.name, f"holds more than the {max_bytes} bytes allowed")
                return content
    except (tarfile.TarError, zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, OSError) as exc:
        raise BadBundle(f"bundle archive is broken: {exc}") from exc
    return None


@contextlib.contextmanager
def _members(archive: Path, *, max_total_bytes: int, max_files: int) -> Iterator[Iterator[_Member]]:
    """The archive's members, read lazily, whatever its name says: the format is told by its content."""
    with archive.open("rb") as probe:
        magic = probe.read(4)
    if magic in (b"PK\x03\x04", b"PK\x05\x06") and zipfile.is_zipfile(archive):
        check_zip_directory(archive, max_files=max_files)  # before zipfile parses every entry of it
        with zipfile.ZipFile(archive) as zip_file:
            yield _zip_members(zip_file)
        return
    limit = max_total_bytes + (max_files + 1) * _TAR_OVERHEAD_PER_MEMBER + _TAR_OVERHEAD_FIXED
    # Gzip or plain tar; "r:" and never "r:*": only the formats we promise, not whatever tarfile can guess.
    with (
        gzip.open(archive, "rb") if magic[:2] == b"\x1f\x8b" else archive.open("rb") as raw,
        _tar(_BoundedStream(raw, limit)) as tar,
    ):
        yield _tar_members(tar)


def _tar(stream: _BoundedStream) -> tarfile.TarFile:
    try:
        return tarfile.open(fileobj=stream, mode="r:")
    except tarfile.ReadError as exc:
        raise BadBundle(_NOT_AN_ARCHIVE) from exc


def _tar_members(tar: tarfile.TarFile) -> Iterator[_Member]:
    while (info := tar.next()) is not None:
        if info.isreg():
            opener = functools.partial(_tar_data, tar, info)
            yield _Member(info.name, _Kind.FILE, info.size, bool(info.mode & 0o100), data=opener)
        elif info.isdir():
            yield _Member(info.name, _Kind.DIR)
        elif info.issym():
            yield _Member(info.name, _Kind.LINK, target=info.linkname)
        elif info.islnk():
            raise _refused(info.name, f"is a hard link (to {info.linkname!r}); hard links are not allowed")
        elif info.ischr() or info.isblk() or info.isfifo():
            raise _refused(info.name, "is a device file or FIFO; only files, directories and symlinks are allowed")
        else:
            raise _refused(info.name, f"has the unsupported tar type {info.type!r}")


def _tar_data(tar: tarfile.TarFile, info: tarfile.TarInfo) -> IO[bytes]:
    data = tar.extractfile(info)
    if data is None:  # only for members that are not regular files, which never get here
        raise _refused(info.name, "has no content")
    return data


def _zip_members(zip_file: zipfile.ZipFile) -> Iterator[_Member]:
    for info in zip_file.infolist():
        mode = info.external_attr >> 16  # Unix mode, when the archiver recorded one
        kind = stat.S_IFMT(mode)
        if info.flag_bits & 0x1:
            raise _refused(info.filename, "is encrypted")
        if info.is_dir() or kind == stat.S_IFDIR:
            yield _Member(info.filename, _Kind.DIR)
        elif kind == stat.S_IFLNK:
            if info.file_size > _MAX_LINK_BYTES:
                raise _refused(info.filename, "is a symlink with an over-long target")
            target = os.fsdecode(zip_file.read(info))  # zipfile reads no more than the declared size
            yield _Member(info.filename, _Kind.LINK, target=target)
        elif kind in (0, stat.S_IFREG):
            opener = functools.partial(zip_file.open, info)
            yield _Member(info.filename, _Kind.FILE, info.file_size, bool(mode & 0o100), data=opener)
        else:
            raise _refused(info.filename, "is a device file, FIFO or socket; only files, directories and symlinks")


def _plan(
    members: Iterable[_Member], *, max_total_bytes: int, max_files: int, limit_name: str
) -> tuple[list[_Member], int]:
    """Check every member before anything is written; return them with their paths, and the entries to create."""
    kinds: dict[tuple[str, ...], _Kind] = {}  # every path the bundle creates, parents included
    planned: list[_Member] = []
    declared = 0
    for count, member in enumerate(members, start=1):
        # Checked as members come, so a flood of headers or a huge declared size stops the reading at once.
        if count > max_files:
            raise BadBundle(f"bundle has more than {max_files} members")
        path = _normalised(member.name)
        if not path:
            if member.kind is _Kind.DIR:
                continue  # "./": the destination itself
            raise _refused(member.name, "has an empty name")
        for depth in range(1, len(path)):
            above = kinds.setdefault(path[:depth], _Kind.DIR)
            if above is not _Kind.DIR:
                raise _refused(member.name, f"would be written through the {above.value} {'/'.join(path[:depth])!r}")
        earlier = kinds.get(path)
        if earlier is not None and not (earlier is _Kind.DIR and member.kind is _Kind.DIR):
            raise _refused(member.name, f"would replace the {earlier.value} of the same name")
        kinds[path] = member.kind
        if len(kinds) > max_files:
            raise BadBundle(f"bundle would create more than {max_files} files and directories")
        declared += member.size
        if declared > max_total_bytes:
            raise _refused(
                member.name, f"takes the bundle's declared size past the {limit_name} of {max_total_bytes} bytes"
            )
        planned.append(replace(member, path=path))
    for member in planned:
        if member.kind is _Kind.LINK:
            _check_link(member, kinds)
    return planned, len(kinds)


def _normalised(name: str) -> tuple[str, ...]:
    if "\0" in name:
        raise _refused(name, "has a NUL byte in its name")
    if "\\" in name:
        raise _refused(name, "has a backslash in its name (a Windows path separator)")
    if name.startswith("/"):
        raise _refused(name, "is an absolute path")
    parts = tuple(part for part in name.split("/") if part not in ("", "."))
    if ".." in parts:
        raise _refused(name, "climbs out with '..'")
    return parts


def _check_link(member: _Member, kinds: dict[tuple[str, ...], _Kind]) -> None:
    """Refuse a symlink unless its target, resolved from where it sits, stays inside the bundle."""
    target = member.target
    if not target or "\0" in target:
        raise _refused(member.name, "is a symlink with an empty or NUL-bearing target")
    if target.startswith("/"):
        raise _refused(member.name, f"is a symlink to the absolute path {target!r}")
    where = list(member.path[:-1])
    steps = target.split("/")
    for index, step in enumerate(steps):
        if step in ("", "."):
            continue
        if step == "..":
            if not where:
                raise _refused(member.name, f"is a symlink to {target!r}, outside the bundle")
            where.pop()
            continue
        where.append(step)
        # Past another symlink, '..' climbs from wherever that one points, which a lexical walk cannot follow.
        if index < len(steps) - 1 and kinds.get(tuple(where)) is _Kind.LINK:
            raise _refused(member.name, f"is a symlink to {target!r}, through the symlink {'/'.join(where)!r}")


class _Writer:
    """Writes checked members under one directory descriptor, never following a link, counting real bytes."""

    def __init__(self, dest: Path, max_total_bytes: int, limit_name: str = "unpacked-size limit") -> None:
        self._dest = dest
        self._limit = max_total_bytes
        self._limit_name = limit_name
        self._written = 0

    def write(self, planned: list[_Member]) -> int:
        root = os.open(self._dest, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for member in planned:
                try:
                    self._member(root, member)
                except OSError as exc:
                    raise _refused(member.name, f"cannot be written: {exc.strerror or exc}") from exc
        finally:
            os.close(root)
        return self._written

    def _member(self, root: int, member: _Member) -> None:
        parent = os.dup(root)
        try:
            for name in member.path[:-1]:
                child = _enter(parent, name)
                os.close(parent)
                parent = child
            name = member.path[-1]
            if member.kind is _Kind.DIR:
                os.close(_enter(parent, name))
            elif member.kind is _Kind.LINK:
                os.symlink(member.target, name, dir_fd=parent)  # fails if anything has that name already
            else:
                self._file(parent, name, member)
        finally:
            os.close(parent)

    def _file(self, parent: int, name: str, member: _Member) -> None:
        if member.data is None:  # every file member is given an opener; this only narrows the type
            raise _refused(member.name, "has no content")
        # O_EXCL (with O_NOFOLLOW): create a new file or fail; never open, truncate or follow what is there.
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=parent)
        with open(fd, "wb") as out, member.data() as data:
            size = 0
            while chunk := data.read(min(_CHUNK_BYTES, self._limit - self._written + 1)):
                size += len(chunk)
                self._written += len(chunk)
                if size > member.size:
                    raise _refused(member.name, f"holds more than the {member.size} bytes its header declares")
                if self._written > self._limit:
                    raise _refused(
                        member.name, f"takes the unpacked size past the {self._limit_name} of {self._limit} bytes"
                    )
                out.write(chunk)
            # Only the executable bit survives: no setuid/setgid/sticky, no group or other write.
            os.fchmod(fd, 0o755 if member.executable else 0o644)


def _enter(parent: int, name: str) -> int:
    """Open the directory `name` under `parent`, creating it; refuse (ELOOP/ENOTDIR) a link or a file there."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(name, 0o700, dir_fd=parent)
    fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
    os.fchmod(fd, 0o755)  # explicit, not left to the umask
    return fd


class _BoundedStream:
    """A read-only tar stream that bounds how far it may go and how much one read may take.

    tarfile reads each pax or GNU long-name header whole, in one read, and skips member data by seeking; so
    refusing big reads bounds the memory a lying header can cost, and refusing to go past `limit` bounds the
    inflating a gzip bomb can cost, both before any member is checked. Member data is read in small chunks.
    """

    def __init__(self, inner: io.BufferedIOBase, limit: int) -> None:
        self._inner = inner
        self._limit = limit

    def read(self, size: int = -1, /) -> bytes:
        if size < 0 or size > _MAX_READ_BYTES:
            raise BadBundle(f"bundle has a tar header larger than {_MAX_READ_BYTES} bytes")
        if self._inner.tell() + size > self._limit:
            raise self._too_big()
        return self._inner.read(size)

    def seek(self, offset: int, whence: int = io.SEEK_SET, /) -> int:
        # Seeking forward in gzip inflates everything skipped, so a target past the limit is refused up front.
        if whence != io.SEEK_SET:
            raise io.UnsupportedOperation("tarfile seeks to absolute offsets only")
        if offset > self._limit:
            raise self._too_big()
        return self._inner.seek(offset)

    def tell(self) -> int:
        return self._inner.tell()

    def write(self, data: bytes, /) -> int:
        raise io.UnsupportedOperation("read-only")

    def close(self) -> None:
        pass  # the stream underneath belongs to whoever opened it

    def _too_big(self) -> BadBundle:
        return BadBundle(f"bundle's tar stream goes past {self._limit} bytes, more than its limits allow")


def _refused(name: str, problem: str) -> BadBundle:
    return BadBundle(f"bundle member {name!r} {problem}")
