"""What COPY and ADD put into an image, as a tar archive to extract at the container's root (`BuildSteps.put`).

The rules are Docker's: a source is a file or a directory of the build context (a directory's content is copied,
not the directory itself), wildcards match within one path segment, a relative destination is relative to the
WORKDIR, and a destination ending in `/` (which several sources need), or an existing directory, takes each file
under its own name. Files from the context are 0644 and directories 0755, owned by root unless `--chown` says
otherwise (numbers, or names the image's /etc/passwd and /etc/group know). ADD also unpacks a local tar archive
(plain or compressed) into its destination; devices and paths leaving the destination are refused. COPY --from
takes paths of another stage's (or an image's) file system, owners kept unless `--chown` is given.
"""

from __future__ import annotations

import fnmatch
import io
import posixpath
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO

from hatchway.errors import BuildFailed

_SPOOL_BYTES = 8 * 1024 * 1024
_WILDCARDS = "*?["


@dataclass(frozen=True)
class Owner:
    uid: int
    gid: int


@dataclass(frozen=True)
class Destination:
    """Where a COPY puts things: an absolute path, and whether it names a directory (a trailing `/`)."""

    path: str
    directory: bool

    @classmethod
    def of(cls, written: str, workdir: str) -> Destination:
        absolute = written if written.startswith("/") else posixpath.join(workdir or "/", written)
        return cls(path=posixpath.normpath(absolute).replace("//", "/"), directory=written.endswith(("/", "/.")))

    def target(self, name: str, is_directory: Callable[[], bool]) -> str:
        """Where a single file named `name` goes."""
        if self.directory or is_directory():
            return posixpath.join(self.path, name)
        return self.path


def from_context(
    files: dict[str, bytes],
    sources: list[str],
    dest: Destination,
    *,
    is_directory: Callable[[], bool],
    owner: Owner | None,
    unpack: bool,
    what: str,
) -> IO[bytes]:
    """The archive of a COPY (or, with `unpack`, an ADD) of `sources` from the build context `files`."""
    directories = {posixpath.dirname(path) for path in files}
    directories |= {parent for path in directories for parent in _parents(path)}
    matches = [match for source in sources for match in _match(source, files, directories, what)]
    if (len(matches) > 1 or any(c in s for s in sources for c in _WILDCARDS)) and not dest.directory:
        raise BuildFailed(f"{what}: with more than one source file, the destination must be a directory ending in /")
    spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES)  # noqa: SIM115 (returned, the caller closes it)
    with tarfile.open(fileobj=spool, mode="w") as tar:
        for path in matches:
            if path in files:
                name = posixpath.basename(path)
                if unpack and _is_archive(files[path]):
                    _unpack(tar, io.BytesIO(files[path]), dest.path, owner, f"{what}: {path}")
                else:
                    _add_file(tar, dest.target(name, is_directory), files[path], owner)
                continue
            prefix = f"{path}/" if path else ""
            for directory in sorted(d for d in directories if d.startswith(prefix) and d != path):
                _add_directory(tar, posixpath.join(dest.path, directory[len(prefix) :]), owner)
            for file in sorted(f for f in files if f.startswith(prefix)):
                # Only an archive named as a source is unpacked, not one inside a directory (as Docker has it).
                _add_file(tar, posixpath.join(dest.path, file[len(prefix) :]), files[file], owner)
    spool.seek(0)
    return spool


def from_archive(
    archive: IO[bytes], source_name: str, source_is_directory: bool, dest: Destination, *,
    is_directory: Callable[[], bool], owner: Owner | None, what: str,
) -> IO[bytes]:  # fmt: skip
    """The archive of a COPY --from, made of the engine's archive of the source path (named `source_name`)."""
    spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES)  # noqa: SIM115 (returned, the caller closes it)
    with tarfile.open(fileobj=archive, mode="r|") as source, tarfile.open(fileobj=spool, mode="w") as tar:
        for member in source:
            relative = _relative(member.name, source_name, what)
            if source_is_directory:
                if relative == "":
                    continue  # the directory itself: its content goes into the destination
                target = posixpath.join(dest.path, relative)
            else:
                target = dest.target(posixpath.basename(source_name), is_directory)
            rebase = lambda name: _rebase(name, source_name, dest.path, what)  # noqa: E731
            _add_member(tar, source, member, target, owner=owner, link_target=rebase)
    archive.close()
    spool.seek(0)
    return spool


def owner_of(spec: str, passwd: Callable[[], str], group: Callable[[], str]) -> Owner:
    """The uid and gid `--chown=user[:group]` names (a group left out is named like the user, as Docker has it)."""
    user, _, group_name = spec.partition(":")
    if not user or ":" in group_name:
        raise BuildFailed(f"--chown={spec}: write it as user, user:group, uid or uid:gid")
    return Owner(uid=_lookup(user, passwd, "user"), gid=_lookup(group_name or user, group, "group"))


def _lookup(name: str, table: Callable[[], str], kind: str) -> int:
    if name.isdigit():
        return int(name)
    for line in table().splitlines():
        fields = line.split(":")
        if len(fields) >= 3 and fields[0] == name and fields[2].isdigit():
            return int(fields[2])
    where = "/etc/passwd" if kind == "user" else "/etc/group"
    raise BuildFailed(f"--chown: the image's {where} has no {kind} {name!r}; give a number or a known name")


def _match(source: str, files: dict[str, bytes], directories: set[str], what: str) -> Iterator[str]:
    written = source.lstrip("/")
    path = posixpath.normpath(written) if written else "."
    if path == ".." or path.startswith("../"):
        raise BuildFailed(f"{what}: {source!r} is outside the build context")
    path = "" if path == "." else path
    if not any(c in path for c in _WILDCARDS):
        if path not in files and path not in directories:
            raise BuildFailed(f"{what}: {source!r} is not in the build context")
        yield path
        return
    pattern = path.split("/")
    found = sorted(
        candidate
        for candidate in (*files, *directories)
        if candidate
        and len(parts := candidate.split("/")) == len(pattern)
        and all(fnmatch.fnmatchcase(part, glob) for part, glob in zip(parts, pattern, strict=True))
    )
    if not found:
        raise BuildFailed(f"{what}: nothing in the build context matches {source!r}")
    yield from found


def _parents(path: str) -> Iterator[str]:
    while path:
        path = posixpath.dirname(path)
        yield path


def _member(name: str, owner: Owner | None) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name.lstrip("/"))
    if owner is not None:
        info.uid, info.gid = owner.uid, owner.gid
    return info


def _add_file(tar: tarfile.TarFile, path: str, data: bytes, owner: Owner | None) -> None:
    info = _member(path, owner)
    info.size, info.mode = len(data), 0o644
    tar.addfile(info, io.BytesIO(data))


def _add_directory(tar: tarfile.TarFile, path: str, owner: Owner | None) -> None:
    info = _member(path, owner)
    info.type, info.mode = tarfile.DIRTYPE, 0o755
    tar.addfile(info)


def _is_archive(data: bytes) -> bool:
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
            return tar.next() is not None
    except (tarfile.TarError, OSError, EOFError, ValueError):
        return False


def _unpack(tar: tarfile.TarFile, data: IO[bytes], dest: str, owner: Owner | None, what: str) -> None:
    with tarfile.open(fileobj=data, mode="r:*") as source:
        for member in source:
            relative = _inside(member.name, what)
            if relative:
                target = posixpath.join(dest, relative)
                _add_member(tar, source, member, target, owner=owner, link_target=lambda n: _inside_at(n, dest, what))


def _add_member(
    tar: tarfile.TarFile,
    source: tarfile.TarFile,
    member: tarfile.TarInfo,
    target: str,
    *,
    owner: Owner | None,
    link_target: Callable[[str], str],
) -> None:
    if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
        raise BuildFailed(f"{member.name!r} is a device or a pipe, which builds may not make")
    info = _member(target, owner)
    info.type, info.mode, info.mtime, info.linkname = member.type, member.mode, member.mtime, member.linkname
    if owner is None:
        info.uid, info.gid, info.uname, info.gname = member.uid, member.gid, member.uname, member.gname
    if member.islnk():
        info.linkname = link_target(member.linkname).lstrip("/")
    if member.isfile():
        info.size = member.size
        tar.addfile(info, source.extractfile(member))
    else:
        tar.addfile(info)


def _inside(name: str, what: str) -> str:
    path = posixpath.normpath(name.lstrip("/")) if name.strip("/") else "."
    if path == ".." or path.startswith("../"):
        raise BuildFailed(f"{what}: the archive holds {name!r}, which leaves its destination")
    return "" if path == "." else path


def _inside_at(name: str, dest: str, what: str) -> str:
    return posixpath.join(dest, _inside(name, what))


def _relative(name: str, source_name: str, what: str) -> str:
    """`name`, a member of the engine's archive of a path named `source_name`, relative to that path."""
    if source_name == "/":
        return _inside(name, what)
    if name == source_name:
        return ""
    if name.startswith(source_name + "/"):
        return _inside(name[len(source_name) + 1 :], what)
    raise BuildFailed(f"{what}: the engine's archive holds {name!r}, outside {source_name!r}")


def _rebase(name: str, source_name: str, dest: str, what: str) -> str:
    return posixpath.join(dest, _relative(name, source_name, what))


def check_context(files: dict[str, bytes]) -> None:
    """Refuse a build context whose paths are not plain relative paths."""
    for path in files:
        parts = path.split("/")
        if path.startswith("/") or "\\" in path or any(part in ("", ".", "..") for part in parts):
            raise BuildFailed(f"the build context path {path!r} is not a plain relative path")
